package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/metrics"
	"github.com/griddle-mesh/griddle/internal/pluginproto"
)

// Status is what the sidecar reports about itself on /status.
type Status struct {
	Service         string `json:"service"`
	Version         string `json:"version"`
	ID              string `json:"id"`
	Address         string `json:"address"`
	InFlight        int64  `json:"inFlight"`
	HandlerHealthy  bool   `json:"handlerHealthy"`
	HandlerPID      int    `json:"handlerPid"`
	HandlerRestarts int    `json:"handlerRestarts"`
	// Draining is true once the sidecar has begun to stop: it has left
	// the endpoint set and finishes what is in flight.
	Draining bool `json:"draining"`
	// StoreReachable tells whether the store server answers (see
	// storehttp.Client.Reachable); absent for a store with no link of its
	// own (embedded) or none. While false, the handler's 5xx answers are
	// marked as this instance's failures, so that callers move away.
	StoreReachable *bool `json:"storeReachable,omitempty"`
	// Etcd is discovery's view of etcd; absent when the sidecar has no catalog.
	Etcd *discovery.Status `json:"etcd,omitempty"`
}

// Status reports the sidecar's state; valid once Run has started the handler.
func (s *Sidecar) Status() Status {
	st := Status{Service: s.cfg.Service, Version: s.cfg.Version, ID: s.cfg.ID, Address: s.Address(), InFlight: s.inflight.Load(), Draining: s.draining.Load()}
	if h := s.host.Load(); h != nil {
		st.HandlerHealthy, st.HandlerPID, st.HandlerRestarts = h.Healthy(), h.PID(), h.Restarts()
	}
	if s.storeLink != nil {
		ok := s.storeLink.Reachable()
		st.StoreReachable = &ok
	}
	if s.deps.Catalog != nil {
		es := s.deps.Catalog.Status()
		st.Etcd = &es
	}
	return st
}

func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	if !s.cfg.NoPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("GET /debug/handler/profile", s.handlerProfile)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if h := s.host.Load(); h == nil || !h.Healthy() {
			http.Error(w, "handler unhealthy", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	// /readyz is /healthz that also fails while draining: what an
	// orchestrator's readiness probe should read.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch h := s.host.Load(); {
		case s.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		case h == nil || !h.Healthy():
			http.Error(w, "handler unhealthy", http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ok\n"))
		}
	})
	mux.Handle("GET /metrics", metrics.Handler(s.reg))
	// /debug/handler is the handler process's runtime figures (goroutines,
	// heap), read from it over the hop.
	mux.HandleFunc("GET /debug/handler", func(w http.ResponseWriter, r *http.Request) {
		h := s.host.Load()
		if h == nil {
			http.Error(w, "no handler process", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		st, err := h.Stats(ctx)
		if err != nil {
			http.Error(w, "the handler did not report its figures", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Status())
	})
	return mux
}

// handlerProfile serves /debug/handler/profile?seconds=N (30 by default): a
// CPU profile of the handler process, as /debug/pprof/profile is of this
// one.
func (s *Sidecar) handlerProfile(w http.ResponseWriter, r *http.Request) {
	h := s.host.Load()
	if h == nil {
		http.Error(w, "no handler process", http.StatusServiceUnavailable)
		return
	}
	secs := 30
	if v := r.URL.Query().Get("seconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > pluginproto.MaxProfileSeconds {
			http.Error(w, fmt.Sprintf("seconds: want 1 to %d", pluginproto.MaxProfileSeconds), http.StatusBadRequest)
			return
		}
		secs = n
	}
	b, err := h.Profile(r.Context(), time.Duration(secs)*time.Second)
	if err != nil {
		http.Error(w, "the handler gave no profile", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="handler.pprof"`)
	_, _ = w.Write(b)
}
