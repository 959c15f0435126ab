package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime/metrics"
	"runtime/pprof"
	"time"

	"github.com/griddle-mesh/griddle/internal/pluginproto"
)

// statSamples are the runtime metrics behind pluginproto.Stats, in its
// fields' order.
var statSamples = [...]string{"/gc/heap/allocs:objects", "/memory/classes/heap/objects:bytes", "/sched/goroutines:goroutines"}

// unary answers the sidecar's unary calls: pluginproto.OpStats and
// OpProfile.
func unary(ctx context.Context, op []byte) []byte {
	switch {
	case len(op) == 1 && op[0] == pluginproto.OpStats:
		return stats()
	case len(op) == 2 && op[0] == pluginproto.OpProfile && op[1] >= 1 && op[1] <= pluginproto.MaxProfileSeconds:
		return profile(ctx, time.Duration(op[1])*time.Second)
	}
	return nil
}

// profile is a CPU profile of this process over d, shorter if ctx ends
// first; empty when another profile is running.
func profile(ctx context.Context, d time.Duration) []byte {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	pprof.StopCPUProfile()
	return buf.Bytes()
}

// stats are the process's pluginproto.Stats as JSON.
func stats() []byte {
	s := make([]metrics.Sample, len(statSamples))
	for i, name := range statSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	var out [len(statSamples)]uint64
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			out[i] = s[i].Value.Uint64()
		}
	}
	b, _ := json.Marshal(pluginproto.Stats{Allocs: out[0], HeapBytes: out[1], Goroutines: out[2]})
	return b
}
