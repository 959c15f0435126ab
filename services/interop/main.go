// Command interop serves the gRPC project's interop TestService
// (google.golang.org/grpc/interop) as a Griddle handler: a team's
// grpc.Server is its http.Handler, served as it is. The gRPC interop
// client's test cases run against it through the mesh.
//
// It also runs those cases itself, as a client of another service through
// its own sidecar (plugins.MeshAPI.DialGRPC):
//
//	GET /interop/run?case=empty_unary&target=interop   200 "ok", or 500 with the failure
package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/griddle-mesh/griddle/plugins"
)

func main() {
	// The interop cases report a failure with a fatal log; here it ends
	// the case (a panic runCase recovers), not the process.
	grpclog.SetLoggerV2(failLogger{grpclog.NewLoggerV2(discard{}, discard{}, discard{})})
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	mux := http.NewServeMux()
	mux.Handle("GET /interop/run", &runner{conns: map[string]*grpc.ClientConn{}})
	plugins.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/interop/") {
			mux.ServeHTTP(w, r)
			return
		}
		s.ServeHTTP(w, r) // gRPC; it refuses anything else itself
	}))
}

// runner runs one interop case against a service, through the mesh.
type runner struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by target service, kept for the process's life
}

// cases are the interop cases runner knows, by the interop client's names.
var cases = map[string]func(ctx context.Context, cc *grpc.ClientConn){
	"empty_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"large_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"client_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"server_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"ping_pong": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"empty_stream": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"timeout_on_sleeping_server": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"cancel_after_begin": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"cancel_after_first_response": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"custom_metadata": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"status_code_and_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"special_status_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"unimplemented_method": func(ctx context.Context, cc *grpc.ClientConn) { interop.DoUnimplementedMethod(ctx, cc) },
	"unimplemented_service": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
	},
}

func (rn *runner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	run, ok := cases[r.URL.Query().Get("case")]
	target := r.URL.Query().Get("target")
	if !ok || target == "" {
		http.Error(w, "want ?case=<an interop case>&target=<service>", http.StatusBadRequest)
		return
	}
	cc, err := rn.conn(r, target)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	if err := runCase(ctx, cc, run); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (rn *runner) conn(r *http.Request, target string) (*grpc.ClientConn, error) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if cc := rn.conns[target]; cc != nil {
		return cc, nil
	}
	cc, err := plugins.Mesh(r.Context()).DialGRPC(target)
	if err != nil {
		return nil, err
	}
	rn.conns[target] = cc
	return cc, nil
}

// runCase runs one case; its fatal log (failLogger) comes back as err.
func runCase(ctx context.Context, cc *grpc.ClientConn, run func(context.Context, *grpc.ClientConn)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(failure)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("%s", string(f))
		}
	}()
	run(ctx, cc)
	return nil
}

// failure is the panic a fatal log of the interop cases becomes.
type failure string

// failLogger turns fatal logs into a failure panic.
type failLogger struct{ grpclog.LoggerV2 }

func (failLogger) Fatal(args ...any)                 { panic(failure(fmt.Sprint(args...))) }
func (failLogger) Fatalf(format string, args ...any) { panic(failure(fmt.Sprintf(format, args...))) }
func (failLogger) Fatalln(args ...any)               { panic(failure(fmt.Sprintln(args...))) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
