// Package metrics defines the Prometheus series that Griddle's edge and
// sidecars expose on their admin /metrics. Each process makes its own
// registry; nothing here is global.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/griddle-mesh/griddle/internal/wire"
)

// latencyBuckets resolve the 25 ms target finely: seconds, 100 µs to 10 s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .0075, .01, .015, .02, .025, .035, .05, .075, .1, .25, .5, 1, 2.5, 5, 10}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus text format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Gateway is what a gateway (the edge, or a sidecar's outbound socket)
// records per request. Role is "edge" or "outbound". Service and version
// are those the request was sent to (for outbound calls, the callee: the
// sidecar registers them with a constant caller label, see NewOutbound).
type Gateway struct {
	Requests        *prometheus.CounterVec   // service, version, experiment, variant, code
	Duration        *prometheus.HistogramVec // service, version, experiment, variant, class
	Retries         *prometheus.CounterVec   // service
	BudgetExhausted *prometheus.CounterVec   // service
	Shed            *prometheus.CounterVec   // service
	RuleRevision    prometheus.Gauge
}

// NewGateway registers the gateway series of role on reg.
func NewGateway(reg prometheus.Registerer, role string) *Gateway {
	ns := "griddle_" + role
	g := &Gateway{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "_requests_total",
			Help: "Requests answered, by service, version, experiment, variant and HTTP status."},
			[]string{"service", "version", "experiment", "variant", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ns + "_request_duration_seconds",
			Help: "Time from receiving a request to writing its answer, by service, version, experiment, variant and status class (2xx, 5xx).", Buckets: latencyBuckets},
			[]string{"service", "version", "experiment", "variant", "class"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "_retries_total",
			Help: "Tries beyond the first."}, []string{"service"}),
		BudgetExhausted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "_retry_budget_exhausted_total",
			Help: "Retries refused by the retry budget."}, []string{"service"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "_shed_total",
			Help: "Requests refused for load before reaching a handler."}, []string{"service"}),
		RuleRevision: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "_rule_revision",
			Help: "Revision of the routing rules in use."}),
	}
	reg.MustRegister(g.Requests, g.Duration, g.Retries, g.BudgetExhausted, g.Shed, g.RuleRevision)
	return g
}

// NewOutbound registers the series of a sidecar's outbound calls (role
// "outbound") on reg, each with the label caller: the calling service.
// The callee is the label service.
func NewOutbound(reg prometheus.Registerer, caller string) *Gateway {
	return NewGateway(prometheus.WrapRegistererWith(prometheus.Labels{"caller": caller}, reg), "outbound")
}

// Sidecar is what a sidecar records about the requests its handler serves.
type Sidecar struct {
	Requests *prometheus.CounterVec   // service, version, code
	Duration *prometheus.HistogramVec // service, version, class
	InFlight prometheus.Gauge
	Dropped  prometheus.Counter // past their deadline on arrival
	Rule     prometheus.Gauge
}

// NewSidecar registers the sidecar series on reg.
func NewSidecar(reg prometheus.Registerer) *Sidecar {
	s := &Sidecar{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "griddle_sidecar_requests_total",
			Help: "Requests handled, by service, version and HTTP status (or mesh error code)."},
			[]string{"service", "version", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "griddle_sidecar_request_duration_seconds",
			Help: "Time the handler took, as seen by the sidecar, by status class (2xx, 5xx).", Buckets: latencyBuckets},
			[]string{"service", "version", "class"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "griddle_sidecar_in_flight",
			Help: "Requests being handled now."}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "griddle_sidecar_dropped_total",
			Help: "Requests dropped because their deadline had passed on arrival."}),
		Rule: prometheus.NewGauge(prometheus.GaugeOpts{Name: "griddle_sidecar_rule_revision",
			Help: "Revision of the routing rules in use for outbound calls."}),
	}
	reg.MustRegister(s.Requests, s.Duration, s.InFlight, s.Dropped, s.Rule)
	return s
}

// Code is the code label of an HTTP status; statuses are few, so the
// strings are shared rather than formatted per request.
func Code(status int) string {
	if status >= 100 && status < 600 {
		return codes[status]
	}
	return strconv.Itoa(status)
}

// ServedVersion is the version label of a request sent to any version:
// the version that answered (the sidecar's X-Griddle-Version), "" when
// none did.
func ServedVersion(reply *wire.Reply) string {
	for _, h := range reply.GetHeaders() {
		if h.GetName() == wire.HeaderVersion && len(h.GetValues()) > 0 {
			return h.GetValues()[0]
		}
	}
	return ""
}

// Class is the class label of an HTTP status: "1xx" to "5xx", "other"
// outside 100-599.
func Class(status int) string {
	if status >= 100 && status < 600 {
		return classes[status/100]
	}
	return "other"
}

// Classes are the class labels by status/100, for binding once.
var classes = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

var codes = func() (c [600]string) {
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return c
}()

// StoreCounters are what a sidecar reports of its service's store and
// event log, read when scraped.
type StoreCounters struct {
	Commits, Retries, Stale, LogRetries func() uint64 // the store server's batches
	PublishRetries                      func() uint64 // the publisher's own transactions
}

// RegisterStore registers the store and event log counters of service on
// reg.
func RegisterStore(reg prometheus.Registerer, c StoreCounters) {
	counter := func(name, help string, fn func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(fn()) })
	}
	reg.MustRegister(
		counter("griddle_store_commits_total", "Transactions the handler committed in one round trip (or that were refused) and this process ran; a griddle store process runs and counts those of its sidecars.", c.Commits),
		counter("griddle_store_conflict_retries_total", "Times the store ran a committed transaction again after a conflict.", c.Retries),
		counter("griddle_store_stale_total", "Transactions refused because what they read had changed; the handler ran them again.", c.Stale),
		counter("griddle_events_log_conflicts_total", "Conflict retries and refusals of transactions that had read the event log: conflicts the log caused.", c.LogRetries),
		counter("griddle_events_publish_retries_total", "Conflict retries of the publisher's own append transactions.", c.PublishRetries),
	)
}
