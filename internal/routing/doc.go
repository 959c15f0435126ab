// Package routing is the rule language of Griddle and its evaluation: one
// Document per service says which paths the edge exposes for it, its
// timeout and retry policy, and ordered version rules (pins, sticky A/B
// experiments, weighted canaries).
//
// Life of a rule set:
//
//   - Parse reads a document (YAML or JSON) and runs Validate, the one
//     validator the CLI, the control plane and the data plane share. Every
//     error is a *FieldError naming the field as the user wrote it
//     ("versions[2].to: weights sum to 90, want 100") and wraps ErrInvalid.
//   - Compile turns the documents of one rule revision into a Table, once.
//     A Table is immutable: readers use it without locks, and a new
//     revision is a new Table swapped in whole.
//   - Per request, Table.Route finds the service for an HTTP path at the
//     edge, and Service.Decide chooses the version, reading and extending
//     the routing context (wire.Routing) that travels along the call chain
//     so that every hop decides alike.
//   - Budget caps retries at a share of live requests.
//
// The package is pure: no I/O, no goroutines, no package state. Loading
// and watching rules belong to discovery and the control plane.
package routing
