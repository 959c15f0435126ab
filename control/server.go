package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// ErrConfig marks an invalid Config; the message names the field.
var ErrConfig = errors.New("control: invalid config")

// Timing of the server.
const (
	requestTimeout  = 10 * time.Second // etcd work of one API call
	shutdownTimeout = 5 * time.Second
	maxBody         = 1 << 20
)

// Config configures a Server.
type Config struct {
	// Etcd is the client to etcd (required; the Server does not close it).
	Etcd *clientv3.Client
	// Prefix is the key prefix of everything in etcd ("": discovery.DefaultPrefix).
	Prefix string
	// Token is an operator's bearer token, which write calls must carry
	// ("": none; at least one of Token and Tokens is required).
	Token string
	// Tokens are bearer tokens with their holders' names and roles (see
	// ParseTokens).
	Tokens []Token
	// PrivateReads makes reads (the API, the page, /metrics; not
	// /healthz) need a token too, of a viewer or better.
	PrivateReads bool
	// ID names this replica in the leader election ("": hostname-pid).
	ID string
	// SessionTTL is the leader's lease (0: DefaultSessionTTL).
	SessionTTL time.Duration
	// Logger gets errors (with their ids) and the controllers' decisions
	// (nil: slog.Default()).
	Logger *slog.Logger
	// Now is the clock of history and canaries (nil: time.Now).
	Now func() time.Time
	// Scrape reads a sidecar's metrics for the canary controller (nil: HTTP /metrics).
	Scrape canary.ScrapeFunc
	// Poll is how often the canary controller looks for due steps (0: canary.DefaultPoll).
	Poll time.Duration
	// SampleEvery is how often Run reads the sidecars' and edges' metrics
	// for the page's live figures (0: DefaultSampleEvery).
	SampleEvery time.Duration
}

// Validate reports the first problem of c; the error wraps ErrConfig.
func (c Config) Validate() error {
	switch {
	case c.Etcd == nil:
		return fmt.Errorf("%w: an etcd client is required (--etcd)", ErrConfig)
	case c.Token == "" && len(c.Tokens) == 0:
		return fmt.Errorf("%w: a token is required (--token-file or GRIDDLE_TOKEN)", ErrConfig)
	case c.Prefix != "" && !strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("%w: prefix %q must end with /", ErrConfig, c.Prefix)
	case c.SessionTTL < 0 || c.Poll < 0 || c.SampleEvery < 0:
		return fmt.Errorf("%w: session TTL, poll and sample period must not be negative", ErrConfig)
	}
	for i, t := range c.Tokens {
		if err := t.validate(); err != nil {
			return fmt.Errorf("tokens[%d]: %w", i, err)
		}
	}
	return nil
}

// Server is one control plane replica: the HTTP API and status page, and,
// while it leads, the canary controller.
type Server struct {
	cli      *clientv3.Client
	prefix   string
	tokens   tokenSet
	log      *slog.Logger
	rules    *rulestore.Store
	canaries *canary.Manager
	ctrl     *canary.Controller
	elector  *Elector
	mux      *http.ServeMux
	handler  http.Handler
	stats    *stats
	live     *sampler
	now      func() time.Time
}

// New validates cfg and builds a Server; it does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Prefix == "" {
		cfg.Prefix = discovery.DefaultPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	rules := rulestore.New(cfg.Etcd, cfg.Prefix, cfg.Now)
	mgr := canary.NewManager(cfg.Etcd, rules, cfg.Now)
	s := &Server{
		cli: cfg.Etcd, prefix: cfg.Prefix, tokens: newTokenSet(tokensOf(cfg)), log: cfg.Logger,
		rules: rules, canaries: mgr,
		elector: NewElector(cfg.Etcd, cfg.Prefix, cfg.ID, cfg.SessionTTL, cfg.Logger),
		mux:     http.NewServeMux(),
	}
	s.stats = newStats(s.Leading)
	s.now = cfg.Now
	if s.now == nil {
		s.now = time.Now
	}
	scrape := cfg.Scrape
	if scrape == nil {
		scrape = canary.HTTPScraper(nil)
	}
	every := cfg.SampleEvery
	if every == 0 {
		every = DefaultSampleEvery
	}
	s.live = &sampler{targets: mgr.Targets, scrape: scrape, every: every, log: cfg.Logger, count: func(ok bool) {
		if ok {
			s.stats.scrapes.WithLabelValues("ok").Inc()
		} else {
			s.stats.scrapes.WithLabelValues("error").Inc()
		}
	}}
	ctrl, err := canary.NewController(canary.ControllerConfig{Manager: mgr, Scrape: cfg.Scrape, Now: cfg.Now, Poll: cfg.Poll, Logger: cfg.Logger, OnDecision: s.stats.decided})
	if err != nil {
		return nil, err
	}
	s.ctrl = ctrl
	s.routes()
	s.handler = s.stats.instrument(s.mux)
	if cfg.PrivateReads {
		s.handler = s.privateReads(s.handler)
	}
	return s, nil
}

// Handler serves the API and the status page; it works without Run (then
// no controller runs in this process).
func (s *Server) Handler() http.Handler { return s.handler }

// Leading reports whether this replica leads (runs the controllers) now.
func (s *Server) Leading() bool { return s.elector.Leading() }

// Run serves HTTP on ln, samples the sidecars' and edges' metrics for the
// page, and takes part in the leader election until ctx ends; then it
// shuts the server down (waiting up to 5s for calls in
// flight), stops the controller, resigns and returns. It closes ln.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { s.live.run(ctx) })
	wg.Go(func() {
		_ = s.elector.Run(ctx, func(lctx context.Context, guard clientv3.Cmp) {
			_ = s.ctrl.Run(lctx, guard)
		})
	})
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("control: serve: %w", err)
			cancel()
		}
	})
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	_ = srv.Shutdown(sctx)
	scancel()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /{$}", s.page)
	m.HandleFunc("GET /services/{service}", s.servicePage)
	m.HandleFunc("GET /static/{file}", s.staticFile)
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /v1/live", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.live.Figures()) })
	m.Handle("GET /metrics", metrics.Handler(s.stats.reg))
	m.HandleFunc("GET /v1/services", s.services)
	m.HandleFunc("GET /v1/rules", s.listRules)
	m.HandleFunc("GET /v1/rules/{service}", s.getRules)
	m.HandleFunc("POST /v1/rules/{service}/validate", s.validate)
	m.HandleFunc("PUT /v1/rules/{service}", s.write(RoleOperator, s.putRules))
	m.HandleFunc("POST /v1/rules/{service}/diff", s.diff)
	m.HandleFunc("POST /v1/rules/{service}/dry-run", s.dryRun)
	m.HandleFunc("GET /v1/rules/{service}/history", s.history)
	m.HandleFunc("POST /v1/rules/{service}/rollback", s.write(RoleOperator, s.rollback))
	m.HandleFunc("GET /v1/canaries", s.listCanaries)
	m.HandleFunc("POST /v1/canaries/{service}", s.write(RoleDeployer, s.startCanary))
	m.HandleFunc("GET /v1/canaries/{service}", s.getCanary)
	m.HandleFunc("POST /v1/canaries/{service}/promote", s.write(RoleDeployer, s.promote))
	m.HandleFunc("POST /v1/canaries/{service}/abort", s.write(RoleDeployer, s.abort))
	m.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Message: "no such endpoint: " + r.Method + " " + r.URL.Path, Code: api.CodeNotFound})
	})
}

// write wraps a handler of a write call: it needs a bearer token whose
// role allows calls that need role; the handler sees its holder
// (holderOf, author).
func (s *Server) write(role Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r = s.authorize(w, r, role); r != nil {
			h(w, r)
		}
	}
}

// authorize checks r's bearer token for role and returns r with its
// holder, or answers 401 or 403 and returns nil.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, role Role) *http.Request {
	tok := bearer(r)
	if tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="griddle"`)
		writeJSON(w, http.StatusUnauthorized, api.Error{Message: "this call needs Authorization: Bearer <token>", Code: api.CodeUnauthorized})
		return nil
	}
	name, has, ok := s.tokens.holder(tok)
	switch {
	case !ok:
		writeJSON(w, http.StatusForbidden, api.Error{Message: "the token is not valid", Code: api.CodeForbidden})
		return nil
	case !has.allows(role):
		writeJSON(w, http.StatusForbidden, api.Error{Message: fmt.Sprintf("the token's role %s may not do this; it needs the %s role", has, role), Code: api.CodeForbidden})
		return nil
	}
	return withHolder(r, name, has)
}

// privateReads makes every other call need a viewer's token (or better),
// but /healthz, which probes read.
func (s *Server) privateReads(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || holderOf(r).role != "" {
			h.ServeHTTP(w, r)
			return
		}
		if r = s.authorize(w, r, RoleViewer); r != nil {
			h.ServeHTTP(w, r)
		}
	})
}

// tokensOf joins Config.Token (an operator's) and Config.Tokens.
func tokensOf(cfg Config) []Token {
	ts := slices.Clone(cfg.Tokens)
	if cfg.Token != "" {
		ts = append(ts, Token{Name: string(RoleOperator), Secret: cfg.Token, Role: RoleOperator})
	}
	return ts
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// fail answers err as an api.Error. Errors users can act on keep their
// (field-named) message; anything else is logged with an id, and only the
// id is sent.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		fe       *routing.FieldError
		conflict *rulestore.ConflictError
	)
	switch {
	case errors.As(err, &conflict):
		writeJSON(w, http.StatusConflict, api.Error{
			Message: fmt.Sprintf("revision %d is stale: the rules of %s are at %d; get them again and re-apply", conflict.Expected, conflict.Service, conflict.Current),
			Code:    api.CodeConflict, Revision: conflict.Current,
		})
	case errors.As(err, &fe):
		writeJSON(w, http.StatusBadRequest, api.Error{Message: err.Error(), Code: api.CodeInvalid, Field: fe.Field})
	case errors.Is(err, routing.ErrInvalid), errors.Is(err, canary.ErrInvalid), errors.Is(err, errBadRequest):
		writeJSON(w, http.StatusBadRequest, api.Error{Message: err.Error(), Code: api.CodeInvalid, Field: fieldOf(err)})
	case errors.Is(err, rulestore.ErrNotFound), errors.Is(err, canary.ErrNotFound):
		writeJSON(w, http.StatusNotFound, api.Error{Message: err.Error(), Code: api.CodeNotFound})
	case errors.Is(err, canary.ErrRunning), errors.Is(err, errCanaryOwns):
		writeJSON(w, http.StatusConflict, api.Error{Message: err.Error(), Code: api.CodeRunning})
	case errors.Is(err, canary.ErrNotRunning):
		writeJSON(w, http.StatusConflict, api.Error{Message: err.Error(), Code: api.CodeNotRunning})
	case errors.Is(err, canary.ErrBusy), errors.Is(err, rulestore.ErrGuard):
		writeJSON(w, http.StatusConflict, api.Error{Message: "concurrent changes; try again", Code: api.CodeBusy})
	default:
		id := newID()
		s.log.Error("control: request failed", "id", id, "method", r.Method, "path", r.URL.Path, "err", err)
		status, code, msg := http.StatusInternalServerError, api.CodeInternal, "internal error"
		if errors.Is(err, context.DeadlineExceeded) {
			status, code, msg = http.StatusServiceUnavailable, api.CodeUnavailable, "etcd did not answer in time"
		}
		writeJSON(w, status, api.Error{Message: msg + " (id " + id + ")", Code: code, ID: id})
	}
}

// errBadRequest marks malformed requests (not documents).
var errBadRequest = errors.New("bad request")

// fieldOf extracts the field of a "...: field: problem" message of the
// sentinels that do not carry a FieldError.
func fieldOf(err error) string {
	msg := err.Error()
	for _, p := range []string{canary.ErrInvalid.Error() + ": ", routing.ErrInvalid.Error() + ": ", errBadRequest.Error() + ": "} {
		if rest, ok := strings.CutPrefix(msg, p); ok {
			if f, _, ok := strings.Cut(rest, ":"); ok && !strings.ContainsAny(f, " \"") {
				return f
			}
		}
	}
	return ""
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), requestTimeout)
}

// document reads a YAML or JSON document from the body with routing.Parse
// (which validates it) and checks it names the service of the URL. It
// returns the body too: the document as authored.
func document(r *http.Request) (*routing.Document, []byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: body: unreadable or over %d bytes", errBadRequest, maxBody)
	}
	doc, err := routing.Parse(b)
	if err != nil {
		return nil, nil, err
	}
	if svc := r.PathValue("service"); doc.Service != svc {
		return nil, nil, &routing.FieldError{Field: "service", Problem: fmt.Sprintf("%q, but the URL names %q", doc.Service, svc)}
	}
	return doc, b, nil
}

// revisionOf reads the expected revision from If-Match or ?revision=
// (absent: 0, i.e. the rules must not exist yet).
func revisionOf(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("revision")
	if h := r.Header.Get("If-Match"); h != "" {
		v = strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: revision: %q is not a revision number", errBadRequest, v)
	}
	return n, nil
}

func rulesOf(service string, e rulestore.Entry) (api.Rules, error) {
	y, err := rulestore.Canonical(e.Document)
	if err != nil {
		return api.Rules{}, err
	}
	return api.Rules{Service: service, Revision: e.Revision, Document: e.Document, YAML: string(y), Source: e.Source,
		AppliedAt: e.AppliedAt, Author: e.Author, Comment: e.Comment}, nil
}

func (s *Server) getRules(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	svc := r.PathValue("service")
	e, err := s.rules.Get(ctx, svc)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := rulesOf(svc, e)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(e.Revision, 10)))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	all, err := s.rules.List(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]api.RulesSummary, 0, len(all))
	for _, e := range all {
		sum := api.RulesSummary{Service: e.Document.Service, Revision: e.Revision, AppliedAt: e.AppliedAt, Author: e.Author, Rules: len(e.Document.Versions)}
		if n := len(e.Document.Versions); n > 0 {
			sum.Default = e.Document.Versions[n-1].To
		}
		out = append(out, sum)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) validate(w http.ResponseWriter, r *http.Request) {
	doc, src, err := document(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := rulesOf(doc.Service, rulestore.Entry{Document: doc, Meta: rulestore.Meta{Source: string(src)}})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// errCanaryOwns marks a manual change refused because a canary steers the rules.
var errCanaryOwns = errors.New("a canary is running")

// canaryGuard refuses a manual change of service's rules while its canary
// runs, and otherwise returns a guard that fails the write if a canary
// starts meanwhile.
func (s *Server) canaryGuard(ctx context.Context, service string) (rulestore.ApplyOption, error) {
	resp, err := s.cli.Get(ctx, canary.Key(s.prefix, service))
	if err != nil {
		return nil, fmt.Errorf("control: canary of %s: %w", service, err)
	}
	var rev int64
	if len(resp.Kvs) == 1 {
		rev = resp.Kvs[0].ModRevision
		var c canary.Canary
		if json.Unmarshal(resp.Kvs[0].Value, &c) == nil && c.State == canary.Running {
			return nil, fmt.Errorf("%w: the rules of %s are steered by its canary (%s → %s at %d%%, step %d of %d), so this change is refused; "+
				"end the canary first with `griddle canary promote %s` or `griddle canary abort %s`",
				errCanaryOwns, service, c.From, c.To, c.Weight(), c.Step+1, len(c.Steps), service, service)
		}
	}
	return rulestore.WithGuard(clientv3.Compare(clientv3.ModRevision(canary.Key(s.prefix, service)), "=", rev)), nil
}

func (s *Server) putRules(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	expect, err := revisionOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	doc, src, err := document(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cur, err := s.rules.Get(ctx, doc.Service)
	switch {
	case errors.Is(err, rulestore.ErrNotFound):
	case err != nil:
		s.fail(w, r, err)
		return
	case expect == cur.Revision && rulestore.Same(cur, doc, src):
		writeJSON(w, http.StatusOK, api.Applied{Service: doc.Service, Revision: cur.Revision, Previous: cur.Revision, Unchanged: true})
		return
	}
	if !holderOf(r).role.allows(RoleAdmin) && policyChanged(cur.Document, doc) {
		writeJSON(w, http.StatusForbidden, api.Error{Message: fmt.Sprintf("changing authorization (who may call %s) needs the admin role; the token's is %s", doc.Service, holderOf(r).role), Code: api.CodeForbidden, Field: "authorization"})
		return
	}
	guard, err := s.canaryGuard(ctx, doc.Service)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rev, err := s.rules.Apply(ctx, doc, expect, author(r), rulestore.WithComment(r.URL.Query().Get("comment")), rulestore.WithSource(src), guard)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.stats.applied(doc.Service)
	writeJSON(w, http.StatusOK, api.Applied{Service: doc.Service, Revision: rev, Previous: expect})
}

func (s *Server) diff(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	doc, src, err := document(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cur, err := s.rules.Get(ctx, doc.Service)
	if err != nil && !errors.Is(err, rulestore.ErrNotFound) {
		s.fail(w, r, err)
		return
	}
	out := api.Diff{Service: doc.Service, Revision: cur.Revision}
	if !rulestore.Same(cur, doc, src) {
		text, err := cur.Text()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		name := doc.Service + " (no rules)"
		if cur.Revision > 0 {
			name = fmt.Sprintf("%s@%d", doc.Service, cur.Revision)
		}
		out.Diff = rulestore.Unified(text, string(src), name, "proposed")
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.fail(w, r, fmt.Errorf("%w: limit: %q is not a count", errBadRequest, v))
			return
		}
		limit = n
	}
	svc := r.PathValue("service")
	h, err := s.rules.History(ctx, svc, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.History{Service: svc, Entries: h})
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	to, err := strconv.ParseInt(r.URL.Query().Get("to"), 10, 64)
	if err != nil || to <= 0 {
		s.fail(w, r, fmt.Errorf("%w: to: %q is not a revision number", errBadRequest, r.URL.Query().Get("to")))
		return
	}
	expect, err := revisionOf(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	svc := r.PathValue("service")
	if !holderOf(r).role.allows(RoleAdmin) && s.rollbackChangesPolicy(ctx, svc, to) {
		writeJSON(w, http.StatusForbidden, api.Error{Message: fmt.Sprintf("this rollback changes authorization (who may call %s), which needs the admin role", svc), Code: api.CodeForbidden, Field: "authorization"})
		return
	}
	guard, err := s.canaryGuard(ctx, svc)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rev, err := s.rules.Rollback(ctx, svc, to, expect, author(r), guard)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.stats.applied(svc)
	writeJSON(w, http.StatusOK, api.Applied{Service: svc, Revision: rev, Previous: expect})
}

func (s *Server) listCanaries(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	all, err := s.canaries.List(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, all)
}

func (s *Server) getCanary(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	c, err := s.canaries.Get(ctx, r.PathValue("service"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) startCanary(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	var spec canary.Spec
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		s.fail(w, r, fmt.Errorf("%w: body: %s", errBadRequest, jsonProblem(err)))
		return
	}
	if svc := r.PathValue("service"); spec.Service == "" {
		spec.Service = svc
	} else if spec.Service != svc {
		s.fail(w, r, fmt.Errorf("%w: service: %q, but the URL names %q", canary.ErrInvalid, spec.Service, svc))
		return
	}
	c, err := s.canaries.Start(ctx, spec, author(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

func (s *Server) promote(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	c, err := s.canaries.Promote(ctx, r.PathValue("service"), author(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) abort(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	c, err := s.canaries.Abort(ctx, r.PathValue("service"), author(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// rollbackChangesPolicy reports whether rolling svc back to revision to
// changes its authorization policy. Lookups that fail say no: the
// rollback itself then fails on them.
func (s *Server) rollbackChangesPolicy(ctx context.Context, svc string, to int64) bool {
	target, err := s.rules.Revision(ctx, svc, to)
	if err != nil {
		return false
	}
	cur, err := s.rules.Get(ctx, svc)
	if err != nil {
		return false
	}
	return policyChanged(cur.Document, target.Document)
}

// jsonProblem says what is wrong with a JSON body without Go's error text.
func jsonProblem(err error) string {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("not valid JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("%s: want a %s", typ.Field, typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "empty or cut short"
	}
	return fmt.Sprintf("unreadable or over %d bytes", maxBody)
}
