// Package fdbstore is the FoundationDB backend of the store, for
// production clusters: the official Go bindings over libfdb_c (cgo).
//
// It is compiled only with the build tag foundationdb, so that everything
// else builds without the FoundationDB client installed:
//
//	go build -tags foundationdb ./...
//
// That needs the FoundationDB client package (libfdb_c and its headers,
// e.g. foundationdb-clients_7.3.x_amd64.deb, which installs
// /usr/include/foundationdb/fdb_c.h and /usr/lib/libfdb_c.so) and cgo.
// Without the tag this package holds only this documentation.
//
// # Key spaces
//
// Each key space is the subspace ("griddle", name) of the tuple layer (the
// first element is Config.Root), and a key k of the space is the subspace's
// prefix followed by k's bytes. Tuple-encoded strings end with a 0x00 that
// cannot occur in a valid space name, so no space's prefix is a prefix of
// another's: whatever the keys and range ends, a space reaches only its own
// keys.
//
// # Running the conformance suite against a cluster
//
// The tests run the suite in internal/store/storetest against the cluster
// named by GRIDDLE_FDB_CLUSTER_FILE, each subtest under a root subspace of
// its own that it clears afterwards; without the variable they skip:
//
//	GRIDDLE_FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster \
//		go test -tags foundationdb -race ./internal/store/fdbstore/
//
// A throw-away local cluster: install foundationdb-server (or run the
// foundationdb/foundationdb:7.3.x container and `fdbcli --exec "configure
// new single memory"`), then point the variable at its fdb.cluster. The
// same variable runs internal/launch's test of --store fdb:CLUSTER_FILE.
//
// # What has been checked without a cluster
//
// Where libfdb_c cannot be installed, the tagged build cannot link, but it
// can be type-checked against the FoundationDB 7.3 C headers that match the
// pinned bindings (CI does this for the whole module):
//
//	CGO_ENABLED=1 CGO_CFLAGS="-I$PWD/../shared/fdb/include" go vet -tags foundationdb ./...
//
// The conformance suite itself has not yet run against a real cluster.
package fdbstore
