// Package e2e tests Griddle end to end: real griddle processes, real handler
// plugins, real mangos sockets and a real (embedded) etcd.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// bin holds the binaries built once by TestMain for every test.
var bin meshtest.Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "griddle-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = meshtest.Build(dir, "hello", "profiles", "messages", "feed")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
