package discovery_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/etcdembed"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	dir, err := os.MkdirTemp("", "griddle-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := etcdembed.Start(ctx, etcdembed.Config{Dir: dir, Logger: quiet, UnsafeNoFsync: true})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	cli, err := srv.Client(ctx)
	if err != nil {
		panic(err)
	}
	defer cli.Close()

	// A sidecar registers itself.
	reg, err := discovery.Register(ctx, cli, discovery.DefaultPrefix, discovery.Instance{
		ID: "a1", Service: "profiles", Version: "v1", Address: "tcp://127.0.0.1:7001",
	}, 10*time.Second, quiet)
	if err != nil {
		panic(err)
	}
	defer reg.Close(ctx)

	// An edge follows the catalog.
	cat := discovery.NewCatalog(cli, discovery.DefaultPrefix, quiet)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cat.Run(runCtx) }()
	defer func() { stop(); <-done }()

	if err := cat.WaitSynced(ctx); err != nil {
		panic(err)
	}
	for _, in := range cat.Instances("profiles") {
		fmt.Println(in.Service, in.Version, in.Address)
	}
	// Output: profiles v1 tcp://127.0.0.1:7001
}
