package control

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/griddle-mesh/griddle/control/canary"
)

// Timing of the live figures.
const (
	// DefaultSampleEvery is how often the page's figures are read from the
	// sidecars and edges.
	DefaultSampleEvery = 2 * time.Second
	// liveWindow is the span the page's rates and percentiles cover.
	liveWindow = 10 * time.Second
	// liveKeep is how many samples are kept (enough for liveWindow).
	liveKeep = 32
	// sampleConcurrency bounds the scrapes in flight.
	sampleConcurrency = 8
)

// Live is one version's figures over the recent window, as one kind of
// observer (edges, or the version's own sidecars) saw them.
type Live struct {
	Requests float64       `json:"requests"`
	Rate     float64       `json:"rate"`    // requests per second
	Success  float64       `json:"success"` // share of non-5xx answers; 1 without requests
	P50      time.Duration `json:"p50"`
	P99      time.Duration `json:"p99"`
}

// LiveVersion is one version of a service: what the edges saw and what its
// sidecars saw.
type LiveVersion struct {
	Edge    Live `json:"edge"`
	Sidecar Live `json:"sidecar"`
}

// LiveFigures are the recent figures of every service and version.
type LiveFigures struct {
	// Window is the span the figures cover (0: fewer than two samples yet).
	Window   time.Duration                     `json:"window"`
	At       time.Time                         `json:"at"`
	Services map[string]map[string]LiveVersion `json:"services"`
	// Sources is how many sidecars and edges were read; Failed how many
	// could not be (or have no admin address).
	Sources int `json:"sources"`
	Failed  int `json:"failed"`
}

// svcVer names one version of one service.
type svcVer struct{ service, version string }

// sample is one reading of every source: source → (service, version) → counters.
type sample struct {
	at      time.Time
	sources map[string]map[svcVer]canary.Counters
	failed  int
}

// sampler reads the sidecars' and edges' metrics every period and keeps
// the latest samples. Run owns its loop; Figures may be called from any
// goroutine.
type sampler struct {
	targets func(context.Context) ([]canary.Target, error)
	scrape  canary.ScrapeFunc
	every   time.Duration
	log     *slog.Logger
	count   func(ok bool)

	mu      sync.Mutex
	samples []sample
}

// run samples until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *sampler) once(ctx context.Context) {
	targets, err := s.targets(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("control: listing sidecars and edges for the page failed", "err", err)
		}
		return
	}
	smp := sample{at: time.Now(), sources: map[string]map[svcVer]canary.Counters{}}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, sampleConcurrency)
	)
	for _, tg := range targets {
		if tg.Admin == "" {
			smp.failed++
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, s.every)
			fams, err := s.scrape(sctx, tg)
			cancel()
			s.count(err == nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				smp.failed++
				return
			}
			if tg.Kind == canary.KindEdge {
				smp.sources["edge/"+tg.ID] = byVersion(fams, canary.EdgeRequestsMetric, canary.EdgeDurationMetric)
				return
			}
			smp.sources["sidecar/"+tg.ID] = byVersion(fams, canary.RequestsMetric, canary.DurationMetric)
		})
	}
	wg.Wait()
	s.mu.Lock()
	s.samples = append(s.samples, smp)
	if len(s.samples) > liveKeep {
		s.samples = slices.Delete(s.samples, 0, len(s.samples)-liveKeep)
	}
	s.mu.Unlock()
}

// Figures computes the figures between the newest sample and the one
// liveWindow before it (or the oldest kept).
func (s *sampler) Figures() LiveFigures {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := LiveFigures{Services: map[string]map[string]LiveVersion{}}
	if len(s.samples) == 0 {
		return out
	}
	newest := s.samples[len(s.samples)-1]
	out.At, out.Sources, out.Failed = newest.at, len(newest.sources)+newest.failed, newest.failed
	if len(s.samples) < 2 {
		return out
	}
	old := s.samples[0]
	for _, smp := range s.samples {
		if newest.at.Sub(smp.at) >= liveWindow {
			old = smp
		}
	}
	out.Window = newest.at.Sub(old.at)
	type sums struct{ edge, sidecar canary.Counters }
	acc := map[svcVer]*sums{}
	for src, now := range newest.sources {
		before := old.sources[src] // a new source counts from zero
		for sv, c := range now {
			d := c.Sub(before[sv])
			if acc[sv] == nil {
				acc[sv] = &sums{}
			}
			if strings.HasPrefix(src, "edge/") {
				acc[sv].edge.Add(d)
			} else {
				acc[sv].sidecar.Add(d)
			}
		}
	}
	secs := out.Window.Seconds()
	for sv, a := range acc {
		if out.Services[sv.service] == nil {
			out.Services[sv.service] = map[string]LiveVersion{}
		}
		out.Services[sv.service][sv.version] = LiveVersion{Edge: liveOf(a.edge, secs), Sidecar: liveOf(a.sidecar, secs)}
	}
	return out
}

func liveOf(c canary.Counters, secs float64) Live {
	l := Live{Requests: c.Total, Success: 1}
	if secs > 0 {
		l.Rate = c.Total / secs
	}
	if c.Total > 0 {
		l.Success = 1 - c.Errors/c.Total
	}
	l.P50 = time.Duration(c.Quantile(0.50) * float64(time.Second))
	l.P99 = time.Duration(c.Quantile(0.99) * float64(time.Second))
	return l
}

// byVersion sums a requests counter and a duration histogram by their
// service and version labels.
func byVersion(f canary.Families, requests, duration string) map[svcVer]canary.Counters {
	out := map[svcVer]canary.Counters{}
	labels := func(m *dto.Metric) (sv svcVer, code string) {
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "service":
				sv.service = l.GetValue()
			case "version":
				sv.version = l.GetValue()
			case "code":
				code = l.GetValue()
			}
		}
		return sv, code
	}
	if fam := f[requests]; fam != nil {
		for _, m := range fam.GetMetric() {
			sv, code := labels(m)
			if sv.service == "" {
				continue
			}
			c := out[sv]
			v := m.GetCounter().GetValue()
			c.Total += v
			if strings.HasPrefix(code, "5") {
				c.Errors += v
			}
			out[sv] = c
		}
	}
	if fam := f[duration]; fam != nil {
		for _, m := range fam.GetMetric() {
			sv, _ := labels(m)
			h := m.GetHistogram()
			if sv.service == "" || h == nil {
				continue
			}
			var bs []canary.Bucket
			inf := false
			for _, b := range h.GetBucket() {
				bs = append(bs, canary.Bucket{UpperBound: b.GetUpperBound(), Count: float64(b.GetCumulativeCount())})
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
			}
			if !inf {
				bs = append(bs, canary.Bucket{UpperBound: math.Inf(1), Count: float64(h.GetSampleCount())})
			}
			c := out[sv]
			c.Add(canary.Counters{Buckets: bs})
			out[sv] = c
		}
	}
	return out
}
