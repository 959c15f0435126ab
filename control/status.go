package control

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/griddle-mesh/griddle/control/api"
	"github.com/griddle-mesh/griddle/control/rulestore"
	"github.com/griddle-mesh/griddle/internal/discovery"
	"github.com/griddle-mesh/griddle/internal/routing"
)

// Status reads the state of the mesh from etcd: services with their rules
// revision, versions and instances, the edges, and the leader. Instances,
// edges and rules are read in one transaction, so "behind" compares
// numbers of the same moment.
func (s *Server) Status(ctx context.Context) (api.Services, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(discovery.InstancesPrefix(s.prefix), clientv3.WithPrefix()),
		clientv3.OpGet(discovery.EdgesPrefix(s.prefix), clientv3.WithPrefix()),
		clientv3.OpGet(rulestore.RulesPrefix(s.prefix), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return api.Services{}, fmt.Errorf("control: status: %w", err)
	}
	out := api.Services{Revision: resp.Header.Revision}
	svcs := map[string]*api.Service{}
	get := func(name string) *api.Service {
		if svcs[name] == nil {
			svcs[name] = &api.Service{Name: name}
		}
		return svcs[name]
	}
	var maxRule int64
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		name, ok := rulestore.ServiceOfKey(s.prefix, string(kv.Key))
		if !ok {
			continue
		}
		sv := get(name)
		sv.RuleRevision = kv.ModRevision
		maxRule = max(maxRule, kv.ModRevision)
		var doc routing.Document
		if json.Unmarshal(kv.Value, &doc) == nil && len(doc.Versions) > 0 {
			sv.Weights = doc.Versions[len(doc.Versions)-1].To
		}
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var in discovery.Instance
		if json.Unmarshal(kv.Value, &in) != nil || in.Service == "" {
			continue
		}
		sv := get(in.Service)
		i := slices.IndexFunc(sv.Versions, func(v api.Version) bool { return v.Name == in.Version })
		if i < 0 {
			sv.Versions = append(sv.Versions, api.Version{Name: in.Version})
			i = len(sv.Versions) - 1
		}
		sv.Versions[i].Instances = append(sv.Versions[i].Instances, api.Instance{Instance: in})
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var e discovery.Edge
		if json.Unmarshal(kv.Value, &e) != nil {
			continue
		}
		// An edge's revision is that of its view of all rules, so it is
		// behind when it is older than the newest rules of any service.
		out.Edges = append(out.Edges, api.Edge{Edge: e, Behind: e.RuleRevision < maxRule})
	}
	if cs, err := s.canaries.List(ctx); err == nil {
		for i := range cs {
			get(cs[i].Service).Canary = &cs[i]
		}
	}
	for _, sv := range svcs {
		slices.SortFunc(sv.Versions, func(a, b api.Version) int { return cmp.Compare(a.Name, b.Name) })
		for vi := range sv.Versions {
			for ii := range sv.Versions[vi].Instances {
				in := &sv.Versions[vi].Instances[ii]
				in.Behind = in.RuleRevision < sv.RuleRevision
			}
		}
		out.Services = append(out.Services, *sv)
	}
	slices.SortFunc(out.Services, func(a, b api.Service) int { return cmp.Compare(a.Name, b.Name) })
	out.Leader, _ = s.elector.Leader(ctx)
	return out, nil
}

func (s *Server) services(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := reqCtx(r)
	defer cancel()
	st, err := s.Status(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}
