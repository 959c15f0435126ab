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

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// The sidecar metrics a canary is judged on.
const (
	// RequestsMetric is a counter with labels service, version and code
	// (an HTTP status such as "503" or a class such as "5xx").
	RequestsMetric = "griddle_sidecar_requests_total"
	// DurationMetric is a histogram (seconds) with labels service and version.
	DurationMetric = "griddle_sidecar_request_duration_seconds"
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

// ScrapeFunc reads the counters of inst's service and version from inst's
// sidecar. It must honour ctx.
type ScrapeFunc func(ctx context.Context, inst discovery.Instance) (Counters, error)

// HTTPScraper returns a ScrapeFunc that reads Prometheus text from
// http://<inst.Admin>/metrics with client (nil: a client with a 5s timeout).
func HTTPScraper(client *http.Client) ScrapeFunc {
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	return func(ctx context.Context, inst discovery.Instance) (Counters, error) {
		if inst.Admin == "" {
			return Counters{}, fmt.Errorf("canary: instance %s has no admin address", inst.ID)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+inst.Admin+"/metrics", nil)
		if err != nil {
			return Counters{}, fmt.Errorf("canary: scrape %s: %w", inst.ID, err)
		}
		req.Header.Set("Accept", "text/plain;version=0.0.4")
		resp, err := client.Do(req)
		if err != nil {
			return Counters{}, fmt.Errorf("canary: scrape %s: %w", inst.ID, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, resp.Body)
			return Counters{}, fmt.Errorf("canary: scrape %s: %s", inst.ID, resp.Status)
		}
		return ParseMetrics(resp.Body, inst.Service, inst.Version)
	}
}

// ParseMetrics reads Prometheus text and sums the series of RequestsMetric
// and DurationMetric labelled with service and version.
func ParseMetrics(r io.Reader, service, version string) (Counters, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Counters{}, fmt.Errorf("canary: parse metrics: %w", err)
	}
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
	if f := fams[RequestsMetric]; f != nil {
		for _, m := range f.GetMetric() {
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
	if f := fams[DurationMetric]; f != nil {
		sums := map[float64]float64{}
		for _, m := range f.GetMetric() {
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
		slices.SortFunc(c.Buckets, func(a, b Bucket) int {
			switch {
			case a.UpperBound < b.UpperBound:
				return -1
			case a.UpperBound > b.UpperBound:
				return 1
			}
			return 0
		})
	}
	return c, nil
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
	slices.SortFunc(c.Buckets, func(a, b Bucket) int {
		if a.UpperBound < b.UpperBound {
			return -1
		}
		if a.UpperBound > b.UpperBound {
			return 1
		}
		return 0
	})
}

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

// metricsOf summarizes the counters of one step.
func metricsOf(d Counters, instances, scrapeErrors int) Metrics {
	m := Metrics{Requests: d.Total, Errors: d.Errors, Instances: instances, ScrapeErrors: scrapeErrors}
	if d.Total > 0 {
		m.ErrorRate = d.Errors / d.Total
	}
	m.P99 = routing.Duration(time.Duration(d.Quantile(0.99) * float64(time.Second)))
	return m
}
