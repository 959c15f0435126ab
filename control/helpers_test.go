package control_test

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/internal/routing"
)

func canarySpec() canary.Spec {
	return canary.Spec{Service: "feed", To: "v2", Steps: []int{5, 50, 100},
		Interval: routing.Duration(time.Hour), MaxErrorRate: 0.01}
}

// TestMain fails the package if a goroutine outlives the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
