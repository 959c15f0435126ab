package plugins

import (
	"context"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/hop"
	"github.com/griddle-mesh/griddle/internal/wire"
)

// DialGRPC returns a gRPC client connection to another service of the
// mesh, through this handler's sidecar: the sidecar routes each call to an
// instance of service as it does the handler's HTTP calls (rules, retries,
// outlier detection), and the call carries the deadline of its context
// (grpc-timeout) and, from the incoming request its context belongs to,
// the trace and routing context. opts are added to the mesh's own (the
// transport is the sidecar's: no credentials of the handler's own).
//
//	conn, err := plugins.Mesh(r.Context()).DialGRPC("profiles")
//	client := profilespb.NewProfilesClient(conn)
//	p, err := client.Get(r.Context(), &profilespb.GetRequest{Id: id})
//
// Close the connection when the process no longer needs it; one per
// service for the life of the process is the intended use.
func (m *MeshAPI) DialGRPC(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if m.conns == nil {
		return nil, fmt.Errorf("plugins: gRPC to %q: %w", service, ErrNoMesh)
	}
	if service == "" || strings.ContainsAny(service, "/:") {
		return nil, fmt.Errorf("plugins: gRPC: %q is not a service name", service)
	}
	base := []grpc.DialOption{
		// The connection is a stream to the sidecar on its own socket;
		// the sidecar secures the mesh's links.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return m.tunnel(ctx) }),
		grpc.WithAuthority(service),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withPropagated(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withPropagated(ctx), desc, cc, method, opts...)
		}),
	}
	return grpc.NewClient("passthrough:///"+service, append(base, opts...)...)
}

// withPropagated adds to ctx's outgoing metadata what an outbound call
// inherits from its incoming request (see propagated).
func withPropagated(ctx context.Context) context.Context {
	var kv []string
	propagated(ctx, func(k, v string) { kv = append(kv, strings.ToLower(k), v) })
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// tunnel opens a connection to the sidecar's HTTP/2 server for the mesh
// (wire.UpgradeTunnel).
func (m *MeshAPI) tunnel(ctx context.Context) (net.Conn, error) {
	conn, err := m.conn(ctx)
	if err != nil {
		return nil, err
	}
	env, err := proto.Marshal(&wire.Request{Method: "GET", Path: "/", Upgrade: true, LongLived: true,
		Headers: []*wire.Header{{Name: "Connection", Values: []string{"Upgrade"}}, {Name: "Upgrade", Values: []string{wire.UpgradeTunnel}}}})
	if err != nil {
		return nil, err
	}
	c, err := hop.Tunnel(conn, env, ctx.Done())
	if err != nil {
		return nil, fmt.Errorf("plugins: tunnel to the sidecar: %w", err)
	}
	return c, nil
}
