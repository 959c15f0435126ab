#!/usr/bin/env bash
# fdb-stub-check.sh: where the FoundationDB client (libfdb_c) cannot be
# installed, build griddle with -tags foundationdb against an empty
# stand-in library (unresolved symbols left for run time) and check that
#   1. `griddle sidecar --help` lists fdb:, and
#   2. `--store fdb:CLUSTER_FILE` goes through launch.openFDB and
#      fdbstore.Open into the client library: the stand-in has no
#      fdb_select_api_version_impl, so the process dies right there, and its
#      stack trace shows the path.
# A real libfdb_c would then open the cluster; that part needs a cluster.
# Needs gcc and the FoundationDB headers (../shared/fdb/include).
set -euo pipefail
cd "$(dirname "$0")/.."
INC=${FDB_INCLUDE:-$PWD/../shared/fdb/include}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -shared -fPIC -o "$work/libfdb_c.so" -x c /dev/null
CGO_ENABLED=1 CGO_CFLAGS="-I$INC" CGO_LDFLAGS="-L$work -Wl,--unresolved-symbols=ignore-all" \
	go build -tags foundationdb -o "$work/griddle" ./cmd/griddle
export LD_LIBRARY_PATH="$work"

"$work/griddle" sidecar --help | grep -q 'fdb:CLUSTER_FILE' ||
	{ echo "fdb-stub-check: griddle sidecar --help (tagged build) does not list fdb:"; exit 1; }
echo "fdb-stub-check: the tagged build's griddle sidecar --help lists fdb:CLUSTER_FILE"

echo "docker:docker@127.0.0.1:4500" > "$work/fdb.cluster"
# etcd is unreachable on purpose: the sidecar waits for it (10 s), then opens its store.
out=$(timeout 60 "$work/griddle" sidecar --service check --version v1 --plugin /bin/true \
	--store "fdb:$work/fdb.cluster" --etcd 127.0.0.1:1 --log-level error 2>&1 || true)
for frame in 'launch.openFDB' 'fdbstore.Open' 'fdb.APIVersion' '_Cfunc_fdb_select_api_version_impl'; do
	grep -q "$frame" <<<"$out" ||
		{ echo "fdb-stub-check: --store fdb: did not reach $frame; output:"; tail -20 <<<"$out"; exit 1; }
done
echo "fdb-stub-check: --store fdb: reaches libfdb_c through launch.openFDB -> fdbstore.Open -> fdb.APIVersion"
