package storehttp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// ContentType is the media type of every request and response body but
// those of POST /v1/spaces/{space}/op.
const ContentType = "application/x-protobuf"

// ContentTypeOp is the media type of an operation (op.go) and its answer,
// the bodies of POST /v1/spaces/{space}/op.
const ContentTypeOp = "application/x-griddle-store-op"

// maxOpBytes bounds an operation's body: a batch of the largest
// transaction's writes, and its reads.
const maxOpBytes = 2*store.MaxTransactionBytes + 1<<20

// OwnSpace is the {space} with which a Client asks for the key space the
// server imposes (WithSpace). It is not a valid space name, so a server
// without WithSpace refuses it.
const OwnSpace = "_"

// maxRequestBytes bounds a request body: the largest SetRequest and some.
const maxRequestBytes = store.MaxKeyBytes + store.MaxValueBytes + 1024

// DefaultMaxTransactions bounds the transactions a Server keeps open at
// once (each holds a goroutine and the backend's transaction state until
// commit, abort or MaxTransactionTime); see WithMaxTransactions.
const DefaultMaxTransactions = 1024

// ErrTooManyTransactions: a transaction was refused because the server
// already holds its cap of open ones (WithMaxTransactions). Nothing was
// done; the client may try again later.
var ErrTooManyTransactions = errors.New("storehttp: too many open transactions")

// Server serves the protocol over a store.Backend, which the caller keeps
// owning (Close does not close it). Each open transaction holds one
// goroutine of the Server, ended by commit, abort, MaxTransactionTime or
// Close.
type Server struct {
	b         store.Backend
	space     string
	auth      Authenticator           // nil: every request is served (auth.go)
	shared    []byte                  // what other services' spaces may be read under (WithAuth)
	marks     []byte                  // where callers may set their own marks in others' spaces (WithMarks)
	committed func(prefixes [][]byte) // see WithCommitted; nil: none
	log       *slog.Logger
	mux       *http.ServeMux

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	txns    map[string]*serverTxn
	maxTxns int
	closed  bool

	stats serverStats
}

// Option configures a Server.
type Option func(*Server)

// WithSpace confines every transaction to key space name, whatever space
// the request names: a sidecar serves its handler with the handler's
// service as name. An invalid name makes every transaction fail with
// store.ErrSpace.
func WithSpace(name string) Option { return func(s *Server) { s.space = name } }

// WithCommitted sets a function the Server calls after each commit of a
// batch (OpCommit) that wrote stamped keys, with their prefixes, in the
// key space of the commit (a sidecar announces its handler's events so,
// without a call of their own). It must not block.
func WithCommitted(fn func(prefixes [][]byte)) Option { return func(s *Server) { s.committed = fn } }

// WithMaxTransactions caps the transactions open at once; a begin beyond
// it is refused with ErrTooManyTransactions. n < 1: DefaultMaxTransactions.
func WithMaxTransactions(n int) Option { return func(s *Server) { s.maxTxns = n } }

// WithLogger sets where the Server logs the internal errors that it
// answers with CODE_UNSPECIFIED (with an id that the client's error
// carries too); nil, the default, drops them.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// NewServer returns a Server over b; Close it to end its transactions.
func NewServer(b store.Backend, opts ...Option) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{b: b, ctx: ctx, cancel: cancel, txns: make(map[string]*serverTxn)}
	for _, o := range opts {
		o(s)
	}
	if s.maxTxns < 1 {
		s.maxTxns = DefaultMaxTransactions
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /v1/spaces/{space}/txns", s.begin)
	s.mux.HandleFunc("POST /v1/txns/{txn}/{op}", s.op)
	s.mux.HandleFunc("POST /v1/spaces/{space}/get", s.get)
	s.mux.HandleFunc("POST /v1/spaces/{space}/op", s.serveOp)
	s.mux.HandleFunc("GET "+HopPath, s.serveHop)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.auth != nil {
		if r = s.authenticate(w, r); r == nil {
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// Close aborts the open transactions, waits for their goroutines and makes
// every later request fail with CODE_CLOSED.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// serverTxn is one open transaction, run by its own goroutine (run) that
// takes operations from ops until commit or abort.
type serverTxn struct {
	ops      chan *op
	started  chan struct{} // closed when fn runs: the transaction is open
	done     chan struct{} // closed when run returns
	readOnly bool
	owner    string // the service that began it (WithAuth), else ""
	err      error  // why run ended before it started; read after done
}

// op is one request for a transaction's goroutine. reply has room for the
// one answer, so run never blocks on it.
type op struct {
	name  string
	req   proto.Message
	reply chan opReply
}

type opReply struct {
	resp proto.Message // nil: 204
	err  error
}

var errRetry = errors.New("storehttp: conflict: the client retries")

// spaceOf is the key space a request works in: the one the Server
// imposes (WithSpace), else the one its URL names.
func (s *Server) spaceOf(r *http.Request) (store.Store, error) {
	return s.spaceFor(callerOf(r), r.PathValue("space"))
}

// spaceFor is the key space caller ("": the Server has no WithAuth) works
// in when it names name: the one the Server imposes, else name as caller
// may use it.
func (s *Server) spaceFor(caller, name string) (store.Store, error) {
	switch {
	case s.space != "":
		return s.b.Space(s.space)
	case caller != "":
		return s.confined(caller, name)
	}
	return s.b.Space(name)
}

// decode reads a request body into req.
func decode(w http.ResponseWriter, r *http.Request, req proto.Message) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		return fmt.Errorf("%w: reading the body: %w", errBadRequest, err)
	}
	if err := proto.Unmarshal(body, req); err != nil {
		return fmt.Errorf("%w: decoding the body: %w", errBadRequest, err)
	}
	return nil
}

func (s *Server) begin(w http.ResponseWriter, r *http.Request) {
	st, err := s.spaceOf(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	id := newID()
	t := &serverTxn{
		ops:      make(chan *op),
		started:  make(chan struct{}),
		done:     make(chan struct{}),
		readOnly: r.URL.Query().Get("readonly") == "1",
		owner:    callerOf(r),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.fail(w, store.ErrClosed)
		return
	}
	if len(s.txns) >= s.maxTxns {
		s.mu.Unlock()
		s.fail(w, fmt.Errorf("%w: %d open, the cap", ErrTooManyTransactions, s.maxTxns))
		return
	}
	s.txns[id] = t
	s.wg.Add(1)
	s.mu.Unlock()
	go s.run(id, st, t)
	select {
	case <-t.started:
		s.reply(w, &storepb.BeginResponse{Txn: id})
	case <-t.done:
		s.fail(w, t.err)
	}
}

// get reads one key in a read-only transaction of its own: one round trip
// where begin, get and commit take three.
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	st, err := s.spaceOf(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	var req storepb.GetRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	v, err := store.Get(r.Context(), st, req.Key)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.reply(w, &storepb.GetResponse{Found: v != nil, Value: v})
}

// serveOp answers one operation (op.go): always 200, the answer saying
// whether it failed.
func (s *Server) serveOp(w http.ResponseWriter, r *http.Request) {
	var ans []byte
	st, err := s.spaceOf(r)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, maxOpBytes))
		if err != nil {
			err = fmt.Errorf("%w: reading the body: %w", errBadRequest, err)
		} else {
			ans = s.opIn(r.Context(), st, body)
		}
	}
	if err != nil {
		ans = s.opError(err)
	}
	w.Header().Set("Content-Type", ContentTypeOp)
	w.Write(ans)
}

// run runs t through st until the client commits or aborts it, it grows
// older than MaxTransactionTime, or the Server closes.
func (s *Server) run(id string, st store.Store, t *serverTxn) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(s.ctx, store.MaxTransactionTime)
	defer cancel()
	defer func() {
		s.mu.Lock()
		delete(s.txns, id)
		s.mu.Unlock()
		close(t.done)
	}()
	var final *op // commit or abort
	calls := 0
	body := func(rtx store.ReadTx, tx store.Tx) error {
		if calls++; calls > 1 {
			return errRetry // the client runs its function again
		}
		close(t.started)
		for {
			select {
			case o := <-t.ops:
				switch o.name {
				case "commit":
					final = o
					return nil
				case "abort":
					final = o
					return errAbort
				}
				resp, err := do(rtx, tx, o)
				o.reply <- opReply{resp, err}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	var err error
	if t.readOnly {
		err = st.ReadTransact(ctx, func(rtx store.ReadTx) error { return body(rtx, nil) })
	} else {
		err = st.Transact(ctx, func(tx store.Tx) error { return body(tx, tx) })
	}
	switch {
	case errors.Is(err, errRetry):
		err = fmt.Errorf("%w: at commit", store.ErrConflict)
	case errors.Is(err, errAbort):
		err = nil
	case errors.Is(err, context.DeadlineExceeded) && s.ctx.Err() == nil:
		err = fmt.Errorf("%w: open longer than %v", store.ErrTransactionTime, time.Duration(store.MaxTransactionTime))
	case s.ctx.Err() != nil:
		err = store.ErrClosed
	}
	if final != nil {
		final.reply <- opReply{nil, err}
	}
	t.err = err
}

var errAbort = errors.New("storehttp: aborted")

// do runs one operation; tx is nil in a read-only transaction.
func do(rtx store.ReadTx, tx store.Tx, o *op) (proto.Message, error) {
	if tx == nil {
		switch o.name {
		case "set", "clear", "clearRange", "setStamped":
			return nil, store.ErrReadOnly
		}
	}
	if o.name == "setStamped" {
		req := o.req.(*storepb.SetRequest)
		return nil, tx.SetStamped(req.Key, req.Value)
	}
	switch req := o.req.(type) {
	case *storepb.GetRequest:
		v, err := rtx.Get(req.Key)
		if err != nil {
			return nil, err
		}
		return &storepb.GetResponse{Value: v, Found: v != nil}, nil
	case *storepb.RangeRequest:
		kvs, err := rtx.Range(req.Begin, req.End, store.RangeOptions{Limit: int(req.Limit), Reverse: req.Reverse})
		if err != nil {
			return nil, err
		}
		resp := &storepb.RangeResponse{Kvs: make([]*storepb.KeyValue, len(kvs))}
		pbs := make([]storepb.KeyValue, len(kvs))
		for i, kv := range kvs {
			pbs[i].Key, pbs[i].Value = kv.Key, kv.Value
			resp.Kvs[i] = &pbs[i]
		}
		return resp, nil
	case *storepb.SetRequest:
		return nil, tx.Set(req.Key, req.Value)
	case *storepb.ClearRequest:
		return nil, tx.Clear(req.Key)
	case *storepb.ClearRangeRequest:
		return nil, tx.ClearRange(req.Begin, req.End)
	}
	return nil, fmt.Errorf("storehttp: no operation %q", o.name)
}

// newRequest returns the request message of operation name, or nil for
// commit and abort, or false if there is no such operation.
func newRequest(name string) (proto.Message, bool) {
	switch name {
	case "get":
		return &storepb.GetRequest{}, true
	case "range":
		return &storepb.RangeRequest{}, true
	case "set", "setStamped":
		return &storepb.SetRequest{}, true
	case "clear":
		return &storepb.ClearRequest{}, true
	case "clearRange":
		return &storepb.ClearRangeRequest{}, true
	case "commit", "abort":
		return nil, true
	}
	return nil, false
}

func (s *Server) op(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("op")
	req, ok := newRequest(name)
	if !ok {
		s.fail(w, fmt.Errorf("%w: no operation %q", errBadRequest, name))
		return
	}
	if req != nil {
		if err := decode(w, r, req); err != nil {
			s.fail(w, err)
			return
		}
	}
	s.mu.Lock()
	t := s.txns[r.PathValue("txn")]
	closed := s.closed
	s.mu.Unlock()
	if t != nil && t.owner != callerOf(r) { // another service's: as if unknown
		t = nil
	}
	if t == nil {
		if closed {
			s.fail(w, store.ErrClosed)
		} else {
			s.fail(w, errUnknownTxn)
		}
		return
	}
	o := &op{name: name, req: req, reply: make(chan opReply, 1)}
	select {
	case t.ops <- o:
	case <-t.done:
		s.fail(w, errUnknownTxn)
		return
	case <-r.Context().Done():
		return
	}
	var rep opReply
	select {
	case rep = <-o.reply:
	case <-t.done:
		select {
		case rep = <-o.reply:
		default:
			rep.err = errUnknownTxn
		}
	}
	if rep.err != nil {
		s.fail(w, rep.err)
		return
	}
	s.reply(w, rep.resp)
}

var (
	errBadRequest = errors.New("storehttp: bad request")
	errUnknownTxn = fmt.Errorf("%w: unknown or finished transaction", store.ErrTransactionTime)
)

func (s *Server) reply(w http.ResponseWriter, m proto.Message) {
	if m == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	b, err := proto.Marshal(m)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.Write(b)
}

// codeOf maps an error to its code and HTTP status; the sentinel is the
// error whose text goes on the wire (nil for internal errors).
func codeOf(err error) (storepb.Code, int, error) {
	for _, c := range []struct {
		err    error
		code   storepb.Code
		status int
	}{
		{store.ErrConflict, storepb.Code_CODE_CONFLICT, http.StatusConflict},
		{store.ErrKeyTooLarge, storepb.Code_CODE_KEY_TOO_LARGE, http.StatusRequestEntityTooLarge},
		{store.ErrValueTooLarge, storepb.Code_CODE_VALUE_TOO_LARGE, http.StatusRequestEntityTooLarge},
		{store.ErrTransactionLarge, storepb.Code_CODE_TRANSACTION_LARGE, http.StatusRequestEntityTooLarge},
		{store.ErrTransactionTime, storepb.Code_CODE_TRANSACTION_TIME, http.StatusGone},
		{store.ErrReadOnly, storepb.Code_CODE_READ_ONLY, http.StatusForbidden},
		{store.ErrClosed, storepb.Code_CODE_CLOSED, http.StatusServiceUnavailable},
		{store.ErrSpace, storepb.Code_CODE_SPACE, http.StatusForbidden},
		{ErrUnauthenticated, storepb.Code_CODE_UNAUTHENTICATED, http.StatusUnauthorized},
		{errBadRequest, storepb.Code_CODE_BAD_REQUEST, http.StatusBadRequest},
		{context.Canceled, storepb.Code_CODE_CANCELED, http.StatusServiceUnavailable},
		{ErrTooManyTransactions, storepb.Code_CODE_TOO_MANY_TRANSACTIONS, http.StatusServiceUnavailable},
	} {
		if errors.Is(err, c.err) {
			return c.code, c.status, c.err
		}
	}
	return storepb.Code_CODE_UNSPECIFIED, http.StatusInternalServerError, nil
}

// fail answers err as a code. The message is the sentinel's text, never
// err's: internal errors are logged under an id the message carries.
func (s *Server) fail(w http.ResponseWriter, err error) {
	_, status, _ := codeOf(err)
	b, _ := proto.Marshal(s.wireError(err))
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	w.Write(b)
}

// wireError is err as the client sees it: the sentinel's code and text,
// never err's; an internal error is logged under an id its message names.
func (s *Server) wireError(err error) *storepb.Error {
	code, _, sentinel := codeOf(err)
	e := &storepb.Error{Code: code}
	if sentinel != nil {
		e.Message = sentinel.Error()
	} else {
		id := newID()[:12]
		e.Message = "storehttp: internal error " + id
		s.log.Error("storehttp: internal error", "id", id, "err", err)
	}
	return e
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
