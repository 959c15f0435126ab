package storehttp

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// Operations a Server answers without HTTP, as opaque unary calls on the
// connection between a sidecar and its handler (package hop): the first
// byte names the operation, the rest is its request message.
const (
	// OpGet is a one-key read (GetRequest → GetResponse), as POST
	// /v1/spaces/own/get answers it.
	OpGet byte = 1
	// OpRange is a range read in a read-only transaction of its own
	// (RangeRequest → RangeResponse).
	OpRange byte = 2
	// OpGetMany reads several keys in one read-only transaction (see
	// appendGetMany) → their values, in order.
	OpGetMany byte = 4
	// OpCommit commits a transaction run on the caller's side: what it
	// read, as digests, and its writes (see batch) → an empty answer, or
	// CODE_CONFLICT when what it read has changed since. The server
	// retries its own conflicts.
	OpCommit byte = 3
)

// opForwarder is a Store that answers operations itself, in one round
// trip to where its data is (a Client's space): a Server whose backend is
// one passes operations on rather than running them here.
type opForwarder interface {
	forward(ctx context.Context, op []byte) ([]byte, error)
}

// Answers of an operation start with one of these bytes.
const (
	opOK    byte = 0 // the response message follows
	opError byte = 1 // an Error follows
)

// Quick reports whether op is a one-key read of a backend in this process
// (store.InProcess): answered in about the time a goroutine hand-off
// takes, so that its caller may run it on a connection's reader.
func (s *Server) Quick(op []byte) bool {
	if len(op) == 0 || op[0] != OpGet {
		return false
	}
	l, ok := s.b.(store.InProcess)
	return ok && l.InProcess()
}

// Op answers one operation in the Server's own space (WithSpace): op is
// its first byte and request message. The answer is for DecodeGet (OpGet)
// or Decode (every operation).
func (s *Server) Op(ctx context.Context, op []byte) []byte {
	st, err := s.b.Space(s.space)
	if err != nil {
		return s.opError(err)
	}
	return s.opIn(ctx, st, op)
}

// opIn answers op in the key space st.
func (s *Server) opIn(ctx context.Context, st store.Store, in []byte) []byte {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return s.opError(store.ErrClosed)
	}
	if len(in) == 0 {
		return s.opError(fmt.Errorf("%w: empty operation", errBadRequest))
	}
	if f, ok := st.(opForwarder); ok && (in[0] == OpRange || in[0] == OpCommit || in[0] == OpGetMany) {
		b, err := f.forward(ctx, in)
		if err != nil {
			return s.opError(err)
		}
		if in[0] == OpCommit && s.committed != nil && len(b) > 0 && b[0] == opOK {
			if bt, err := decodeBatch(in[1:]); err == nil {
				if p := bt.stampedPrefixes(); len(p) > 0 {
					s.committed(p)
				}
			}
		}
		return b
	}
	switch in[0] {
	case OpGet:
		var req storepb.GetRequest
		if err := proto.Unmarshal(in[1:], &req); err != nil {
			return s.opError(fmt.Errorf("%w: %w", errBadRequest, err))
		}
		v, err := store.Get(ctx, st, req.Key)
		if err != nil {
			return s.opError(err)
		}
		b, _ := proto.MarshalOptions{}.MarshalAppend([]byte{opOK}, &storepb.GetResponse{Found: v != nil, Value: v})
		return b
	case OpRange:
		var req storepb.RangeRequest
		if err := proto.Unmarshal(in[1:], &req); err != nil {
			return s.opError(fmt.Errorf("%w: %w", errBadRequest, err))
		}
		var resp proto.Message
		err := st.ReadTransact(ctx, func(tx store.ReadTx) error {
			var err error
			resp, err = do(tx, nil, &op{name: "range", req: &req})
			return err
		})
		if err != nil {
			return s.opError(err)
		}
		b, _ := proto.MarshalOptions{}.MarshalAppend([]byte{opOK}, resp)
		return b
	case OpGetMany:
		keys, err := decodeKeys(in[1:])
		if err != nil {
			return s.opError(err)
		}
		var vals [][]byte
		err = st.ReadTransact(ctx, func(tx store.ReadTx) error {
			vals = make([][]byte, len(keys))
			for i, k := range keys {
				v, err := tx.Get(k)
				if err != nil {
					return err
				}
				vals[i] = v
			}
			return nil
		})
		if err != nil {
			return s.opError(err)
		}
		return appendValues([]byte{opOK}, vals)
	case OpCommit:
		bt, err := decodeBatch(in[1:])
		if err != nil {
			return s.opError(err)
		}
		if err := s.commitBatch(ctx, st, bt); err != nil {
			return s.opError(err)
		}
		if s.committed != nil {
			if p := bt.stampedPrefixes(); len(p) > 0 {
				s.committed(p)
			}
		}
		return []byte{opOK}
	}
	return s.opError(fmt.Errorf("%w: unknown operation %d", errBadRequest, in[0]))
}

// commitBatch commits bt in st (see batch): a read-only transaction when
// it writes nothing.
func (s *Server) commitBatch(ctx context.Context, st store.Store, bt *batch) error {
	var err error
	runs := 0
	if len(bt.writes) == 0 {
		err = st.ReadTransact(ctx, func(tx store.ReadTx) error { return bt.apply(readOnly{tx}) })
	} else {
		err = st.Transact(ctx, func(tx store.Tx) error {
			runs++
			return bt.apply(tx)
		})
	}
	s.stats.commits.Add(1)
	if runs > 1 {
		s.stats.retries.Add(uint64(runs - 1))
		if bt.readsLog() {
			s.stats.logRetries.Add(uint64(runs - 1))
		}
	}
	if errors.Is(err, errStale) {
		s.stats.stale.Add(1)
		if bt.readsLog() {
			s.stats.logRetries.Add(1)
		}
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return err
}

// Stats counts the Server's batch commits (OpCommit) since it was made.
type Stats struct {
	Commits uint64 // batches committed or refused
	// Retries counts the times the Server ran a batch's transaction again
	// after a conflict.
	Retries uint64
	// Stale counts batches refused because what they read had changed:
	// the client ran its function again.
	Stale uint64
	// LogRetries counts the retries and refusals of batches that had read
	// the event log (keys under eventlog.KeyPrefix+"l/"): conflicts the
	// log caused. Appending to the log reads nothing, so it stays 0
	// unless handlers read their own log in their transactions.
	LogRetries uint64
}

// Stats returns the Server's counts so far.
func (s *Server) Stats() Stats {
	return Stats{Commits: s.stats.commits.Load(), Retries: s.stats.retries.Load(),
		LogRetries: s.stats.logRetries.Load(), Stale: s.stats.stale.Load()}
}

type serverStats struct {
	commits, retries, logRetries, stale atomic.Uint64
}

// readOnly is a ReadTx as a Tx whose writes fail; a batch without writes
// makes none.
type readOnly struct{ store.ReadTx }

func (readOnly) Set(_, _ []byte) error        { return store.ErrReadOnly }
func (readOnly) Clear([]byte) error           { return store.ErrReadOnly }
func (readOnly) ClearRange(_, _ []byte) error { return store.ErrReadOnly }
func (readOnly) SetStamped(_, _ []byte) error { return store.ErrReadOnly }

func (s *Server) opError(err error) []byte {
	b, _ := proto.MarshalOptions{}.MarshalAppend([]byte{opError}, s.wireError(err))
	return b
}

// AppendGet appends the OpGet operation for key to b.
func AppendGet(b, key []byte) []byte {
	b = append(b, OpGet)
	b, _ = proto.MarshalOptions{}.MarshalAppend(b, &storepb.GetRequest{Key: key})
	return b
}

// DecodeGet reads the answer to an OpGet: the value (nil: no such key) or
// the store's error.
func DecodeGet(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("storehttp: empty answer")
	}
	switch b[0] {
	case opOK:
		var resp storepb.GetResponse
		if err := proto.Unmarshal(b[1:], &resp); err != nil {
			return nil, fmt.Errorf("storehttp: decoding the answer: %w", err)
		}
		if !resp.Found {
			return nil, nil
		}
		if resp.Value == nil {
			return []byte{}, nil
		}
		return resp.Value, nil
	case opError:
		var e storepb.Error
		if err := proto.Unmarshal(b[1:], &e); err != nil {
			return nil, fmt.Errorf("storehttp: decoding the answer: %w", err)
		}
		return nil, errorOf(&e)
	default:
		return nil, fmt.Errorf("storehttp: unknown answer %d", b[0])
	}
}

// Decode reads the answer to any operation: the answer's message, for the
// caller to unmarshal (empty for OpCommit), or the store's error.
func Decode(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("storehttp: empty answer")
	}
	switch b[0] {
	case opOK:
		return b[1:], nil
	case opError:
		var e storepb.Error
		if err := proto.Unmarshal(b[1:], &e); err != nil {
			return nil, fmt.Errorf("storehttp: decoding the answer: %w", err)
		}
		return nil, errorOf(&e)
	}
	return nil, fmt.Errorf("storehttp: unknown answer %d", b[0])
}
