package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrPathClaimed means an exposure's path prefix overlaps one that
// another service has already claimed: the claim is refused, the earlier
// one stays.
var ErrPathClaimed = errors.New("discovery: path already claimed")

// claimAttempts bounds the retries of a claim that races other claims.
const claimAttempts = 8

// PutExposure stores e under ExposureKey(prefix, e.Service) without a
// lease, replacing any previous exposure of that service stored so, unless
// another service's exposure claims a path prefix that overlaps one of e's
// (one is a prefix of the other): then it returns ErrPathClaimed. Sidecars
// claim their exposures with Registration.ClaimExposure instead, under
// their lease.
func PutExposure(ctx context.Context, cli *clientv3.Client, prefix string, e Exposure) error {
	if err := e.Validate(); err != nil {
		return err
	}
	return claimExposure(ctx, cli, prefix, ExposureKey(prefix, e.Service), e, 0)
}

// ClaimExposure stores e, owned by the registered instance, under
// ExposureKey(prefix, e.Service)/<instance id> and the registration's
// lease: it goes when the instance does, and is claimed again after a lost
// lease. The claim is refused with ErrPathClaimed when another service's
// exposure (of any owner) claims an overlapping path prefix; instances of
// the same service share their paths. The check and the put are one etcd
// transaction, so two services racing for a path cannot both win.
func (r *Registration) ClaimExposure(ctx context.Context, prefix string, e Exposure) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrDiscoveryClosed
	}
	in, ok := r.entry.(Instance)
	if !ok {
		return fmt.Errorf("%w: only an instance's registration claims exposures", ErrDiscoveryInvalid)
	}
	if e.Service != in.Service {
		return fmt.Errorf("%w: exposure of %q claimed by an instance of %q", ErrDiscoveryInvalid, e.Service, in.Service)
	}
	e.Owner = in.ID
	if err := e.Validate(); err != nil {
		return err
	}
	key := ExposureKey(prefix, e.Service) + "/" + in.ID
	if err := claimExposure(ctx, r.cli, prefix, key, e, r.lease); err != nil {
		return err
	}
	r.claim = &exposureClaim{prefix: prefix, key: key, e: e}
	return nil
}

// exposureClaim is what a Registration claims again under a new lease.
type exposureClaim struct {
	prefix, key string
	e           Exposure
}

func claimExposure(ctx context.Context, cli *clientv3.Client, prefix, key string, e Exposure, lease clientv3.LeaseID) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("discovery: encode exposure: %w", err)
	}
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	all := ExposuresPrefix(prefix)
	for range claimAttempts {
		resp, err := cli.Get(ctx, all, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("discovery: claim %s: %w", key, err)
		}
		for _, kv := range resp.Kvs {
			var o Exposure
			if json.Unmarshal(kv.Value, &o) != nil || o.Service == e.Service {
				continue
			}
			for _, p := range e.PathPrefixes {
				for _, q := range o.PathPrefixes {
					if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
						return fmt.Errorf("%w: exposure of %s: path prefix %q overlaps %q of service %s", ErrPathClaimed, e.Service, p, q, o.Service)
					}
				}
			}
		}
		// Nothing under the exposures changed since the read: no claim
		// slipped in between.
		txn, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(all).WithPrefix(), "<", resp.Header.Revision+1)).
			Then(clientv3.OpPut(key, string(v), opts...)).
			Commit()
		if err != nil {
			return fmt.Errorf("discovery: claim %s: %w", key, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("discovery: claim %s: other claims kept changing the exposures", key)
}
