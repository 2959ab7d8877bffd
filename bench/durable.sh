#!/usr/bin/env bash
# Durable ingest throughput under --fsync batch (issue S2): readings/s acknowledged
# by sluiced for 1, 16, 64 and 256 concurrent keep-alive clients (wrk), next to
# the disk's own ceiling measured in the same run in the same filesystem:
# fdatasync/s of 4 KiB appends, and sequential write MB/s.
# usage: bench/durable.sh [BUILD_DIR] [SECONDS] [READINGS_PER_REQUEST...]
# Prints a Markdown table. Loopback only; cleans up after itself.
set -euo pipefail
build=${1:-build}
secs=${2:-10}
shift $(( $# > 2 ? 2 : $# )) || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 10)
src=$(cd "$(dirname "$0")/.." && pwd)
for t in wrk curl python3; do
    command -v $t >/dev/null || { echo "durable.sh: $t is missing (apt-get install $t)" >&2; exit 77; }
done
[ -x "$build/sluiced" ] || { echo "durable.sh: no $build/sluiced; run make first" >&2; exit 77; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sluice-bench.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# --- the disk's ceiling, same filesystem as the data dir
python3 - "$work" <<'PY' > "$work/disk.txt"
import os, sys, time
d = sys.argv[1]
fd = os.open(os.path.join(d, "probe"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
buf = b"x" * 4096
n, t0 = 0, time.monotonic()
while time.monotonic() - t0 < 2.0:
    os.write(fd, buf); os.fdatasync(fd); n += 1
rate = n / (time.monotonic() - t0)
os.close(fd)
fd = os.open(os.path.join(d, "seq"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
blk = b"y" * (1 << 20)
t0 = time.monotonic()
for _ in range(256):
    os.write(fd, blk)
os.fdatasync(fd)
mbs = 256 / (time.monotonic() - t0)
os.close(fd)
os.unlink(os.path.join(d, "probe")); os.unlink(os.path.join(d, "seq"))
print(f"{rate:.0f} {mbs:.0f}")
PY
read -r syncs mbs < "$work/disk.txt"

data="$work/data"
"$build/sluice" --data-dir "$data" org add bench >/dev/null
token=$("$build/sluice" --data-dir "$data" device add --org bench dev-1 2>/dev/null)
"$build/sluiced" --data-dir "$data" --http 127.0.0.1:0 --admin 127.0.0.1:0 --https off --mqtt off \
    --mqtts off --frame off --fsync batch --ports-file "$work/ports.json" >"$work/sluiced.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$work/ports.json" ] && break; sleep 0.05; done
http=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$work/ports.json")
admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$work/ports.json")
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="sluice_$1" '$1==m {print $2}'; }

echo "disk: $syncs fdatasync/s (4 KiB appends), $mbs MB/s sequential; sluiced --threads $(nproc), --fsync batch, ${secs}s per row"
echo
echo "| readings/request | clients | requests/s | durable readings/s | p50 ms | p99 ms | readings per fdatasync | disk ceiling readings/s (syncs/s x batch) | non-2xx |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in "${sizes[@]}"; do
    for c in 1 16 64 256; do
        r0=$(metric readings_total); c0=$(metric commits_total)
        out=$(SLUICE_TOKEN=$token SLUICE_READINGS=$r wrk -t$(( c < 2 ? 1 : 2 )) -c$c -d${secs}s --latency \
              -s "$src/bench/post.lua" "http://127.0.0.1:$http/v1/readings")
        r1=$(metric readings_total); c1=$(metric commits_total)
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1=="50%" {print $2}' <<<"$out")
        p99=$(awk '$1=="99%" {print $2}' <<<"$out")
        bad=$(awk '/Non-2xx/ {print $5}' <<<"$out"); bad=${bad:-0}
        python3 - "$r" "$c" "$rps" "$r0" "$r1" "$c0" "$c1" "$secs" "$syncs" "$p50" "$p99" "$bad" <<'PY'
import sys, re
r, c, rps, r0, r1, c0, c1, secs, syncs, p50, p99, bad = sys.argv[1:]
def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v = float(m.group(1)); u = m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
readings = float(r1) - float(r0); commits = max(float(c1) - float(c0), 1)
per = readings / commits
print(f"| {r} | {c} | {float(rps):,.0f} | {float(rps)*int(r):,.0f} | {ms(p50):.2f} | {ms(p99):.2f} | {per:.1f} | {float(syncs)*per:,.0f} | {bad} |")
PY
    done
done
