package sidecar

import (
	"context"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/griddle-mesh/griddle/internal/bench"
)

// BenchmarkGRPCUnary: unary calls (UnaryCall, 100-byte request and
// answer) from 16 concurrent callers in this process, to the interop
// TestService served directly (grpc.Server on its own transport, in this
// process) and through the mesh (edge → mangos tcp → sidecar → the same
// service as a handler process). cpu-us/op counts every process involved:
// this one (the client, and the edge and sidecar when meshed) and the
// handler's; the client's share is in both.
func BenchmarkGRPCUnary(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
		go func() { _ = s.Serve(ln) }()
		defer s.Stop()
		benchGRPC(b, ln.Addr().String(), 0)
	})
	b.Run("mesh", func(b *testing.B) {
		addr, sc := startMesh(b, meshSpec{listen: "tcp://127.0.0.1:0", plugin: "../services/interop", service: "interop",
			prefixes: []string{"/grpc.testing."}, probe: "/grpc.testing.TestService/EmptyCall", probeAny: true})
		benchGRPC(b, addr, sc.host.Load().PID())
	})
}

func benchGRPC(b *testing.B, addr string, handlerPID int) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	req := &testgrpc.SimpleRequest{ResponseSize: 100, Payload: &testgrpc.Payload{Body: make([]byte, 100)}}
	ctx := context.Background()
	for range 200 { // warm up
		if _, err := tc.UnaryCall(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	cpu := func() time.Duration {
		d, err := bench.ProcessCPU(os.Getpid())
		if err != nil {
			b.Fatal(err)
		}
		if handlerPID != 0 {
			h, err := bench.ProcessCPU(handlerPID)
			if err != nil {
				b.Fatal(err)
			}
			d += h
		}
		return d
	}
	const callers = 16
	var mu sync.Mutex
	var lat []time.Duration
	before := cpu()
	b.ResetTimer()
	var wg sync.WaitGroup
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	for range callers {
		wg.Go(func() {
			var mine []time.Duration
			for range work {
				start := time.Now()
				if _, err := tc.UnaryCall(ctx, req); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	used := cpu() - before
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
	}
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-us/op")
}
