package pluginproto

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Environment variables the sidecar sets for the handler process.
const (
	// EnvHandlerSocket names the unix socket path the handler must serve
	// HTTP on. The handler creates the socket; the sidecar owns its directory.
	EnvHandlerSocket = "GRIDDLE_HANDLER_SOCKET"
	// EnvService names the service the handler serves: it publishes events
	// under that name.
	EnvService = "GRIDDLE_SERVICE"
)

// PluginName is the single plugin a handler process serves.
const PluginName = "handler"

// Handshake returns the go-plugin handshake both sides must agree on. Bump
// ProtocolVersion on any incompatible change to this package.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  1,
		MagicCookieKey:   "GRIDDLE_HANDLER_COOKIE",
		MagicCookieValue: "3f6b1a0e-griddle-handler",
	}
}

// ErrNotHandler reports that a dispensed plugin is not a Griddle handler.
var ErrNotHandler = errors.New("pluginproto: plugin does not implement the handler service")

// Plugin is the go-plugin glue for the Handler service. The handler side sets
// Impl; the sidecar side leaves it nil and receives a *Client from Dispense.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl serves Describe in the handler process. Nil on the sidecar side.
	Impl HandlerServer
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer registers Impl on the handler's gRPC server.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return ErrNotHandler
	}
	RegisterHandlerServer(s, p.Impl)
	return nil
}

// GRPCClient returns a *Client. ctx is cancelled by go-plugin when the
// handler process exits; Client.Exited exposes it.
func (p *Plugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{HandlerClient: NewHandlerClient(c), Conn: c, exited: ctx.Done()}, nil
}

// Client is the sidecar's view of one handler process.
type Client struct {
	HandlerClient
	// Conn is the go-plugin gRPC connection; it also serves the standard
	// gRPC health service that go-plugin's Ping uses.
	Conn   *grpc.ClientConn
	exited <-chan struct{}
}

// Exited is closed once the handler process has exited and go-plugin has
// collected its output.
func (c *Client) Exited() <-chan struct{} { return c.exited }

// Plugins returns the plugin set for plugin.ServeConfig or
// plugin.ClientConfig. impl is nil on the sidecar side.
func Plugins(impl HandlerServer) plugin.PluginSet {
	return plugin.PluginSet{PluginName: &Plugin{Impl: impl}}
}

// OpStats is the unary call (package hop) a sidecar makes to its handler
// for the handler process's runtime figures; the answer is Stats as JSON.
const OpStats byte = 0x80

// OpProfile is the unary call for a CPU profile of the handler process:
// the byte after it is the profile's length in seconds (1 to
// MaxProfileSeconds); the answer is the profile in pprof's format, or
// empty when one could not be taken (another is running).
const OpProfile byte = 0x81

// MaxProfileSeconds bounds an OpProfile call.
const MaxProfileSeconds = 120

// Stats are a handler process's runtime figures.
type Stats struct {
	// Allocs counts the heap objects allocated since the process started.
	Allocs uint64 `json:"allocs"`
	// HeapBytes is the memory held by live and not yet swept heap objects.
	HeapBytes uint64 `json:"heap_bytes"`
	// Goroutines is the number of goroutines now.
	Goroutines uint64 `json:"goroutines"`
}
