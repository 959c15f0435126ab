package discovery

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestDialProbe: a listener answers; a closed port and a removed unix
// socket are refusals (a held instance there goes at once); a probe that
// does not finish in time is not (it counts towards holdProbeMisses).
func TestDialProbe(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "tcp://" + ln.Addr().String()
	if err := dialProbe(ctx, addr); err != nil {
		t.Fatalf("dialProbe(live %s) = %v, want nil", addr, err)
	}
	ln.Close()
	if err := dialProbe(ctx, addr); err == nil || !refused(err) {
		t.Fatalf("dialProbe(closed %s) = %v, want a refusal", addr, err)
	}
	sock := "ipc://" + filepath.Join(t.TempDir(), "gone.sock")
	if err := dialProbe(ctx, sock); err == nil || !refused(err) {
		t.Fatalf("dialProbe(%s) = %v, want a refusal", sock, err)
	}
	if err := dialProbe(ctx, "inproc://x"); err != nil {
		t.Fatalf("dialProbe(inproc) = %v, want nil (not probed)", err)
	}
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := dialProbe(expired, "tcp://"+ln2.Addr().String()); err == nil || refused(err) {
		t.Fatalf("dialProbe(past its deadline) = %v, want an error that is not a refusal", err)
	}
}
