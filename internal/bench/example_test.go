package bench_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/griddle-mesh/griddle/internal/bench"
)

// Run the static scenario against the direct server and the mesh at two
// rates. (Not run by go test: it needs the griddle binary and takes
// seconds.)
func ExampleRun() {
	griddle, _ := os.Executable() // in the real command: the griddle binary
	rep, err := bench.Run(context.Background(), bench.Config{
		Scenario: bench.ScenarioStatic, Targets: []string{bench.TargetDirect, bench.TargetMesh},
		Rates: []int{1000, 2000}, Duration: 10 * time.Second, Repeat: 3, Out: "bench-out",
		Profiles: 1000, Timeout: 5 * time.Second, NginxWorkers: 1, NoisyCores: 0.25,
		Griddle: griddle, Source: ".", Stdout: os.Stdout,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(rep.Runs))
}
