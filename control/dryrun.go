package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/canary"
	"github.com/griddle-mesh/griddle/control/dryrun"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/routing"
	reqsample "github.com/griddle-mesh/griddle/internal/sample"
)

// dryRunFetchTimeout bounds reading one edge's sample.
const dryRunFetchTimeout = 5 * time.Second

// dryRun replays the proposed document against the edges' samples.
// Nothing is written.
func (s *Server) dryRun(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	doc, _, err := document(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	next, err := compileOne(doc)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var cur *routing.Service
	e, err := s.rules.Get(ctx, doc.Service)
	switch {
	case errors.Is(err, rulestore.ErrNotFound):
	case err != nil:
		s.fail(w, r, err)
		return
	default:
		if cur, err = compileOne(e.Document); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	reqs, edges, failed, err := s.samples(ctx, doc.Service)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rep := dryrun.Compare(doc.Service, cur, next, reqs)
	writeJSON(w, http.StatusOK, api.DryRun{Report: rep, Revision: e.Revision, Edges: edges, Failed: failed, Text: rep.Text()})
}

func compileOne(doc *routing.Document) (*routing.Service, error) {
	t, err := routing.Compile([]routing.Document{*doc}, 0)
	if err != nil {
		return nil, err
	}
	return t.Service(doc.Service), nil
}

// samples reads the sampled requests of service from every registered edge.
func (s *Server) samples(ctx context.Context, service string) (reqs []*reqsample.Request, edges, failed int, err error) {
	targets, err := s.canaries.Targets(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, t := range targets {
		if t.Kind != canary.KindEdge {
			continue
		}
		edges++
		if t.Admin == "" {
			failed++
			continue
		}
		wg.Go(func() {
			got, err := fetchSample(ctx, t.Admin, service)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				s.log.Debug("control: reading an edge's sample failed", "edge", t.ID, "err", err)
				return
			}
			reqs = append(reqs, got...)
		})
	}
	wg.Wait()
	return reqs, edges, failed, nil
}

func fetchSample(ctx context.Context, admin, service string) ([]*reqsample.Request, error) {
	ctx, cancel := context.WithTimeout(ctx, dryRunFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/sample?service="+url.QueryEscape(service), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /sample: %s", resp.Status)
	}
	var d reqsample.Dump
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<20)).Decode(&d); err != nil {
		return nil, fmt.Errorf("GET /sample: %w", err)
	}
	return d.Requests, nil
}
