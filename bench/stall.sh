#!/usr/bin/env bash
# bench/stall.sh — how long one worker's connections stall while it opens new
# orgs' logs and rolls segments (issue S3, defect 7: that storage work used to
# run on the event loop; now a helper thread does it).
#
#   bench/stall.sh [BUILD_DIR [BASE_BUILD_DIR]]
#
# sluiced --threads 1 (so every org lands on the one loop), --segment-bytes
# SEGMENT (rolls every few hundred ms under the steady load). A steady open
# loop (sluice-bench http --rate RATE --connections 8) runs for DURATION
# seconds against org "steady"; latency is counted from when each request was
# due, so a stalled loop shows in p99.9 and max. Two runs per build: "steady"
# (rolls only), and "+ N new orgs" where, from second 2, N orgs that already
# exist in the store get their first reading one after another (each opens a
# log: mkdir, create, fsyncs). With BASE_BUILD_DIR the same runs are made with
# that build, alternating, for a before/after table (Markdown on stdout).
# Environment: RATE (2000), DURATION (10), NEW_ORGS (300), SEGMENT (256KiB),
# RUNS (2 per build and scenario). Loopback only; the data dir goes under the
# build dir (a real disk, not a tmpfs under /tmp). Exit 77 without curl/python3.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
base=${2:-}
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
NEW_ORGS=${NEW_ORGS:-300}
SEGMENT=${SEGMENT:-256KiB}
RUNS=${RUNS:-2}
for t in curl python3; do
    command -v $t >/dev/null || { echo "stall.sh: $t is missing (apt-get install $t)" >&2; exit 77; }
done
for b in "$build" ${base:+"$base"}; do
    [ -x "$b/sluiced" ] && [ -x "$b/sluice-bench" ] || {
        echo "stall.sh: no $b/sluiced or $b/sluice-bench; build first" >&2
        exit 1
    }
done

work=$(mktemp -d "$(cd "$build" && pwd)/stall.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# one run: prints "p50 p99 p999 max unsent" (µs) of the steady client
run() {
    local b=$1 orgs=$2 data=$work/data.$RANDOM
    "$b/sluice" --data-dir "$data" org add steady >/dev/null
    local tok
    tok=$("$b/sluice" --data-dir "$data" device add --org steady s-1 2>/dev/null)
    : >"$work/tokens"
    for i in $(seq "$orgs"); do
        "$b/sluice" --data-dir "$data" org add "o$i" >/dev/null
        "$b/sluice" --data-dir "$data" device add --org "o$i" d 2>/dev/null >>"$work/tokens"
    done
    rm -f "$work/ports.json"
    "$b/sluiced" --data-dir "$data" --threads 1 --http 127.0.0.1:0 --admin 127.0.0.1:0 \
        --https off --mqtt off --mqtts off --frame off --segment-bytes "$SEGMENT" \
        --ports-file "$work/ports.json" >"$work/sluiced.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do [ -s "$work/ports.json" ] && break; sleep 0.05; done
    local http
    http=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$work/ports.json")
    "$b/sluice-bench" http --target "127.0.0.1:$http" --token "$tok" --connections 8 \
        --rate "$RATE" --duration "$DURATION" --payload 200 --json >"$work/bench.json" 2>/dev/null &
    local bench=$!
    if [ "$orgs" -gt 0 ]; then
        sleep 2
        while read -r t; do
            curl -s -o /dev/null -H "X-Auth-Token: $t" -H 'Content-Type: application/json' \
                -d '{"first":1}' "http://127.0.0.1:$http/v1/readings"
        done <"$work/tokens"
    fi
    wait "$bench"
    kill -TERM "$pid" && wait "$pid" || true
    pid=
    rm -rf "$data"
    python3 - "$work/bench.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
l = r["latency_us"]
print(l["p50"], l["p99"], l["p999"], l["max"], r.get("unsent", 0))
PY
}

echo "### loop stalls: steady open loop at $RATE req/s (8 connections, ${DURATION}s), --threads 1, --segment-bytes $SEGMENT"
echo
echo "| build | scenario | run | p50 µs | p99 µs | p99.9 µs | max µs | unsent |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$RUNS"); do
    for b in "$build" ${base:+"$base"}; do
        for orgs in 0 "$NEW_ORGS"; do
            label="steady (rolls)"
            [ "$orgs" -gt 0 ] && label="+ $orgs new orgs"
            read -r p50 p99 p999 max unsent < <(run "$b" "$orgs")
            echo "| $b | $label | $r | $p50 | $p99 | $p999 | $max | $unsent |"
        done
    done
done
