package etcdembed_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/griddle-mesh/griddle/internal/etcdembed"
	"github.com/griddle-mesh/griddle/internal/etcdembed/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  etcdembed.Config
		ok   bool
	}{
		{"minimal", etcdembed.Config{Dir: "/tmp/x"}, true},
		{"explicit addrs", etcdembed.Config{Dir: "/tmp/x", ClientAddr: "127.0.0.1:2379", PeerAddr: ":2380"}, true},
		{"port zero", etcdembed.Config{Dir: "/tmp/x", ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"}, true},
		{"no dir", etcdembed.Config{}, false},
		{"no port", etcdembed.Config{Dir: "/tmp/x", ClientAddr: "127.0.0.1"}, false},
		{"bad port", etcdembed.Config{Dir: "/tmp/x", PeerAddr: "127.0.0.1:http"}, false},
		{"same addrs", etcdembed.Config{Dir: "/tmp/x", ClientAddr: "127.0.0.1:2379", PeerAddr: "127.0.0.1:2379"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if got := err == nil; got != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, etcdembed.ErrEtcdembedConfig) {
				t.Fatalf("Validate() = %v, want it to wrap ErrEtcdembedConfig", err)
			}
		})
	}
}

func TestStartPutRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	s := etcdtest.Start(t, etcdembed.Config{Dir: dir})
	if eps := s.Endpoints(); len(eps) != 1 {
		t.Fatalf("Endpoints() = %v, want one URL", eps)
	}
	cli, err := s.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	clientAddr, peerAddr := s.ClientAddr(), s.PeerAddr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close() = %v, want nil", err)
	}
	if _, err := s.Client(ctx); !errors.Is(err, etcdembed.ErrEtcdembedClosed) {
		t.Fatalf("Client() after Close = %v, want ErrEtcdembedClosed", err)
	}

	s2 := etcdtest.Start(t, etcdembed.Config{Dir: dir, ClientAddr: clientAddr, PeerAddr: peerAddr})
	if got, want := s2.Endpoints()[0], "http://"+clientAddr; got != want {
		t.Fatalf("restarted Endpoints()[0] = %q, want %q", got, want)
	}
	cli2, err := s2.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	resp, err := cli2.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
		t.Fatalf("after restart got %v, want k=v1", resp.Kvs)
	}
}

func TestStartCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s, err := etcdembed.Start(ctx, etcdembed.Config{Dir: t.TempDir(), UnsafeNoFsync: true, Logger: discard()})
	if err == nil {
		s.Close()
		// A server may become ready before the select sees ctx; that is allowed.
		return
	}
	if !errors.Is(err, etcdembed.ErrEtcdembedStart) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Start(canceled) = %v, want ErrEtcdembedStart and context.Canceled", err)
	}
}

func TestStartPortTaken(t *testing.T) {
	s := etcdtest.Run(t)
	_, err := etcdembed.Start(context.Background(), etcdembed.Config{
		Dir: t.TempDir(), ClientAddr: s.ClientAddr(), UnsafeNoFsync: true, Logger: discard(),
	})
	if !errors.Is(err, etcdembed.ErrEtcdembedStart) {
		t.Fatalf("Start on a taken client port = %v, want ErrEtcdembedStart", err)
	}
}
