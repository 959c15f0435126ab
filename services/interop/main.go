// Command interop serves the gRPC project's interop TestService
// (google.golang.org/grpc/interop) as a Griddle handler: a team's
// grpc.Server is its http.Handler, served as it is. The gRPC interop
// client's test cases run against it through the mesh.
package main

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/griddle-mesh/griddle/plugins"
)

func main() {
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	plugins.Serve(s)
}
