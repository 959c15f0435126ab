// Package deploy holds the ways Griddle is installed beyond one machine, and
// the tests that keep them valid:
//
//	docker/       the griddle image (static, distroless, non-root; a
//	              FoundationDB target) and the pattern of a service image
//	systemd/      units for edge, sidecar@SERVICE, control and store, with
//	              their environment files (/etc/griddle/*.env)
//	compose/      the whole mesh on one Docker host: 3 etcd members,
//	              FoundationDB, two edges, the example services, control
//	kubernetes/   a kustomize base: etcd StatefulSet, FoundationDBCluster
//	              (FoundationDB operator), control, edges, one Deployment per
//	              service (handler and sidecar in one pod), disruption budgets
//
// The package has no Go API. Its tests decode every Kubernetes object
// strictly into the API's Go types (an unknown field fails), render the
// kustomize base with the kustomize library, load the compose file with the
// compose specification's own loader, and parse the systemd units (and, where
// systemd-analyze is installed, verify them).
package deploy
