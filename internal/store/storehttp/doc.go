// Package storehttp carries store transactions to where the data is: a
// Server in front of a store.Backend, and a Client that is a
// store.Backend whose transactions run on a Server. Handlers reach their
// store this way through their sidecar (operations as unary calls on the
// connection between them, see OneTrip), and the sidecars of one machine
// share one embedded store through `griddle store` (over HTTP, each
// Client's operations on one long-lived connection upgraded to the same
// multiplexed frames: see HopUpgrade).
//
// # One round trip
//
// A transaction's function runs on the client's side (OneTrip): each read
// it makes is one operation (OpGet, OpGetMany for keys read together,
// OpRange), its writes are buffered, and the commit is one operation
// (OpCommit) carrying digests of what was read and the writes, in order.
// The server checks the reads in a transaction of its own, applies the
// writes and commits, running that transaction again itself on a conflict
// (it is a pure function of what it reads); if what was read has changed
// it answers CODE_CONFLICT and the client runs the function again. A
// transaction that only writes, such as storing a message and appending
// its event, is one round trip.
//
//	POST /v1/spaces/{space}/op   an operation (op.go) → its answer, always 200,
//	                             Content-Type application/x-griddle-store-op
//	POST /v1/spaces/{space}/get  GetRequest → GetResponse
//
// A Server whose backend is a Client (a sidecar in front of `griddle
// store`) passes operations on whole.
//
// # Interactive transactions
//
// A transaction whose function reads a range after writing runs
// interactively instead, held by the server, by id, for at most
// store.MaxTransactionTime:
//
//	POST /v1/spaces/{space}/txns[?readonly=1]   → storepb.BeginResponse{txn}
//	POST /v1/txns/{txn}/get                      GetRequest → GetResponse
//	POST /v1/txns/{txn}/range                    RangeRequest → RangeResponse
//	POST /v1/txns/{txn}/set                      SetRequest → 204
//	POST /v1/txns/{txn}/setStamped               SetRequest (key: the prefix) → 204
//	POST /v1/txns/{txn}/clear                    ClearRequest → 204
//	POST /v1/txns/{txn}/clearRange               ClearRangeRequest → 204
//	POST /v1/txns/{txn}/commit                   → 204
//	POST /v1/txns/{txn}/abort                    → 204
//
// Bodies are protobuf (storepb, Content-Type application/x-protobuf). A
// failure answers a non-2xx status and a storepb.Error whose code the
// Client turns back into the store's sentinel errors; Go error text never
// crosses. The server runs each interactive transaction once: on a
// conflict the commit fails with CODE_CONFLICT and the Client runs the
// caller's function again in a new transaction. A transaction id that is
// unknown, finished or older than MaxTransactionTime answers
// CODE_TRANSACTION_TIME.
//
// This package imports no backend: the SDK can carry the Client.
package storehttp
