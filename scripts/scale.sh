#!/usr/bin/env bash
# scale.sh: griddle bench on a big machine (16 cores or more) that has no Go
# and no network, aiming at 150,000 uncached profile reads/s at p99 <= 25 ms
# through the mesh, next to the direct server and nginx -> direct in the same
# run. Finishes in under 5 minutes; everything it writes goes to $OUT.
#
# Preparing the folder (on a Debian 12 machine with Go and network, same
# architecture as the big one):
#
#   B=griddle-scale; mkdir -p $B/bin $B/debs
#   CGO_ENABLED=0 go build -o $B/bin/griddle ./cmd/griddle
#   CGO_ENABLED=0 go build -o $B/bin/hello ./services/hello
#   CGO_ENABLED=0 go build -o $B/bin/profiles ./services/profiles
#   (cd $B/debs && apt-get download wrk nginx nginx-common libluajit-5.1-2 \
#       libssl3 libpcre2-8-0 zlib1g libcrypt1)
#   for d in $B/debs/*.deb; do dpkg -x "$d" $B/root; done
#   cp scripts/scale.sh $B/ && tar czf griddle-scale.tgz $B
#
# On the big machine: tar xzf griddle-scale.tgz && OUT=/somewhere griddle-scale/scale.sh
#
# The CPUs are split in two: the targets run on TARGET_CPUS (taskset, applied
# by griddle bench to every target process), the load generators on LOAD_CPUS.
# Tunables (environment): TARGET_CPUS, LOAD_CPUS, RATES, DURATION,
# INSTANCES, NGINX_WORKERS, SCENARIO, TARGETS, CPUPROFILES (set: save CPU
# profiles of the components under $OUT/pprof; they cost the targets a
# little CPU).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:?set OUT to the directory for the results}
BIN=${BIN:-$HERE/bin}
ROOT=${ROOT:-$HERE/root}
mkdir -p "$OUT"

NPROC=$(nproc)
HALF=$((NPROC / 2))
TARGET_CPUS=${TARGET_CPUS:-0-$((HALF - 1))}
LOAD_CPUS=${LOAD_CPUS:-$HALF-$((NPROC - 1))}
NLOAD=$((NPROC - HALF))
SCENARIO=${SCENARIO:-profile}
TARGETS=${TARGETS:-direct,nginx,mesh,deployed}
RATES=${RATES:-50000,100000,150000}
DURATION=${DURATION:-8s}
NGINX_WORKERS=${NGINX_WORKERS:-$((HALF / 2 > 0 ? HALF / 2 : 1))}
INSTANCES=${INSTANCES:-$((HALF / 2 > 0 ? HALF / 2 : 1))}

export PATH="$BIN:$ROOT/usr/sbin:$ROOT/usr/bin:$PATH"
export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/aarch64-linux-gnu:$ROOT/lib/aarch64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"


{
	echo "nproc $NPROC; targets on $TARGET_CPUS, load generators on $LOAD_CPUS"
	echo "one edge (a Go process uses every core it is given), sidecars per service $INSTANCES, nginx workers $NGINX_WORKERS"
	grep -m1 'model name' /proc/cpuinfo || true
	uname -r
} | tee "$OUT/machine.txt"

# 1. griddle bench, open-loop (about 3 minutes): the hops' floors (on the
#    load generators' CPUs, before any target starts), then every target at
#    every rate, interleaved, with CPU per request by component. The Go load
#    generator costs far more CPU per request than a C one; runs it could
#    not drive at the full rate are flagged B.
profile_flags=()
[ -n "${CPUPROFILES:-}" ] && profile_flags=(--cpuprofile-dir "$OUT/pprof")
timeout 260 taskset -c "$LOAD_CPUS" griddle bench run --log-level warn \
	--scenario "$SCENARIO" --targets "$TARGETS" --rates "$RATES" \
	--duration "$DURATION" --warmup 2s --repeat 1 --noisy-cpu 1 \
	--target-cpus "$TARGET_CPUS" --nginx-workers "$NGINX_WORKERS" \
	--mesh-instances "$INSTANCES" --floors --floor-in-flight 1,16,64 --floor-duration 1s \
	"${profile_flags[@]}" \
	--handlers "$BIN" --nginx "$(command -v nginx || echo /nonexistent)" \
	--max-in-flight 4096 --out "$OUT" | tee "$OUT/table.txt" || echo "scale.sh: griddle bench failed ($?)" | tee -a "$OUT/NOTE"

# 2. wrk, closed-loop (C, cheap per request; about 1 minute): the highest
#    throughput each target gives, with wrk's latency distribution. Closed
#    loop hides queueing (coordinated omission): read it as capacity, not
#    as p99 at a fixed rate.
if command -v wrk >/dev/null; then
	W=$(mktemp -d)
	trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
	cat >"$W/profile.lua" <<'LUA'
request = function() return wrk.format("GET", "/profiles/" .. math.random(1, 1000)) end
LUA
	path=/hello/greet?name=wrk script=()
	[ "$SCENARIO" = profile ] && path=/profiles/1 script=(-s "$W/profile.lua")
	svc=hello
	[ "$SCENARIO" = profile ] && svc=profiles
	# ready: the port answers (direct) and griddle up said the mesh runs.
	wait_up() {
		for _ in $(seq 300); do
			if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null &&
				{ [ "$2" != mesh ] || grep -q 'the mesh is running' "$W/mesh.log"; }; then
				return 0
			fi
			sleep 0.1
		done
		return 1
	}

	GRIDDLE_STANDALONE=127.0.0.1:18001 taskset -c "$TARGET_CPUS" "$BIN/$svc" 2>"$W/direct.log" &
	mkdir -p "$W/mesh/bin" && cp "$BIN/hello" "$BIN/profiles" "$W/mesh/bin/"
	up_flags=(--services "$svc" --instances "$INSTANCES")
	(cd "$W/mesh" && exec taskset -c "$TARGET_CPUS" griddle up --log-level warn --dir "$W/mesh" \
		--listen 127.0.0.1:18002 --admin - --control - --etcd-listen 127.0.0.1:0 "${up_flags[@]}" >"$W/mesh.log" 2>&1) &
	for t in direct:127.0.0.1:18001 mesh:127.0.0.1:18002; do
		name=${t%%:*} addr=${t#*:}
		if wait_up "$addr" "$name"; then
			echo "== wrk $name ($SCENARIO)" | tee -a "$OUT/wrk.txt"
			taskset -c "$LOAD_CPUS" wrk -t"$NLOAD" -c512 -d15s --latency "${script[@]}" "http://$addr$path" | tee -a "$OUT/wrk.txt"
		else
			echo "== wrk $name: not ready, skipped" | tee -a "$OUT/wrk.txt"
		fi
	done
	kill $(jobs -p) 2>/dev/null || true
	wait || true
else
	echo "scale.sh: no wrk: the closed-loop check is skipped" | tee -a "$OUT/NOTE"
fi
echo "scale.sh: results in $OUT (results.json, latency.svg, table.txt, wrk.txt)"
