package e2e

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/griddle-mesh/griddle/internal/meshtest"
)

// TestSkewedClock runs a sidecar whose clock is 30 s ahead, then one 30 s
// behind: deadlines travel as the budget left, so both serve normally and
// the handler's deadline is the edge's timeout from now, neither dropped as
// expired nor stretched.
func TestSkewedClock(t *testing.T) {
	const timeout = 3 * time.Second
	for _, offset := range []string{"30s", "-30s"} {
		t.Run(offset, func(t *testing.T) {
			m := meshtest.Start(t, bin)
			m.Sidecar("hello", "v1", "--http-prefix", "/hello/", "--clock-offset", offset)
			e := m.Edge("--timeout", timeout.String())
			url := "http://" + e.Addr + "/hello/greet?name=clock"
			waitBothServe(t, url)
			for i := range 10 {
				sent := time.Now()
				code, _, h := get(t, url)
				if code != http.StatusOK {
					t.Fatalf("request %d: status %d", i, code)
				}
				ns, err := strconv.ParseInt(h.Get("X-Seen-Deadline"), 10, 64)
				if err != nil {
					t.Fatalf("request %d: X-Seen-Deadline %q: %v", i, h.Get("X-Seen-Deadline"), err)
				}
				if got := time.Unix(0, ns).Sub(sent); got < timeout-time.Second || got > timeout+time.Second {
					t.Fatalf("request %d: the handler's deadline is %v after sending, want about %v", i, got.Round(time.Millisecond), timeout)
				}
			}
		})
	}
}
