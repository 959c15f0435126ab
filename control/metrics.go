package control

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/internal/metrics"
)

// healthTimeout bounds the etcd read of /healthz.
const healthTimeout = 2 * time.Second

// stats are the control plane's own series, served at /metrics.
type stats struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec   // route, code
	duration  *prometheus.HistogramVec // route
	rules     *prometheus.CounterVec   // service
	decisions *prometheus.CounterVec   // service, action
	scrapes   *prometheus.CounterVec   // result
}

func newStats(leading func() bool) *stats {
	st := &stats{
		reg: metrics.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "griddle_control_http_requests_total",
			Help: "API and page requests answered, by route pattern and HTTP status."}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "griddle_control_http_request_duration_seconds",
			Help: "Time to answer an API or page request.", Buckets: prometheus.DefBuckets}, []string{"route"}),
		rules: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "griddle_control_rules_applied_total",
			Help: "Rule revisions written by operators (apply and rollback; canary steps are decisions)."}, []string{"service"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "griddle_control_canary_decisions_total",
			Help: "Decisions of the canary controller on this replica: step, wait, promote, rollback."}, []string{"service", "action"}),
		scrapes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "griddle_control_scrapes_total",
			Help: "Reads of sidecars' and edges' /metrics for the page, by result (ok or error)."}, []string{"result"}),
	}
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "griddle_control_leader",
		Help: "1 while this replica leads and runs the canary controller."}, func() float64 {
		if leading() {
			return 1
		}
		return 0
	})
	st.reg.MustRegister(st.requests, st.duration, st.rules, st.decisions, st.scrapes, leader)
	return st
}

func (st *stats) applied(service string) { st.rules.WithLabelValues(service).Inc() }

func (st *stats) decided(c canary.Canary, e canary.Event) {
	st.decisions.WithLabelValues(c.Service, e.Action).Inc()
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// instrument counts and times every request by the mux pattern it matched.
func (st *stats) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		st.requests.WithLabelValues(route, metrics.Code(sw.status)).Inc()
		st.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// healthz answers 200 when etcd answers a read within healthTimeout, else
// 503; the body says which.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := s.cli.Get(ctx, s.prefix+"healthz", clientv3.WithCountOnly()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("etcd unreachable\n"))
		return
	}
	leader := "follower"
	if s.Leading() {
		leader = "leader"
	}
	_, _ = w.Write([]byte("ok " + leader + "\n"))
}
