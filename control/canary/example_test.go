package canary_test

import (
	"fmt"

	"github.com/griddle-mesh/griddle/control/canary"
)

// A canary from v1 to v2 at 20% moves a fifth of v1's share in each rule it
// steers: here an A/B test that also runs v3.
func ExampleMove() {
	fmt.Println(canary.Move(map[string]int{"v1": 50, "v3": 50}, "v1", "v2", 20))
	fmt.Println(canary.Move(map[string]int{"v1": 50, "v3": 50}, "v1", "v2", 100))
	// Output:
	// map[v1:40 v2:10 v3:50]
	// map[v2:50 v3:50]
}
