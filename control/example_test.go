package control_test

import (
	"fmt"

	"github.com/griddle-mesh/griddle/control"
)

// A token file gives each token a role: a bare token is an operator's.
func ExampleParseTokens() {
	tokens, err := control.ParseTokens("# the on-call operators\nop-4f2a\n# CI may run canaries, not edit rules\ndeployer ci-9c1e\n")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range tokens {
		fmt.Println(t.Role)
	}
	// Output:
	// operator
	// deployer
}
