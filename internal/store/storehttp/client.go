package storehttp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/griddle-mesh/griddle/internal/store"
	"github.com/griddle-mesh/griddle/internal/store/storehttp/storepb"
)

// Client is a store.Backend whose transactions run on a Server, in as few
// HTTP requests as their shape allows (see OneTrip: a transaction that
// only writes is one request; each read adds one). It is safe for
// concurrent use.
type Client struct {
	hc     *http.Client
	base   string
	closed atomic.Bool
	fails  atomic.Int32 // requests in a row that got no HTTP answer
	hop    hopLink      // where operations go when it is up (see HopUpgrade)
	ctx    context.Context
	cancel context.CancelFunc // ends a hop dial under way (Close)
}

// unreachableAfter is how many requests in a row must get no HTTP answer
// from the Server before Reachable reports false.
const unreachableAfter = 3

// Reachable reports whether the Server answers: false once the last
// requests to it (three or more in a row) got no HTTP answer (the
// connection refused, reset or broken), until one gets an answer again.
// A request whose context ended first counts neither way. A sidecar tells
// its callers from it that it cannot serve (see wire.Reply.Unhealthy).
func (c *Client) Reachable() bool { return c.fails.Load() < unreachableAfter }

// do sends req through the http.Client and notes whether the Server
// answered.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	c.answered(req.Context(), err)
	return resp, err
}

// answered notes whether the Server answered a request made with ctx (err
// nil) or not; one whose ctx ended first counts neither way.
func (c *Client) answered(ctx context.Context, err error) {
	switch {
	case err == nil:
		if c.fails.Load() != 0 {
			c.fails.Store(0)
		}
	case ctx.Err() == nil:
		c.fails.Add(1)
	}
}

var _ store.Backend = (*Client)(nil)

// NewClient returns a Client of the Server at base (scheme and host, such
// as "http://griddle-store"), reached through hc, which the caller keeps
// owning.
func NewClient(hc *http.Client, base string, opts ...ClientOption) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{hc: hc, base: strings.TrimSuffix(base, "/"), ctx: ctx, cancel: cancel}
	for _, o := range opts {
		o(c)
	}
	return c
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// HTTPOnly sends every operation in an HTTP request of its own, never on
// a hop connection (HopUpgrade): for a path that does not pass protocol
// upgrades through.
func HTTPOnly() ClientOption { return func(c *Client) { c.hop.off = true } }

// Space returns the Store of key space name. A Server with WithSpace puts
// its transactions in its own space instead.
func (c *Client) Space(name string) (store.Store, error) {
	if err := store.ValidSpace(name); err != nil {
		return nil, err
	}
	return newRemoteSpace(c, name), nil
}

// Own returns the Store of the key space that the Server imposes
// (WithSpace); transactions on a Server without one fail with
// store.ErrSpace.
func (c *Client) Own() store.Store {
	return newRemoteSpace(c, OwnSpace)
}

// Close makes later transactions fail with store.ErrClosed and closes the
// hop connection. It closes neither the http.Client nor the Server.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.closeHop()
	return nil
}

type remoteSpace struct {
	c     *Client
	name  string
	begin string // the begin URL path
	get   string // the one-step read's URL path
	op    string // the operations' URL path (Server.Op)
	one   *OneTrip
}

func newRemoteSpace(c *Client, name string) *remoteSpace {
	base := "/v1/spaces/" + name
	s := &remoteSpace{c: c, name: name, begin: base + "/txns", get: base + "/get", op: base + "/op"}
	s.one = NewOneTrip(s.forward, interactive{s})
	return s
}

var (
	_ store.Store  = (*remoteSpace)(nil)
	_ store.Getter = (*remoteSpace)(nil)
	_ opForwarder  = (*remoteSpace)(nil)
)

// forward sends one operation (op.go) as a unary call on the hop
// connection, or while there is none in one HTTP request.
func (s *remoteSpace) forward(ctx context.Context, op []byte) ([]byte, error) {
	if s.c.closed.Load() {
		return nil, store.ErrClosed
	}
	if hc := s.c.hopConn(); hc != nil {
		return s.c.hopCall(ctx, hc, append(appendHopName(make([]byte, 0, 1+len(s.name)+len(op)), s.name), op...))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.c.base+s.op, bytes.NewReader(op))
	if err != nil {
		return nil, fmt.Errorf("storehttp: %w", err)
	}
	req.Header.Set("Content-Type", ContentTypeOp)
	resp, err := s.c.do(req)
	if err != nil {
		return nil, fmt.Errorf("storehttp: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("storehttp: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentTypeOp {
		var e storepb.Error
		if resp.Header.Get("Content-Type") == ContentType && proto.Unmarshal(data, &e) == nil {
			return nil, errorOf(&e) // refused before the operation (WithAuth)
		}
		return nil, fmt.Errorf("storehttp: %s: unexpected answer %s", s.op, resp.Status)
	}
	return data, nil
}

// interactive runs transactions with one request per operation, the
// function's reads in one server transaction: OneTrip's fallback.
type interactive struct{ s *remoteSpace }

func (i interactive) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	return i.s.retry(ctx, false, func(t *remoteTx) error { return fn(t) })
}

func (i interactive) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	return i.s.retry(ctx, true, func(t *remoteTx) error { return fn(readTx{t}) })
}

// Get implements store.Getter: one round trip.
func (s *remoteSpace) Get(ctx context.Context, key []byte) ([]byte, error) {
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	if s.c.closed.Load() {
		return nil, store.ErrClosed
	}
	if hc := s.c.hopConn(); hc != nil {
		b, err := s.c.hopCall(ctx, hc, AppendGet(appendHopName(nil, s.name), key))
		if err != nil {
			return nil, err
		}
		return DecodeGet(b)
	}
	var resp storepb.GetResponse
	if err := s.c.call(ctx, s.get, &storepb.GetRequest{Key: key}, &resp); err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, nil
	}
	if resp.Value == nil {
		return []byte{}, nil
	}
	return resp.Value, nil
}

// Transact implements store.Store: fn runs here, as OneTrip runs it; a
// conflict runs fn again.
func (s *remoteSpace) Transact(ctx context.Context, fn func(tx store.Tx) error) error {
	if s.c.closed.Load() {
		return store.ErrClosed
	}
	return s.one.Transact(ctx, fn)
}

// ReadTransact implements store.Store.
func (s *remoteSpace) ReadTransact(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if s.c.closed.Load() {
		return store.ErrClosed
	}
	return s.one.ReadTransact(ctx, fn)
}

func (s *remoteSpace) retry(ctx context.Context, readOnly bool, fn func(*remoteTx) error) error {
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.c.closed.Load() {
			return store.ErrClosed
		}
		start := time.Now()
		err := s.attempt(ctx, readOnly, fn)
		if err == nil || !errors.Is(err, store.ErrConflict) {
			return err
		}
		if err := store.Wait(ctx, store.Backoff(n, time.Since(start))); err != nil {
			return err
		}
	}
}

func (s *remoteSpace) attempt(ctx context.Context, readOnly bool, fn func(*remoteTx) error) error {
	path := s.begin
	if readOnly {
		path += "?readonly=1"
	}
	var begun storepb.BeginResponse
	if err := s.c.call(ctx, path, nil, &begun); err != nil {
		return err
	}
	t := &remoteTx{c: s.c, ctx: ctx, path: "/v1/txns/" + url.PathEscape(begun.Txn) + "/"}
	if err := fn(t); err != nil {
		// Free the server's transaction now rather than at its time limit,
		// even if ctx has ended.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = s.c.call(actx, t.path+"abort", nil, nil) // best effort: it expires anyway
		return err
	}
	return s.c.call(ctx, t.path+"commit", nil, nil)
}

// remoteTx is one attempt's transaction on the server, driven with the
// attempt's ctx.
type remoteTx struct {
	c    *Client
	ctx  context.Context
	path string // "/v1/txns/{id}/"
}

var _ store.Tx = (*remoteTx)(nil)

type readTx struct{ t *remoteTx }

func (r readTx) Get(key []byte) ([]byte, error) { return r.t.Get(key) }
func (r readTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	return r.t.Range(begin, end, opts)
}

// Get implements store.ReadTx.
func (t *remoteTx) Get(key []byte) ([]byte, error) {
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	var resp storepb.GetResponse
	if err := t.c.call(t.ctx, t.path+"get", &storepb.GetRequest{Key: key}, &resp); err != nil {
		return nil, err
	}
	if !resp.Found {
		return nil, nil
	}
	if resp.Value == nil {
		return []byte{}, nil
	}
	return resp.Value, nil
}

// Range implements store.ReadTx.
func (t *remoteTx) Range(begin, end []byte, opts store.RangeOptions) ([]store.KeyValue, error) {
	if err := errors.Join(store.CheckKey(begin), store.CheckKey(end)); err != nil {
		return nil, err
	}
	limit := int32(min(max(opts.Limit, 0), 1<<31-1))
	var resp storepb.RangeResponse
	req := &storepb.RangeRequest{Begin: begin, End: end, Limit: limit, Reverse: opts.Reverse}
	if err := t.c.call(t.ctx, t.path+"range", req, &resp); err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	kvs := make([]store.KeyValue, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = store.KeyValue{Key: kv.Key, Value: kv.Value}
		if kvs[i].Key == nil {
			kvs[i].Key = []byte{}
		}
		if kvs[i].Value == nil {
			kvs[i].Value = []byte{}
		}
	}
	return kvs, nil
}

// Set implements store.Tx.
func (t *remoteTx) Set(key, value []byte) error {
	if err := store.CheckSet(key, value); err != nil {
		return err
	}
	return t.c.call(t.ctx, t.path+"set", &storepb.SetRequest{Key: key, Value: value}, nil)
}

// Clear implements store.Tx.
func (t *remoteTx) Clear(key []byte) error {
	if err := store.CheckKey(key); err != nil {
		return err
	}
	return t.c.call(t.ctx, t.path+"clear", &storepb.ClearRequest{Key: key}, nil)
}

// SetStamped implements store.Tx.
func (t *remoteTx) SetStamped(prefix, value []byte) error {
	if err := store.CheckStamped(prefix, value, 0); err != nil {
		return err
	}
	return t.c.call(t.ctx, t.path+"setStamped", &storepb.SetRequest{Key: prefix, Value: value}, nil)
}

// ClearRange implements store.Tx.
func (t *remoteTx) ClearRange(begin, end []byte) error {
	if err := errors.Join(store.CheckKey(begin), store.CheckKey(end)); err != nil {
		return err
	}
	return t.c.call(t.ctx, t.path+"clearRange", &storepb.ClearRangeRequest{Begin: begin, End: end}, nil)
}

// call POSTs req (nil: no body) to path and decodes the answer into resp
// (nil: none expected).
func (c *Client) call(ctx context.Context, path string, req, resp proto.Message) error {
	var body io.Reader
	if req != nil {
		b, err := proto.Marshal(req)
		if err != nil {
			return fmt.Errorf("storehttp: %w", err)
		}
		body = bytes.NewReader(b)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, body)
	if err != nil {
		return fmt.Errorf("storehttp: %w", err)
	}
	if req != nil {
		hreq.Header.Set("Content-Type", ContentType)
	}
	hresp, err := c.do(hreq)
	if err != nil {
		return fmt.Errorf("storehttp: %w", err)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(hresp.Body)
	if err != nil {
		return fmt.Errorf("storehttp: reading the answer: %w", err)
	}
	if hresp.StatusCode/100 != 2 {
		var e storepb.Error
		if hresp.Header.Get("Content-Type") != ContentType || proto.Unmarshal(data, &e) != nil {
			return fmt.Errorf("storehttp: %s: unexpected answer %s", path, hresp.Status)
		}
		return errorOf(&e)
	}
	if resp != nil {
		if err := proto.Unmarshal(data, resp); err != nil {
			return fmt.Errorf("storehttp: decoding the answer: %w", err)
		}
	}
	return nil
}

// errorOf turns a wire error back into the store's sentinel.
func errorOf(e *storepb.Error) error {
	var sentinel error
	switch e.Code {
	case storepb.Code_CODE_CONFLICT:
		sentinel = store.ErrConflict
	case storepb.Code_CODE_KEY_TOO_LARGE:
		sentinel = store.ErrKeyTooLarge
	case storepb.Code_CODE_VALUE_TOO_LARGE:
		sentinel = store.ErrValueTooLarge
	case storepb.Code_CODE_TRANSACTION_LARGE:
		sentinel = store.ErrTransactionLarge
	case storepb.Code_CODE_TRANSACTION_TIME:
		sentinel = store.ErrTransactionTime
	case storepb.Code_CODE_READ_ONLY:
		sentinel = store.ErrReadOnly
	case storepb.Code_CODE_CLOSED, storepb.Code_CODE_CANCELED:
		sentinel = store.ErrClosed
	case storepb.Code_CODE_SPACE:
		sentinel = store.ErrSpace
	case storepb.Code_CODE_TOO_MANY_TRANSACTIONS:
		sentinel = ErrTooManyTransactions
	case storepb.Code_CODE_UNAUTHENTICATED:
		sentinel = ErrUnauthenticated
	default:
		return fmt.Errorf("storehttp: server: %s: %s", e.Code, e.Message)
	}
	return fmt.Errorf("storehttp: server: %w", sentinel)
}
