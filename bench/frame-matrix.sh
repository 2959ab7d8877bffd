#!/usr/bin/env bash
# Frame protocol throughput and durable-ack latency (issue S6): sluice-bench frame
# against sluiced --threads 1 on CPU 0, the bench on CPU 1, for 1, 16 and 64
# connections (a device and token each) x --batch 1, 16, 64, 256 (--pipeline
# left at its default: 64, or 4 x --batch when more). MODE udp: the same over
# UDP (sluiced --udp, sluice-bench udp: a socket per device) for --batch 1, 16,
# 100 of 10-byte payloads, so that every datagram fits 1,200 bytes.
# usage: bench/frame-matrix.sh [BUILD_DIR (build-rel)] [SECONDS (5)] [ROUNDS (1)] [MODE (frame|udp)]
# Prints a Markdown table (with ROUNDS > 1: each cell's median round by
# readings/s). Each run gets a sluiced of its own on a copy of a data dir that
# holds only the devices, removed after the run: the start-up pass over the
# logs stays short, and gigabytes of page cache of logs nobody reads again do
# not pile up. Loopback only; cleans up after itself. Exit 77 when a binary or
# taskset is missing, 1 when sluiced dies or a run reports errors.
set -euo pipefail
build=${1:-build-rel}
secs=${2:-5}
rounds=${3:-1}
mode=${4:-frame}
case $mode in
    frame) batches="1 16 64 256"; payload=64; listen=(--frame 127.0.0.1:0) ;;
    udp) batches="1 16 100"; payload=10; listen=(--frame off --udp 127.0.0.1:0) ;;
    *) echo "frame-matrix.sh: MODE is frame or udp, not $mode" >&2; exit 2 ;;
esac
for t in python3 taskset; do
    command -v $t >/dev/null || { echo "frame-matrix.sh: $t is missing" >&2; exit 77; }
done
for b in sluiced sluice sluice-bench; do
    [ -x "$build/$b" ] || { echo "frame-matrix.sh: no $build/$b (meson setup $build --buildtype=release)" >&2; exit 77; }
done

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sluice-frame.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/sluice" --data-dir "$work/devices" org add bench >/dev/null
for i in $(seq 1 64); do
    "$build/sluice" --data-dir "$work/devices" device add --org bench "dev-$i" 2>/dev/null
done > "$work/tokens.txt"

start() {
    rm -rf "$work/data" "$work/ports.json"
    cp -a "$work/devices" "$work/data"
    taskset -c 0 "$build/sluiced" --data-dir "$work/data" --threads 1 --http 127.0.0.1:0 \
        "${listen[@]}" --mqtt off --https off --mqtts off --admin 127.0.0.1:0 \
        --ports-file "$work/ports.json" > "$work/sluiced.log" 2>&1 < /dev/null &
    pid=$!
    for _ in $(seq 1 100); do grep -q '^ready' "$work/sluiced.log" && break; sleep 0.1; done
    grep -q '^ready' "$work/sluiced.log" || { echo "frame-matrix.sh: sluiced not ready:" >&2; cat "$work/sluiced.log" >&2; exit 1; }
    port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/ports.json" "$mode")
}

stop() {
    local rc=0
    kill -TERM "$pid" 2>/dev/null || { echo "frame-matrix.sh: sluiced died during -c $c --batch $bt" >&2; cat "$work/sluiced.log" >&2; exit 1; }
    wait "$pid" || rc=$?
    pid=
    [ $rc -eq 0 ] || { echo "frame-matrix.sh: sluiced exit $rc after -c $c --batch $bt" >&2; cat "$work/sluiced.log" >&2; exit 1; }
    rm -rf "$work/data"
}

for r in $(seq 1 "$rounds"); do
    for c in 1 16 64; do
        for bt in $batches; do
            start
            j=$(taskset -c 1 "$build/sluice-bench" "$mode" --target "127.0.0.1:$port" \
                --token-file "$work/tokens.txt" --connections "$c" --batch "$bt" \
                --payload "$payload" --duration "$secs" --json 2>/dev/null | tail -1) || true
            echo "$c $bt $j" >> "$work/raw.txt"
            stop
        done
    done
done

python3 - "$work/raw.txt" "$secs" "$rounds" "$mode" "$payload" <<'PY'
import json, sys
cells = {}
for line in open(sys.argv[1]):
    c, b, j = line.split(None, 2)
    cells.setdefault((int(c), int(b)), []).append(json.loads(j) if j.strip() else None)
bad = False
udp = sys.argv[4] == "udp"
print("`sluice-bench %s`, %s s per run, %s round(s)%s; sluiced `--threads 1` on CPU 0, the bench "
      "on CPU 1; %s-byte JSON payloads; latency from a reading's send to the ACK that says it is durable"
      % (sys.argv[4], sys.argv[2], sys.argv[3], " (median by readings/s)" if int(sys.argv[3]) > 1 else "",
         sys.argv[5]))
print()
print("| %s | batch | window | readings/s | p50 µs | p99 µs | max µs | %serrors |"
      % ("devices" if udp else "connections", "datagrams/s | " if udp else ""))
print("|---:|---:|---:|---:|---:|---:|---:|%s---|" % ("---:|" if udp else ""))
for (c, b), runs in sorted(cells.items()):
    ok = [r for r in runs if r]
    if not ok:
        print("| %d | %d | | no report | | | | |%s" % (c, b, " |" if udp else ""))
        bad = True
        continue
    ok.sort(key=lambda r: r["readings_per_sec"])
    r = ok[len(ok) // 2]
    lat = r["latency_us"]
    bad = bad or bool(r["errors"])
    dg = "%.0f | " % (r["readings_per_sec"] / b) if udp else ""
    print("| %d | %d | %d | %.0f | %d | %d | %d | %s%s |" % (
        c, b, r["window"], r["readings_per_sec"], lat["p50"], lat["p99"], lat["max"], dg,
        json.dumps(r["errors"]) if r["errors"] else "none"))
sys.exit(1 if bad else 0)
PY
