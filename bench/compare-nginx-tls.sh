#!/usr/bin/env bash
# bench/compare-nginx-tls.sh — sluiced's HTTPS beside nginx's `ssl`, same
# certificate, same client, taking turns.
#
#   bench/compare-nginx-tls.sh [BUILD_DIR]        (default: build; nothing is built here)
#
# Servers on CPU 0, the client (sluice-bench https, wolfSSL, X25519 first) on
# CPU 1. sluiced: --threads 1 --fsync batch (every 202 after fdatasync);
# nginx: 1 worker, `return 204;` (does nothing), ssl_protocols TLSv1.2 TLSv1.3,
# a shared session cache and tickets. Both use the certificate sluiced
# generates on its first start (ECDSA P-256). Loads, RUNS times each, servers
# alternating:
#   keep-alive  --connections CONNS (16), one request in flight each
#   handshakes  --handshakes --connections 8: a new connection and full
#               handshake per request (Connection: close)
#   resumed     --resume --connections 8: the same, resuming the session
# Per run: requests/s, handshakes/s, latency p50/p99 (from sluice-bench), and
# the server's CPU per request (Δ utime+stime of the whole process from
# /proc/PID/stat over the requests answered). Markdown on stdout.
#
# Environment: RUNS (2), DURATION (5 s), CONNS (16). Exit 77 when nginx (with
# its ssl module), taskset or 2 CPUs are missing. Loopback only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
RUNS=${RUNS:-2}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}

say() { printf 'compare-nginx-tls: %s\n' "$*" >&2; }
skip() {
    say "skip: $*"
    exit 77
}
command -v taskset >/dev/null || skip "taskset is missing"
[ "$(nproc)" -ge 2 ] || skip "fewer than 2 CPUs"
NGINX=$(command -v nginx || true)
[ -n "$NGINX" ] || skip "nginx is missing (apt-get install nginx-light)"
"$NGINX" -V 2>&1 | grep -q http_ssl_module || skip "this nginx has no ssl module"
for b in sluiced sluice sluice-bench; do
    [ -x "$build/$b" ] || { say "$build/$b is missing (build first)"; exit 1; }
done

work=$(mktemp -d "$build/compare-nginx-tls.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

data=$work/data
"$build/sluice" --data-dir "$data" org add bench >/dev/null
token=$("$build/sluice" --data-dir "$data" device add --org bench d 2>/dev/null)
taskset -c 0 "$build/sluiced" --data-dir "$data" --threads 1 --fsync batch --http off \
    --admin 127.0.0.1:0 --mqtt off --mqtts off --frame off --https 127.0.0.1:0 \
    --ports-file "$work/ports.json" >"$work/sluiced.out" 2>"$work/sluiced.err" &
spid=$!
pids+=("$spid")
for _ in $(seq 100); do [ -s "$work/ports.json" ] && break; sleep 0.05; done
sport=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["https"])' "$work/ports.json")

nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity 1;
worker_rlimit_nofile 16384;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 8192; multi_accept off; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 100000;
    client_body_buffer_size 16k;
    client_body_temp_path $work/nginx/cb;
    proxy_temp_path $work/nginx/px;
    fastcgi_temp_path $work/nginx/fc;
    uwsgi_temp_path $work/nginx/uw;
    scgi_temp_path $work/nginx/sc;
    server {
        listen 127.0.0.1:$nport ssl;
        ssl_certificate $data/tls/server.crt;
        ssl_certificate_key $data/tls/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        ssl_session_cache shared:TLS:10m;
        ssl_session_tickets on;
        location / { return 204; }
    }
}
EOF
taskset -c 0 "$NGINX" -p "$work/nginx/" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
npid=$!
pids+=("$npid")
sleep 0.5
# the worker (not the master) does the work: its CPU is what is counted
nworker=$(pgrep -P "$npid" | head -1)
[ -n "$nworker" ] || { say "nginx did not start: $(cat "$work/nginx/error.log")"; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

run() { # server-name port pid load-args...
    local name=$1 port=$2 pid=$3
    shift 3
    local c0 c1 out
    c0=$(cpu_ticks "$pid")
    out=$(taskset -c 1 "$build/sluice-bench" https --target "127.0.0.1:$port" --token "$token" \
        --duration "$DURATION" --json "$@" 2>/dev/null | tail -1)
    c1=$(cpu_ticks "$pid")
    python3 - "$name" "$out" "$((c1 - c0))" "$hz" <<'PY'
import json, sys
name, out, ticks, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rps = out["readings_per_sec"]
print(json.dumps({"server": name, "rps": rps, "hps": out.get("handshakes_per_sec", 0),
                  "p50": out["latency_us"]["p50"], "p99": out["latency_us"]["p99"],
                  "errors": out["errors"], "cpu_s": ticks / hz,
                  "resumed": out.get("tls_resumed", 0), "handshakes": out.get("tls_handshakes", 0)}))
PY
}

declare -a rows
loads=("keep-alive|--connections $CONNS" "handshakes|--handshakes --connections 8"
       "resumed|--resume --connections 8")
for load in "${loads[@]}"; do
    label=${load%%|*}
    args=${load#*|}
    for r in $(seq "$RUNS"); do
        for srv in sluiced nginx; do
            if [ $srv = sluiced ]; then port=$sport pid=$spid; else port=$nport pid=$nworker; fi
            say "$label run $r: $srv"
            # shellcheck disable=SC2086
            line=$(run "$srv" "$port" "$pid" $args)
            rows+=("$label|$line")
        done
    done
done

python3 - "$DURATION" "${rows[@]}" <<'PY'
import json, statistics, sys
dur = float(sys.argv[1])
data = {}
for row in sys.argv[2:]:
    label, js = row.split("|", 1)
    r = json.loads(js)
    data.setdefault((label, r["server"]), []).append(r)
print("| load | server | requests/s | handshakes/s | p50 µs | p99 µs | CPU µs/request | errors |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for label in ("keep-alive", "handshakes", "resumed"):
    for srv in ("sluiced", "nginx"):
        rs = data.get((label, srv), [])
        if not rs:
            continue
        med = lambda k: statistics.median(x[k] for x in rs)
        cpu = statistics.median(x["cpu_s"] / max(1.0, x["rps"] * dur) * 1e6 for x in rs)
        errs = {}
        for x in rs:
            for k, v in x["errors"].items():
                errs[k] = errs.get(k, 0) + v
        print("| %s | %s | %.0f | %.0f | %d | %d | %.1f | %s |" % (
            label, srv, med("rps"), med("hps"), med("p50"), med("p99"), cpu,
            json.dumps(errs) if errs else "0"))
PY
