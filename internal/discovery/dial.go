package discovery

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// maxReconnectDelay bounds the wait between a client's attempts to reach
// etcd again. gRPC's default grows to two minutes: after a 30 s outage a
// client would find etcd back only up to 20 s late, and a registration
// late by more than its lease is gone from every catalog meanwhile.
const maxReconnectDelay = time.Second

// DialOptions are the gRPC options for every etcd client of a Griddle
// process (clientv3.Config.DialOptions): reconnecting at least once a
// second while etcd is unreachable, so that registrations and catalogs
// resume within about a second of its return.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  100 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   maxReconnectDelay,
		},
		MinConnectTimeout: time.Second,
	})}
}
