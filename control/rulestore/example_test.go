package rulestore_test

import (
	"fmt"

	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/routing"
)

func ExampleDiff() {
	cur := &routing.Document{Service: "feed", Versions: []routing.VersionRule{{To: map[string]int{"v1": 100}}}}
	next := &routing.Document{Service: "feed", Versions: []routing.VersionRule{{To: map[string]int{"v1": 95, "v2": 5}}}}
	d, _ := rulestore.Diff(cur, next)
	fmt.Print(d)
	fmt.Println(rulestore.RuleKey("/griddle/", "feed"))
	// Output:
	// --- current
	// +++ proposed
	// @@ -1,4 +1,5 @@
	//  service: feed
	//  versions:
	//  - to:
	// -    v1: 100
	// +    v1: 95
	// +    v2: 5
	// /griddle/rules/feed
}
