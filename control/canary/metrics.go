package canary

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/griddle-mesh/griddle/internal/routing"
)

// The series a canary is judged on. Requests counters carry the labels
// service, version and code (an HTTP status such as "503", or a class such
// as "5xx"); duration histograms (seconds) carry service and version.
const (
	// RequestsMetric and DurationMetric are a sidecar's own view of the
	// requests its handler served.
	RequestsMetric = "griddle_sidecar_requests_total"
	DurationMetric = "griddle_sidecar_request_duration_seconds"
	// DroppedMetric counts requests a sidecar dropped because their deadline
	// had passed: they count as errors of its version.
	DroppedMetric = "griddle_sidecar_dropped_total"
	// EdgeRequestsMetric and EdgeDurationMetric are the edge's view: they
	// include what never reached a sidecar (502 no instance, 503 shed,
	// 504 deadline).
	EdgeRequestsMetric = "griddle_edge_requests_total"
	EdgeDurationMetric = "griddle_edge_request_duration_seconds"
	// OutboundRequestsMetric and OutboundDurationMetric are a calling
	// sidecar's view of the services it calls.
	OutboundRequestsMetric = "griddle_outbound_requests_total"
	OutboundDurationMetric = "griddle_outbound_request_duration_seconds"
)

// Counters are one instance's cumulative numbers for one service version.
type Counters struct {
	Total  float64 `json:"total"`
	Errors float64 `json:"errors"` // 5xx
	// Buckets are the cumulative latency histogram, sorted by upper bound
	// (the last one is +Inf when the histogram has one).
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Bucket is one cumulative histogram bucket. In JSON the upper bound is a
// string as in Prometheus's "le" label, since JSON has no +Inf.
type Bucket struct {
	UpperBound float64
	Count      float64
}

type bucketJSON struct {
	LE    string  `json:"le"`
	Count float64 `json:"count"`
}

// MarshalJSON writes {"le": "0.25", "count": 3}.
func (b Bucket) MarshalJSON() ([]byte, error) {
	return json.Marshal(bucketJSON{LE: strconv.FormatFloat(b.UpperBound, 'g', -1, 64), Count: b.Count})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (b *Bucket) UnmarshalJSON(data []byte) error {
	var j bucketJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	ub, err := strconv.ParseFloat(j.LE, 64)
	if err != nil {
		return fmt.Errorf("bucket le %q: %w", j.LE, err)
	}
	*b = Bucket{UpperBound: ub, Count: j.Count}
	return nil
}

// Kinds of Target.
const (
	KindSidecar = "sidecar"
	KindEdge    = "edge"
)

// Target is one admin server the controller reads: a sidecar's (Service
// and Version are its own) or an edge's.
type Target struct {
	Kind    string
	ID      string
	Admin   string // host:port serving /metrics
	Service string
	Version string
}

// Families are parsed Prometheus metric families by name.
type Families map[string]*dto.MetricFamily

// ScrapeFunc reads the metrics of t. It must honour ctx.
type ScrapeFunc func(ctx context.Context, t Target) (Families, error)

// HTTPScraper returns a ScrapeFunc that reads Prometheus text from
// http://<t.Admin>/metrics with client (nil: a client with a 5s timeout).
func HTTPScraper(client *http.Client) ScrapeFunc {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return func(ctx context.Context, t Target) (Families, error) {
		if t.Admin == "" {
			return nil, fmt.Errorf("canary: %s %s has no admin address", t.Kind, t.ID)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Admin+"/metrics", nil)
		if err != nil {
			return nil, fmt.Errorf("canary: scrape %s: %w", t.ID, err)
		}
		req.Header.Set("Accept", "text/plain;version=0.0.4")
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("canary: scrape %s: %w", t.ID, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, resp.Body)
			return nil, fmt.Errorf("canary: scrape %s: %s", t.ID, resp.Status)
		}
		return ParseText(resp.Body)
	}
}

// ParseText reads Prometheus text.
func ParseText(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("canary: parse metrics: %w", err)
	}
	return fams, nil
}

// ParseMetrics reads Prometheus text and sums a sidecar's series
// (RequestsMetric and DurationMetric) of service and version.
func ParseMetrics(r io.Reader, service, version string) (Counters, error) {
	f, err := ParseText(r)
	if err != nil {
		return Counters{}, err
	}
	return f.Counters(RequestsMetric, DurationMetric, service, version), nil
}

// Counters sums the series of the requests counter and the duration
// histogram named, labelled with service and version. 5xx codes count as
// errors.
func (f Families) Counters(requests, duration, service, version string) Counters {
	var c Counters
	ours := func(m *dto.Metric) (code string, ok bool) {
		var svc, ver string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "service":
				svc = l.GetValue()
			case "version":
				ver = l.GetValue()
			case "code":
				code = l.GetValue()
			}
		}
		return code, svc == service && ver == version
	}
	if fam := f[requests]; fam != nil {
		for _, m := range fam.GetMetric() {
			code, ok := ours(m)
			if !ok {
				continue
			}
			v := m.GetCounter().GetValue()
			if m.GetCounter() == nil {
				v = m.GetUntyped().GetValue()
			}
			c.Total += v
			if strings.HasPrefix(code, "5") {
				c.Errors += v
			}
		}
	}
	if fam := f[duration]; fam != nil {
		sums := map[float64]float64{}
		for _, m := range fam.GetMetric() {
			if _, ok := ours(m); !ok || m.GetHistogram() == nil {
				continue
			}
			h := m.GetHistogram()
			inf := false
			for _, b := range h.GetBucket() {
				sums[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !inf {
				sums[math.Inf(1)] += float64(h.GetSampleCount())
			}
		}
		for ub, n := range sums {
			c.Buckets = append(c.Buckets, Bucket{UpperBound: ub, Count: n})
		}
		sortBuckets(c.Buckets)
	}
	return c
}

// Value sums the counter or gauge series of name (any labels).
func (f Families) Value(name string) float64 {
	var v float64
	if fam := f[name]; fam != nil {
		for _, m := range fam.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				v += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v += m.GetGauge().GetValue()
			default:
				v += m.GetUntyped().GetValue()
			}
		}
	}
	return v
}

func sortBuckets(b []Bucket) {
	slices.SortFunc(b, func(x, y Bucket) int {
		switch {
		case x.UpperBound < y.UpperBound:
			return -1
		case x.UpperBound > y.UpperBound:
			return 1
		}
		return 0
	})
}

// sub returns c - base, treating a counter that went down (the sidecar
// restarted) as counting from zero.
func (c Counters) sub(base Counters) Counters {
	if c.Total < base.Total || c.Errors < base.Errors {
		base = Counters{}
	}
	d := Counters{Total: c.Total - base.Total, Errors: c.Errors - base.Errors}
	old := map[float64]float64{}
	for _, b := range base.Buckets {
		old[b.UpperBound] = b.Count
	}
	for _, b := range c.Buckets {
		d.Buckets = append(d.Buckets, Bucket{UpperBound: b.UpperBound, Count: max(0, b.Count-old[b.UpperBound])})
	}
	return d
}

func (c *Counters) add(o Counters) {
	c.Total += o.Total
	c.Errors += o.Errors
	for _, b := range o.Buckets {
		i := slices.IndexFunc(c.Buckets, func(x Bucket) bool { return x.UpperBound == b.UpperBound })
		if i < 0 {
			c.Buckets = append(c.Buckets, b)
			continue
		}
		c.Buckets[i].Count += b.Count
	}
	sortBuckets(c.Buckets)
}

// Sub returns c - base, counting from zero where a counter went down (the
// process restarted).
func (c Counters) Sub(base Counters) Counters { return c.sub(base) }

// Add adds o to c.
func (c *Counters) Add(o Counters) { c.add(o) }

// Quantile estimates the q-quantile (0-1) of the latency histogram in
// seconds, interpolating linearly inside a bucket as Prometheus's
// histogram_quantile does; a quantile in the +Inf bucket is the largest
// finite bound. It returns 0 for an empty histogram.
func (c Counters) Quantile(q float64) float64 {
	if len(c.Buckets) == 0 {
		return 0
	}
	total := c.Buckets[len(c.Buckets)-1].Count
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range c.Buckets {
		if b.Count >= rank {
			if math.IsInf(b.UpperBound, 1) {
				return lower
			}
			if b.Count == below {
				return b.UpperBound
			}
			return lower + (b.UpperBound-lower)*(rank-below)/(b.Count-below)
		}
		lower, below = b.UpperBound, b.Count
	}
	return lower
}

// viewOf summarizes the counters of one step as one observer saw them.
func viewOf(d Counters, sources, scrapeErrors int) View {
	v := View{Requests: d.Total, Errors: d.Errors, Sources: sources, ScrapeErrors: scrapeErrors}
	if d.Total > 0 {
		v.ErrorRate = d.Errors / d.Total
	}
	v.P99 = routing.Duration(time.Duration(d.Quantile(0.99) * float64(time.Second)))
	return v
}
