// Package storehttp carries store transactions over HTTP: a Server in front
// of a store.Backend, and a Client that is a store.Backend whose
// transactions run on a Server. Handlers reach their store this way
// through their sidecar's unix socket, and the sidecars of one machine
// share one embedded store through `griddle store`.
//
// # Protocol
//
// A transaction is interactive and held by the server, by id, for at most
// store.MaxTransactionTime:
//
//	POST /v1/spaces/{space}/txns[?readonly=1]   → storepb.BeginResponse{txn}
//	POST /v1/txns/{txn}/get                      GetRequest → GetResponse
//	POST /v1/txns/{txn}/range                    RangeRequest → RangeResponse
//	POST /v1/txns/{txn}/set                      SetRequest → 204
//	POST /v1/txns/{txn}/clear                    ClearRequest → 204
//	POST /v1/txns/{txn}/clearRange               ClearRangeRequest → 204
//	POST /v1/txns/{txn}/commit                   → 204
//	POST /v1/txns/{txn}/abort                    → 204
//
// Bodies are protobuf (storepb, Content-Type application/x-protobuf). A
// failure answers a non-2xx status and a storepb.Error whose code the
// Client turns back into the store's sentinel errors; Go error text never
// crosses. The server runs each transaction once: on a conflict the commit
// fails with CODE_CONFLICT and the Client runs the caller's function again
// in a new transaction, as store.Store.Transact does locally. A transaction
// id that is unknown, finished or older than MaxTransactionTime answers
// CODE_TRANSACTION_TIME.
//
// This package imports no backend: the SDK can carry the Client.
package storehttp
