package plugins

import (
	"context"
	"encoding/json"
	"runtime/metrics"

	"github.com/griddle-mesh/griddle/internal/pluginproto"
)

// statSamples are the runtime metrics behind pluginproto.Stats, in its
// fields' order.
var statSamples = [...]string{"/gc/heap/allocs:objects", "/memory/classes/heap/objects:bytes", "/sched/goroutines:goroutines"}

// unary answers the sidecar's unary calls: only pluginproto.OpStats.
func unary(_ context.Context, op []byte) []byte {
	if len(op) != 1 || op[0] != pluginproto.OpStats {
		return nil
	}
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
