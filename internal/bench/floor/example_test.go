package floor_test

import (
	"context"
	"fmt"
	"time"

	"github.com/griddle-mesh/griddle/internal/bench/floor"
)

// Measure the floor of the edge → sidecar hop with 16 requests in flight.
func ExampleMeasure() {
	r, err := floor.Measure(context.Background(), floor.MangosTCP(), floor.Config{
		InFlight: 16, Size: 128, Duration: 200 * time.Millisecond,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Name, r.Trips > 0, r.CPUUSPerOp > 0)
	// Output: mangos-tcp true true
}
