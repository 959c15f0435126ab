// Package rulestore keeps the routing rules of each service in etcd, with
// compare-and-swap on revision and a history for diff and rollback.
//
// Layout under a prefix (e.g. discovery.DefaultPrefix):
//
//	<prefix>rules/<service>                        the current routing.Document, JSON
//	<prefix>rules-meta/<service>                   who applied it, when, why, and its authored text (Meta, JSON)
//	<prefix>rules-history/<service>/<%020d rev>    every applied document (Entry, JSON)
//
// Each revision keeps the text its author applied (Meta.Source), so get
// returns it with key order and comments; Unified diffs those texts in the
// form patch(1) applies, and Same tells an apply that changes nothing.
//
// The revision of a service's rules is the etcd mod revision of its rules
// key. The data plane watches RulesPrefix and needs only the key helpers of
// this package; Store is the control plane's side.
package rulestore
