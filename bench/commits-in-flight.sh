#!/usr/bin/env bash
# bench/commits-in-flight.sh — durable throughput with K commits in flight per
# log (issue S11), beside nginx-204, for a few closed-loop client populations.
#
#   bench/commits-in-flight.sh [BUILD_DIR]     (default build-rel; nothing is built)
#
# For each CONNS in $CONNS_LIST (default "64 16") and each K in $KS (default
# "1 2 4 8") it runs bench/compare-nginx.sh with
# SLUICED_FLAGS="--commits-in-flight K" (RUNS runs of DURATION each, sluiced
# and nginx alternating, same method as there: servers on CPU 0, wrk on CPU 1,
# `--fsync batch`, every 202 after its batch's fdatasync), keeps each
# invocation's full report under $OUT (default a temp dir, printed), and
# prints one Markdown table: per (connections, K) sluiced's and nginx's
# medians and their ratio. nginx is measured again beside every K, so each
# ratio compares runs of the same minutes.
#
# Environment: RUNS (3), DURATION (5s), CONNS_LIST, KS, OUT, WAIT_QUIET and
# SLUICE_BENCH_DIR (passed to compare-nginx.sh). Exit: as compare-nginx.sh
# (77: a tool missing, `make bench-deps` installs them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build-rel}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
CONNS_LIST=${CONNS_LIST:-64 16}
KS=${KS:-1 2 4 8}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/commits-in-flight.XXXXXX")}
mkdir -p "$OUT"
echo "commits-in-flight: reports in $OUT" >&2

# the two summary rows of a compare-nginx.sh report: requests/s, p50, p99, readings/commit
row() { # file server-prefix
    awk -F'|' -v p="$2" 'index($2, p) == 2 && !done {
        gsub(/ /, "", $3); gsub(/ /, "", $4); gsub(/ /, "", $5); gsub(/ /, "", $9);
        print $3, $4, $5, $9; done = 1 }' "$1"
}

echo "| connections | K | sluiced req/s | p50 ms | p99 ms | readings/commit | nginx-204 req/s | nginx p99 ms | sluiced / nginx |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in $CONNS_LIST; do
    for k in $KS; do
        f=$OUT/c$c-k$k.md
        echo "commits-in-flight: -c$c, K=$k" >&2
        RUNS=$RUNS DURATION=$DURATION CONNS=$c SLUICED_FLAGS="--commits-in-flight $k" \
            "$here/compare-nginx.sh" "$build" >"$f"
        read -r s_rps s_p50 s_p99 s_rpc <<<"$(row "$f" sluiced)"
        read -r n_rps _ n_p99 _ <<<"$(row "$f" nginx)"
        ratio=$(awk -v a="$s_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        echo "| $c | $k | $s_rps | $s_p50 | $s_p99 | $s_rpc | $n_rps | $n_p99 | ${ratio}× |"
    done
done
