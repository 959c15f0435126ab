package discovery

import "time"

// Edge is one running edge, as registered in etcd under EdgeKey (under a
// lease, like an Instance). The control plane reads it to show which rule
// revision each edge runs.
type Edge struct {
	ID string `json:"id"`
	// Address is where the edge serves end users (host:port).
	Address string `json:"address"`
	// Admin is the host:port of the edge's admin server ("" if none).
	Admin   string    `json:"admin,omitempty"`
	Started time.Time `json:"started"`
	// RuleRevision is the highest revision of the routing rules the edge
	// has loaded (0: none yet).
	RuleRevision int64 `json:"ruleRevision,omitempty"`
}

// EdgesPrefix is where edges register.
func EdgesPrefix(prefix string) string { return prefix + "edges/" }

// EdgeKey is the key of one edge: <prefix>edges/<id>.
func EdgeKey(prefix, id string) string { return EdgesPrefix(prefix) + id }
