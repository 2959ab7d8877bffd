#!/usr/bin/env bash
# bench/compare-nginx.sh — sluiced against nginx, side by side, same session.
#
#   bench/compare-nginx.sh [BUILD_DIR]        (default: build; nothing is built here)
#
# Both servers run on CPU 0 (taskset), wrk on CPU 1:
#   taskset -c 1 wrk -t1 -c64 -d10s --latency -s bench/post.lua URL
# sluiced (--threads 1, --fsync batch: every reading is fdatasync'ed before its
# 202) and nginx (1 worker, `return 204;`: does nothing) take turns, RUNS times
# each. Per run: requests/s, latency p50/p99 from wrk, the server's CPU time
# per request (Δ utime+stime of the whole process from /proc/PID/stat, all
# threads including io_uring's io-wq workers, divided by the requests wrk
# completed), how busy CPU 0 and CPU 1 were (/proc/stat), and for sluiced the
# readings per group commit, i.e. per writev+fdatasync (Δ sluice_readings_total
# / Δ sluice_commits_total from the admin /metrics). Markdown tables on stdout;
# progress on stderr. Any non-2xx or socket error from sluiced makes it exit 1.
#
# Environment: RUNS (3), DURATION (10s), CONNS (64), SLUICE_BENCH_DIR (where
# the temp dir goes; default BUILD_DIR, so fdatasync hits a real disk and not a
# tmpfs under /tmp), WAIT_QUIET (seconds to wait for the machine to go idle
# before starting and before each run, default 0; when set, a run during which
# other processes used more than 10 % of a CPU is redone, up to 3 tries),
# FSYNC (sluiced's --fsync, default batch — the product's default and the only
# honest comparison; `never` exists to measure what durability costs, and is
# labelled as such), SLUICED_FLAGS (more sluiced flags, e.g. "--direct-io off",
# named in the table's label), RATE (requests/s: an open loop with
# `sluice-bench http --rate RATE` in wrk's place, same connections and CPU;
# latency then counts from when each request was due, and requests the server
# fell behind on are counted as "unsent" — see the sluice-bench header).
# Loopback only.
#
# Other load on the machine skews everything, so it is measured, not assumed:
# the script says how busy both CPUs were before it started (and who was
# busy), and per run the server's own share of CPU 0 and the CPU time used by
# everything other than the server and wrk ("others' CPU %", in % of one CPU).
# (/proc/PID/stat and /proc/stat both count in USER_HZ = getconf CLK_TCK.)
#
# Exit: 0 done, 77 wrk/nginx/taskset/curl missing or fewer than 2 CPUs (skip: no
# numbers rather than fake ones), 1 anything else (a server that will not
# start, a wrk run that fails).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
WAIT_QUIET=${WAIT_QUIET:-0}
FSYNC=${FSYNC:-batch}
SLUICED_FLAGS=${SLUICED_FLAGS:-}
RATE=${RATE:-}
SERVER_CPU=0
CLIENT_CPU=1

say() { printf 'compare-nginx: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}
skip() {
    say "SKIP: $*"
    exit 77
}

client_tools="wrk nginx taskset curl"
[ -n "$RATE" ] && client_tools="nginx taskset curl python3"
for tool in $client_tools; do
    command -v "$tool" >/dev/null 2>&1 && continue
    case $tool in
    nginx) pkg=nginx-light ;;
    taskset) pkg=util-linux ;;
    *) pkg=$tool ;;
    esac
    skip "$tool is not installed (apt-get install $pkg); no numbers without it"
done
ncpu=$(nproc --all)
[ "$ncpu" -ge 2 ] || skip "needs 2 CPUs (server on CPU 0, wrk on CPU 1); this machine has $ncpu"
[ -x "$build/sluiced" ] || die "no $build/sluiced: build first (meson setup $build --buildtype=release && ninja -C $build)"
# INTERFACE.md names build/sluice; the meson tree currently puts it in tools/
cli=$build/sluice
[ -x "$cli" ] || cli=$build/tools/sluice
[ -x "$cli" ] || die "no $build/sluice or $build/tools/sluice (the admin CLI): build first"
[ -z "$RATE" ] || [ -x "$build/sluice-bench" ] || die "RATE needs $build/sluice-bench: build first"
[ -f "$here/post.lua" ] || die "missing $here/post.lua"
[ -f "$here/nginx-204.conf" ] || die "missing $here/nginx-204.conf"
hz=$(getconf CLK_TCK)

tmp=$(mktemp -d "${SLUICE_BENCH_DIR:-$build}/compare-nginx.XXXXXX")
sluiced_pid=
nginx_pid=
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # only the two processes this script started, by pid
    [ -n "$sluiced_pid" ] && kill -TERM "$sluiced_pid" 2>/dev/null && wait "$sluiced_pid" 2>/dev/null
    [ -n "$nginx_pid" ] && kill -TERM "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- helpers ----------

# utime+stime (clock ticks) summed over the given pids; for a thread-group
# leader /proc/PID/stat already includes every thread, live or exited.
cpu_ticks() {
    local sum=0 pid line f
    for pid in "$@"; do
        line=$(cat "/proc/$pid/stat") || die "process $pid vanished"
        # comm may contain spaces: split after ') ', where field 3 (state) starts,
        # so utime (field 14) and stime (15) are f[11] and f[12]
        read -r -a f <<<"${line##*) }"
        sum=$((sum + f[11] + f[12]))
    done
    echo "$sum"
}

thread_map() { # pid: one line per thread
    local t line f
    for t in /proc/"$1"/task/*; do
        line=$(cat "$t/stat") || continue
        read -r -a f <<<"${line##*) }"
        printf '%s %s %s %s %s\n' "${t##*/}" "$(cat "$t/comm")" \
            "$(awk '/^Cpus_allowed_list:/ { print $2 }' "$t/status")" "${f[36]}" $((f[11] + f[12]))
    done
}

# "busy idle" jiffies of one CPU from /proc/stat
cpu_jiffies() {
    awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, $5 + $6 }' /proc/stat
}

busy_pct() { # before after
    awk -v b="$1" -v a="$2" 'BEGIN { split(b, x, " "); split(a, y, " ");
        db = y[1] - x[1]; di = y[2] - x[2];
        printf "%.0f", ((db + di) > 0 ? 100 * db / (db + di) : 0) }'
}

metric() { # name; value from sluiced's admin /metrics
    curl -fsS --max-time 5 "http://127.0.0.1:$admin_port/metrics" |
        awk -v m="sluice_$1" '$1 == m { print $2; found = 1 } END { if (!found) exit 1 }' ||
        die "admin /metrics has no sluice_$1"
}

# wrk duration like 1.23ms / 456.78us / 1.02s / 2.00m → milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { print "?" } }'
}

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || {
            echo "$p"
            return 0
        }
    done
    die "no free loopback port found"
}

wait_for() { # seconds command...
    local n=$(($1 * 10))
    shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

# ---------- is the machine quiet? ----------

machine_busy() { # busy % of both CPUs together over 2 s
    local a b
    a=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 2
    b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    busy_pct "$a" "$b"
}
# Waits up to WAIT_QUIET seconds for both CPUs to be under 5 % busy; sets
# quiet_busy to the last reading. Without WAIT_QUIET it only measures.
wait_quiet() {
    local deadline=$((SECONDS + WAIT_QUIET))
    while :; do
        quiet_busy=$(machine_busy)
        [ "$quiet_busy" -le 5 ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 5
    done
}
if ! wait_quiet; then
    say "WARNING: the machine was ${quiet_busy}% busy before the runs; results are skewed. Busiest:"
    ps -eo pid,comm,pcpu --sort=-pcpu | head -n 6 | sed 's/^/    /' >&2
fi
before_busy=$quiet_busy

# ---------- the disk under the data dir ----------

fs_type=$(df --output=fstype "$tmp" | tail -n 1)
[ "$fs_type" = tmpfs ] && say "WARNING: $tmp is on tmpfs: fdatasync is free there, sluiced's numbers flatter it"
# The ceiling on group commits/s, three ways, 2 s each: overwriting one 4 KiB
# block (no metadata to persist), appending 2 KiB (about one sluiced batch of
# 40-byte readings) — an append changes i_size, which fdatasync must also make
# durable: on ext4 without a journal that is a second, synchronous write — and
# as sluiced commits by default, an O_DIRECT overwrite of 4 KiB then fdatasync
# (no page cache: the write waits for the device, then the flush does).
sync_rate=$(python3 - "$tmp" <<'EOF' 2>/dev/null || echo "? ? ?"
import os, sys, time
import mmap
def rate(append, direct=False):
    p = os.path.join(sys.argv[1], "fdatasync-probe")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"x" * (2048 if append else 4096)
    if direct:  # block-aligned memory, written once so that the block exists
        os.pwrite(fd, buf, 0)
        os.fsync(fd)
        os.close(fd)
        fd = os.open(p, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"x" * 4096)
    n, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 2.0:
        if append:
            os.write(fd, buf)
        else:
            os.pwrite(fd, buf, 0)
        os.fdatasync(fd)
        n += 1
    el = time.monotonic() - t0
    os.close(fd)
    os.unlink(p)
    return n / el
try:
    d = "%.0f" % rate(False, True)
except OSError:
    d = "?"  # no O_DIRECT here (tmpfs)
print("%.0f %.0f %s" % (rate(False), rate(True), d))
EOF
)
read -r sync_overwrite sync_append sync_direct <<<"$sync_rate"
say "data dir $tmp ($fs_type): fdatasync ~${sync_overwrite}/s overwriting, ~${sync_append}/s appending," \
    "~${sync_direct:-?}/s after a direct write"

# ---------- sluiced ----------

data=$tmp/data
mkdir -p "$data"
"$cli" --data-dir "$data" org add bench >/dev/null || die "sluice org add bench failed"
token=$("$cli" --data-dir "$data" device add --org bench dev-1) ||
    die "sluice device add failed"
[ -n "$token" ] || die "sluice device add printed no token"
export SLUICE_TOKEN=$token

taskset -c "$SERVER_CPU" "$build/sluiced" --data-dir "$data" --threads 1 \
    --fsync "$FSYNC" --http 127.0.0.1:0 --admin 127.0.0.1:0 --https off --mqtt off --mqtts off \
    --frame off --ports-file "$tmp/ports.json" $SLUICED_FLAGS >"$tmp/sluiced.out" 2>"$tmp/sluiced.err" &
sluiced_pid=$!
wait_for 10 grep -qx ready "$tmp/sluiced.out" || {
    cat "$tmp/sluiced.err" >&2
    die "sluiced did not become ready"
}
http_port=$(sed -n 's/.*"http":\([0-9]*\).*/\1/p' "$tmp/ports.json")
admin_port=$(sed -n 's/.*"admin":\([0-9]*\).*/\1/p' "$tmp/ports.json")
if [ -z "$http_port" ] || [ -z "$admin_port" ]; then
    die "ports file without http/admin: $(cat "$tmp/ports.json")"
fi
sluiced_url=http://127.0.0.1:$http_port/v1/readings

# one request by hand first: a benchmark of 401s or 400s would be worthless
code=$(curl -s -o "$tmp/probe.body" -w '%{http_code}' -X POST -H "X-Auth-Token: $token" \
    -H 'Content-Type: application/json' --data '{"temp":21.5,"hum":40.25,"ts":1764000000}' "$sluiced_url")
[ "$code" = 202 ] || die "sluiced answered a valid reading with $code: $(cat "$tmp/probe.body")"

# ---------- nginx ----------

ngx=$tmp/nginx
mkdir -p "$ngx"
nginx_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/")" = 204 ]; }
nginx_port=
for attempt in 1 2 3; do
    port=$(free_port)
    sed -e "s|@DIR@|$ngx|g" -e "s|@PORT@|$port|g" -e "s|@CPUMASK@|1|g" \
        "$here/nginx-204.conf" >"$ngx/nginx.conf"
    # -e: the error log from the first moment, before the config is read
    taskset -c "$SERVER_CPU" nginx -p "$ngx/" -c "$ngx/nginx.conf" -e "$ngx/error.log" \
        >"$ngx/stdout" 2>&1 &
    nginx_pid=$!
    if wait_for 10 nginx_answers "$port"; then
        nginx_port=$port
        break
    fi
    kill -TERM "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
    nginx_pid=
    say "nginx did not start on port $port (attempt $attempt): $(tail -n 2 "$ngx/error.log" "$ngx/stdout" 2>/dev/null | tr '\n' ' ')"
done
[ -n "$nginx_port" ] || die "nginx would not start"
nginx_url=http://127.0.0.1:$nginx_port/v1/readings
nginx_pids() { echo "$nginx_pid" $(pgrep -P "$nginx_pid"); }

say "sluiced pid $sluiced_pid on $sluiced_url, nginx pid(s) $(nginx_pids) on $nginx_url"
say "$RUNS runs of $DURATION each, alternating"

# ---------- runs ----------

# one row per run: server run rps p50_ms p99_ms cpu_us_per_req cpu0% cpu1% non2xx sockerr
# readings_per_commit server_share_of_cpu0% others% p999_ms unsent (the last two: RATE only)
results=$tmp/results
: >"$results"

# "1m2.5s" (bash `times`) → clock ticks
times_to_ticks() {
    awk -v t="$1" -v hz="$hz" 'BEGIN { split(t, p, "m"); sub(/s$/, "", p[2]); printf "%d", (p[1] * 60 + p[2]) * hz }'
}

one_run() { # server run → one line in $tmp/row
    local server=$1 run=$2 url pids=() out t0 t1 c0a c0b c1a c1b r0 r1 k0 k1 rpc="-"
    if [ "$server" = sluiced ]; then
        url=$sluiced_url
        pids=("$sluiced_pid")
        r0=$(metric readings_total)
        k0=$(metric commits_total)
    else
        url=$nginx_url
        read -r -a pids <<<"$(nginx_pids)"
    fi
    out=$tmp/wrk-$server-$run.txt
    c0a=$(cpu_jiffies "$SERVER_CPU")
    c1a=$(cpu_jiffies "$CLIENT_CPU")
    t0=$(cpu_ticks "${pids[@]}")
    local sampler=
    if [ "$server" = sluiced ] && [ "$run" = 1 ] && [ ! -s "$tmp/threads.txt" ]; then
        # where sluiced's threads may run, mid-run: io_uring's io-wq workers
        # (iou-wrk-*, which carry the fdatasync) need not inherit the taskset
        (sleep 3; thread_map "$sluiced_pid") >"$tmp/threads.txt" 2>/dev/null &
        sampler=$!
    fi
    # in a subshell so that `times` reports the client's own CPU (taskset execs it)
    (
        rc=0
        if [ -n "$RATE" ]; then
            local hostport=${url#http://}
            taskset -c "$CLIENT_CPU" "$build/sluice-bench" http --target "${hostport%%/*}" \
                --path "/${hostport#*/}" --token "$SLUICE_TOKEN" --connections "$CONNS" \
                --duration "${DURATION%s}" --payload 40 --rate "$RATE" --json >"$out" 2>/dev/null || rc=$?
        else
            taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency -s "$here/post.lua" \
                "$url" >"$out" 2>&1 || rc=$?
        fi
        times >"$tmp/wrk-times" # not piped: a piped `times` runs in a fresh subshell
        exit "$rc"
    ) || {
        cat "$out" >&2
        die "the client failed against $server"
    }
    t1=$(cpu_ticks "${pids[@]}")
    c0b=$(cpu_jiffies "$SERVER_CPU")
    c1b=$(cpu_jiffies "$CLIENT_CPU")
    if [ -n "$sampler" ]; then
        wait "$sampler" || true
        say "  sluiced threads mid-run (tid comm allowed-cpus last-cpu utime+stime ticks):"
        sed 's/^/    /' "$tmp/threads.txt" >&2
    fi
    if [ "$server" = sluiced ]; then
        r1=$(metric readings_total)
        k1=$(metric commits_total)
        rpc=$(awk -v r=$((r1 - r0)) -v k=$((k1 - k0)) 'BEGIN { printf k ? "%.1f" : "-", r / k }')
        say "  sluiced: Δreadings $((r1 - r0)), Δcommits $((k1 - k0))"
    fi

    local reqs rps p50 p99 p999=- unsent=- non2xx sockerr wrk_ticks
    if [ -n "$RATE" ]; then
        # sluice-bench --json: the last line; latencies µs → ms
        read -r reqs rps p50 p99 p999 unsent non2xx sockerr <<<"$(python3 - "$out" "${DURATION%s}" <<'EOF' || true
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
lat, err = r["latency_us"], r["errors"]
http = sum(v for k, v in err.items() if k.startswith("http_"))
print(int(r["readings_per_sec"] * float(sys.argv[2])), r["readings_per_sec"],
      *("%.3f" % (lat[k] / 1000) for k in ("p50", "p99", "p999")), r["unsent"], http,
      sum(err.values()) - http)
EOF
)"
    else
        reqs=$(awk '/requests in/ { print $1 }' "$out")
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
        sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")
    fi
    if [ -z "$reqs" ] || [ -z "$rps" ]; then
        cat "$out" >&2
        die "could not read the client's output for $server run $run"
    fi
    read -r wu ws <<<"$(tail -n 1 "$tmp/wrk-times")"
    wrk_ticks=$(($(times_to_ticks "$wu") + $(times_to_ticks "$ws")))
    local cpu_us share others
    # the server's share of CPU 0's time, and everyone else's use of both
    # CPUs (busy time not spent by the server or by wrk), in % of one CPU
    share=$(awk -v d=$((t1 - t0)) -v a="$c0a" -v b="$c0b" 'BEGIN {
        split(a, x, " "); split(b, y, " "); tot = (y[1] + y[2]) - (x[1] + x[2]);
        printf "%.0f", (tot > 0 ? 100 * d / tot : 0) }')
    others=$(awk -v d=$((t1 - t0 + wrk_ticks)) -v a0="$c0a" -v b0="$c0b" -v a1="$c1a" -v b1="$c1b" 'BEGIN {
        split(a0, x, " "); split(b0, y, " "); split(a1, u, " "); split(b1, v, " ");
        tot = (y[1] + y[2]) - (x[1] + x[2]); busy = (y[1] - x[1]) + (v[1] - u[1]);
        o = tot > 0 ? 100 * (busy - d) / tot : 0; printf "%.0f", (o < 0 ? 0 : o) }')
    cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.2f", n ? d * 1e6 / hz / n : 0 }')
    printf '%s %s %s %s %s %s %s %s %s %s %s %s %s %s %s\n' "$server" "$run" "$rps" "$p50" "$p99" "$cpu_us" \
        "$(busy_pct "$c0a" "$c0b")" "$(busy_pct "$c1a" "$c1b")" "${non2xx:-0}" "${sockerr:-0}" "$rpc" \
        "$share" "$others" "$p999" "$unsent" >"$tmp/row"
    say "  $server run $run: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, ${cpu_us} µs CPU/req," \
        "non-2xx ${non2xx:-0}, socket errors ${sockerr:-0}, others used ${others}% of a CPU" \
        "${RATE:+(p99.9 $p999 ms, unsent $unsent)}"
}

# A run during which other processes used more than 10 % of a CPU is redone
# (up to 3 tries) when WAIT_QUIET is set; otherwise it is kept and flagged.
redone=0
for run in $(seq 1 "$RUNS"); do
    for server in sluiced nginx; do
        for try in 1 2 3; do
            [ "$WAIT_QUIET" -gt 0 ] && { wait_quiet || say "  still ${quiet_busy}% busy; running anyway"; }
            one_run "$server" "$run"
            others=$(awk '{ print $13 }' "$tmp/row")
            [ "$others" -le 10 ] || [ "$WAIT_QUIET" -eq 0 ] || [ "$try" -eq 3 ] && break
            say "  other processes used ${others}% of a CPU during that run: redoing it"
            redone=$((redone + 1))
        done
        cat "$tmp/row" >>"$results"
        sleep 1
    done
done

# sluiced must not have failed a single request: any non-2xx is a bug to report
bad=$(awk '$1 == "sluiced" && ($9 > 0 || $10 > 0)' "$results")

# ---------- report ----------

median() { # server column
    awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$results" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

client="wrk -t1 -c$CONNS -d$DURATION"
[ -n "$RATE" ] && client="sluice-bench http --rate $RATE --connections $CONNS --duration ${DURATION%s} (open loop)"
echo "### sluiced vs nginx${RATE:+, $RATE requests/s offered} — $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "$(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), kernel $(uname -r);" \
    "data dir on $fs_type, fdatasync ~${sync_overwrite}/s overwriting a block," \
    "~${sync_append}/s appending, ~${sync_direct:-?}/s after a direct 4 KiB write; $client on CPU $CLIENT_CPU," \
    "servers on CPU $SERVER_CPU; median of $RUNS runs each, alternating;" \
    "machine ${before_busy}% busy before the runs; other processes used at most" \
    "$(awk 'BEGIN { m = 0 } $13 > m { m = $13 } END { print m }' "$results")% of a CPU during a kept run" \
    "($redone runs redone because others used more than 10%)."
echo
# open loop: p99.9 and the requests the server fell behind on (RATE only)
ol_head= ol_rule=
[ -n "$RATE" ] && ol_head=" p99.9 ms | unsent |" ol_rule="---:|---:|"
echo "| server | requests/s | p50 ms | p99 ms |$ol_head server CPU µs/request | CPU $SERVER_CPU busy % (server's own) | CPU $CLIENT_CPU busy % | readings/commit |"
echo "|---|---:|---:|---:|$ol_rule---:|---:|---:|---:|"
for s in sluiced nginx; do
    label=$s
    if [ "$s" = sluiced ]; then
        case $FSYNC in
        batch) label="sluiced --threads 1 (202 after fdatasync)" ;;
        never) label="sluiced --threads 1 --fsync never (NOT durable)" ;;
        *) label="sluiced --threads 1 --fsync $FSYNC" ;;
        esac
        [ -n "$SLUICED_FLAGS" ] && label="$label $SLUICED_FLAGS"
    fi
    [ "$s" = nginx ] && label="nginx 1 worker (\`return 204;\`)"
    rpc=$(median "$s" 11)
    [ "$s" = nginx ] && rpc="—"
    ol=
    [ -n "$RATE" ] && ol=" $(median "$s" 14) | $(median "$s" 15) |"
    printf '| %s | %.0f | %s | %s |%s %s | %s (%s) | %s | %s |\n' "$label" "$(median "$s" 3)" \
        "$(median "$s" 4)" "$(median "$s" 5)" "$ol" "$(median "$s" 6)" "$(median "$s" 7)" \
        "$(median "$s" 12)" "$(median "$s" 8)" "$rpc"
done
echo
echo "<details><summary>every run</summary>"
echo
echo "| server | run | requests/s | p50 ms | p99 ms | p99.9 ms | unsent | CPU µs/req | CPU $SERVER_CPU % (server's own) | CPU $CLIENT_CPU % | others' CPU % | non-2xx | socket errors | readings/commit |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk '{ printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $14, $15, $6, $7, $12, $8, $13, $9, $10, $11 }' "$results"
echo
echo "</details>"

if awk '$1 == "nginx" && ($9 > 0 || $10 > 0) { f = 1 } END { exit !f }' "$results"; then
    say "WARNING: nginx answered non-2xx or dropped sockets: its numbers are not a clean baseline"
fi
if [ -n "$bad" ]; then
    say "ERROR: sluiced answered non-2xx or dropped sockets during the runs — a bug, not noise:"
    for f in "$tmp"/wrk-sluiced-*.txt; do
        say "--- $f"
        cat "$f" >&2
    done
    exit 1
fi
