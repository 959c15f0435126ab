// Package reqrep implements the SP request/reply protocols, REQ (0x30) and
// REP (0x31), as mangos v3 protocols: sockets made with mangos' own core,
// its transports (tcp, tls+tcp, ipc, inproc), dialers, listeners and pipe
// events, and wire-compatible with mangos' protocol/req and protocol/rep
// and with NNG and nanomsg peers.
//
// What differs from mangos' own implementations is where the work runs.
// mangos' REQ starts a goroutine for every request it sends, and its REP
// hands every request to a worker through a queue and every reply to a
// sender goroutine through another: four goroutine hand-offs for one
// round trip, most of the cost of a small message. Here a request is
// written to its pipe by the goroutine that sends it, a reply is written by
// the goroutine that answers, a reply reaches the waiting context straight
// from the pipe's reader, and a REP socket may answer its requests on that
// reader too (Rep.Serve): what is left is the transport's own reader on
// each side.
//
// Semantics, where they differ from mangos':
//
//   - REQ never resends (mangos' OptionRetryTime must be 0): a request
//     whose pipe closes before its reply fails with mangos.ErrCanceled,
//     and the caller decides whether to send it again.
//   - A request's send fails (and the caller keeps the message) when no
//     pipe takes it in time; one that was written is given up on only by
//     the caller (Close, or OptionRecvDeadline).
//   - A write to a pipe whose peer has stopped reading blocks its sender;
//     when the sender's context is closed meanwhile and the write has not
//     ended within StallTimeout, the pipe is closed, so that the sender
//     returns and the connection is made again.
package reqrep
