// Package dispatch sends a wire.Request to one instance of a service and
// returns its wire.Reply. The edge uses it for every HTTP request it
// forwards, and sidecars use it for calls from one service to another.
//
// A Dispatcher learns instances from an Endpoints (the discovery catalog),
// keeps one mangos REQ socket per instance address, balances with the power
// of two choices over in-flight requests, retries only where it is safe
// (the request never reached a handler, or it may have but the method is
// idempotent), never past the request's deadline, and ejects instances whose
// transport keeps failing, that hold requests without answering, or whose
// answers take far longer than those of the other instances of their
// service and version (a latency outlier), for a growing back-off period;
// trial requests bring an ejected instance back once it answers (in time).
//
// The wire protocol: the request body of a REQ message is a proto-encoded
// wire.Request; the REP peer answers with a proto-encoded wire.Reply.
// Sockets speak tcp:// and ipc:// addresses.
package dispatch
