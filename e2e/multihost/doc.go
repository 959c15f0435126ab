// Package multihost tests a mesh spread over several hosts on one machine:
// each host is a network namespace joined to the others by a veth link to a
// bridge, so the test can cut a host's link, add latency and loss to it
// (tc netem), or partition an etcd member, while it sends steady load.
//
// The test needs root (namespaces, links) and iproute2 (ip, tc), and runs
// only with GRIDDLE_MULTIHOST=1 (it takes about two minutes and loads both
// cores, so CI runs it as a step of its own):
//
//	sudo GRIDDLE_MULTIHOST=1 go test -v -run Multihost ./e2e/multihost/
//
// Everything it creates (namespaces named gmh-*, their links, processes) it
// removes itself, also what a killed earlier run left behind. It writes its
// figures to $GRIDDLE_MULTIHOST_OUT (JSON) when that is set. TestLab, which
// checks the namespaces, links and faults themselves in about a second, runs
// in the ordinary suite wherever it is root.
package multihost
