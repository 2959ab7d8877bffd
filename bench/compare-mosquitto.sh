#!/usr/bin/env bash
# bench/compare-mosquitto.sh — sluiced against Mosquitto over MQTT, side by side, same session.
#
#   bench/compare-mosquitto.sh [BUILD_DIR]      (default: build; nothing is built here)
#
# The servers run on CPU 0 (taskset), the client on CPU 1:
#   taskset -c 1 sluice-bench mqtt --qos Q --connections 32 --payload 64 --duration 10 --json
# (--pipeline left at its default, 1 unacknowledged publish per connection).
# Servers, taking turns, RUNS times each per QoS (QOS_LIST, default "1 0 2"):
#   - sluiced --threads 1 --fsync batch: PUBACK / PUBREC only after fdatasync;
#   - Mosquitto 1 process, `persistence false`: everything in memory;
#   - Mosquitto `persistence true`, `autosave_interval 1`, `autosave_on_changes
#     false`: what "persistence on" means for Mosquitto — its in-memory
#     database (retained messages, persistent sessions, their queued messages)
#     is written out to mosquitto.db by a periodic save, here every second, and
#     at exit. It is not a write per message, PUBACK never waits for it, and
#     with clean-session publishers, no subscribers and nothing retained (this
#     load) there is next to nothing in that database to save.
# Per run: messages/s (acknowledged publishes; QoS 0: publishes sent and
# confirmed read by a PINGRESP), latency p50/p99 to PUBACK (QoS 1) / PUBCOMP
# (QoS 2) from sluice-bench (n/a at QoS 0), the server's CPU time per message
# (Δ utime+stime of the whole process from /proc/PID/stat, all threads,
# divided by the messages), and how much CPU other processes used. Markdown
# tables on stdout, progress on stderr.
#
# sluiced does not serve MQTT yet: when its ports file has no "mqtt" entry, or
# a 1 s probe gets no CONNACK (connection refused, closed, or silent), its rows
# are skipped with a note and the Mosquitto rows are still measured.
#
# Environment: RUNS (3), DURATION (10, seconds), CONNS (32), PAYLOAD (64),
# QOS_LIST ("1 0 2"), PIPELINE (sluice-bench's default when empty),
# SLUICE_BENCH_DIR (where the temp dir goes; default BUILD_DIR, so that
# fdatasync hits a real disk), WAIT_QUIET (seconds to wait for the machine to
# go idle before each run, default 0; when set, a run during which others used
# more than 10 % of a CPU is redone, up to 3 tries). Loopback only.
#
# Exit: 0 done, 77 mosquitto/taskset/python3 missing or fewer than 2 CPUs
# (skip: no numbers rather than fake ones), 1 anything else (a server that
# will not start, a client run that fails, any error from sluiced).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
CONNS=${CONNS:-32}
PAYLOAD=${PAYLOAD:-64}
QOS_LIST=${QOS_LIST:-1 0 2}
PIPELINE=${PIPELINE:-}
WAIT_QUIET=${WAIT_QUIET:-0}
SERVER_CPU=0
CLIENT_CPU=1

say() { printf 'compare-mosquitto: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}
skip() {
    say "SKIP: $*"
    exit 77
}

mosquitto=$(command -v mosquitto || true)
[ -n "$mosquitto" ] || [ ! -x /usr/sbin/mosquitto ] || mosquitto=/usr/sbin/mosquitto
[ -n "$mosquitto" ] || skip "mosquitto is not installed (apt-get install mosquitto); no numbers without it"
for tool in taskset python3; do
    command -v "$tool" >/dev/null 2>&1 && continue
    pkg=$tool
    [ "$tool" = taskset ] && pkg=util-linux
    skip "$tool is not installed (apt-get install $pkg); no numbers without it"
done
ncpu=$(nproc --all)
[ "$ncpu" -ge 2 ] || skip "needs 2 CPUs (server on CPU 0, client on CPU 1); this machine has $ncpu"
bench=$build/sluice-bench
[ -x "$bench" ] || die "no $bench: build first (meson setup $build --buildtype=release && ninja -C $build)"
[ -x "$build/sluiced" ] || die "no $build/sluiced: build first"
cli=$build/sluice
[ -x "$cli" ] || cli=$build/tools/sluice
[ -x "$cli" ] || die "no $build/sluice (the admin CLI): build first"
hz=$(getconf CLK_TCK)

tmp=$(mktemp -d "${SLUICE_BENCH_DIR:-$build}/compare-mosquitto.XXXXXX")
sluiced_pid= mem_pid= disk_pid=
cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    # only the processes this script started, by pid
    for pid in $sluiced_pid $mem_pid $disk_pid; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ticks() { # pid: utime+stime of the whole process, in clock ticks
    local line f
    line=$(cat "/proc/$1/stat") || die "process $1 vanished"
    read -r -a f <<<"${line##*) }" # after "comm) ": field 3 onwards
    echo $((f[11] + f[12]))
}
all_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
busy_pct() { # before after (all CPUs, in % of one CPU)
    awk -v b="$1" -v a="$2" -v n="$ncpu" 'BEGIN { split(b, x, " "); split(a, y, " ");
        db = y[1] - x[1]; di = y[2] - x[2];
        printf "%.0f", ((db + di) > 0 ? n * 100 * db / (db + di) : 0) }'
}
wait_quiet() { # up to WAIT_QUIET s for the machine to be under 5 % busy; sets quiet_busy
    local deadline=$((SECONDS + WAIT_QUIET)) a
    while :; do
        a=$(all_busy)
        sleep 2
        quiet_busy=$(($(busy_pct "$a" "$(all_busy)") / ncpu))
        [ "$quiet_busy" -le 5 ] && return 0
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 3
    done
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() { # port: up to 5 s for a listener
    local n=50
    until python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', $1), 0.5)" 2>/dev/null; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

if ! wait_quiet; then
    say "WARNING: the machine was ${quiet_busy}% busy before the runs; results are skewed. Busiest:"
    ps -eo pid,comm,pcpu --sort=-pcpu | head -n 6 | sed 's/^/    /' >&2
fi
before_busy=$quiet_busy

# ---------- Mosquitto, both modes ----------

start_mosquitto() { # name persistence(true|false) → sets port_<name>, <name>_pid
    local name=$1 persist=$2 dir=$tmp/$1 port
    mkdir -p "$dir"
    port=$(free_port)
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence $persist"
        if [ "$persist" = true ]; then
            echo "persistence_location $dir/"
            echo "autosave_interval 1"
            echo "autosave_on_changes false"
        fi
        echo "log_dest file $dir/mosquitto.log"
    } >"$dir/mosquitto.conf"
    taskset -c "$SERVER_CPU" "$mosquitto" -c "$dir/mosquitto.conf" >"$dir/stdout" 2>&1 &
    local pid=$!
    wait_port "$port" || die "mosquitto ($name) did not start: $(tail -n 3 "$dir/stdout" "$dir/mosquitto.log" 2>/dev/null | tr '\n' ' ')"
    printf -v "port_$name" '%s' "$port"
    printf -v "${name}_pid" '%s' "$pid"
}
start_mosquitto mem false
start_mosquitto disk true
mosq_version=$({ "$mosquitto" -h 2>/dev/null || true; } | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p' | head -n 1)

# ---------- sluiced, if it speaks MQTT ----------

servers="mem disk"
sluiced_note=
data=$tmp/data
"$cli" --data-dir "$data" org add bench >/dev/null || die "sluice org add bench failed"
token=$("$cli" --data-dir "$data" device add --org bench dev-1) || die "sluice device add failed"
taskset -c "$SERVER_CPU" "$build/sluiced" --data-dir "$data" --threads 1 --fsync batch \
    --http 127.0.0.1:0 --admin 127.0.0.1:0 --https off --mqtt 127.0.0.1:0 --mqtts off \
    --frame off --ports-file "$tmp/ports.json" >"$tmp/sluiced.out" 2>"$tmp/sluiced.err" &
sluiced_pid=$!
n=100
until grep -qx ready "$tmp/sluiced.out" 2>/dev/null; do
    n=$((n - 1))
    [ "$n" -gt 0 ] || { cat "$tmp/sluiced.err" >&2; die "sluiced did not become ready"; }
    sleep 0.1
done
mqtt_port=$(sed -n 's/.*"mqtt":\([0-9]*\).*/\1/p' "$tmp/ports.json")
if [ -z "$mqtt_port" ]; then
    sluiced_note="sluiced has no MQTT listener yet (its ports file lists none: $(cat "$tmp/ports.json")); its rows are skipped"
else
    probe_rc=0
    "$bench" mqtt --target "127.0.0.1:$mqtt_port" --token "$token" --connections 1 --duration 1 \
        --qos 1 --json >"$tmp/probe.json" 2>"$tmp/probe.err" || probe_rc=$?
    if [ "$probe_rc" = 1 ] || grep -q no_connack "$tmp/probe.json" 2>/dev/null; then
        sluiced_note="sluiced has no MQTT listener on 127.0.0.1:$mqtt_port (no CONNACK: $(tail -n 1 "$tmp/probe.err")); its rows are skipped"
    elif [ "$probe_rc" != 0 ]; then
        die "sluiced's MQTT listener failed a 1 s probe: $(cat "$tmp/probe.json" "$tmp/probe.err")"
    else
        servers="sluiced mem disk"
        port_sluiced=$mqtt_port
    fi
fi
if [ -n "$sluiced_note" ]; then
    say "NOTE: $sluiced_note"
    kill -TERM "$sluiced_pid" 2>/dev/null && wait "$sluiced_pid" 2>/dev/null || true
    sluiced_pid=
fi
say "servers: $servers; QoS $QOS_LIST; $RUNS runs of ${DURATION}s each, alternating"

# ---------- runs ----------

# one row per run: server qos run msgs_per_s p50_us p99_us cpu_us_per_msg errors others%
results=$tmp/results
: >"$results"

one_run() { # server qos run → $tmp/row
    local server=$1 qos=$2 run=$3 pid port out rc=0 t0 t1 a b
    pid=${server}_pid
    pid=${!pid}
    port=port_$server
    port=${!port}
    out=$tmp/run-$server-$qos-$run.json
    a=$(all_busy)
    t0=$(cpu_ticks "$pid")
    taskset -c "$CLIENT_CPU" "$bench" mqtt --target "127.0.0.1:$port" --token "$token" \
        --qos "$qos" --connections "$CONNS" --payload "$PAYLOAD" --duration "$DURATION" \
        ${PIPELINE:+--pipeline "$PIPELINE"} --json >"$out" 2>"$tmp/client.err" || rc=$?
    t1=$(cpu_ticks "$pid")
    b=$(all_busy)
    if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
        cat "$tmp/client.err" >&2
        die "sluice-bench failed against $server (exit $rc)"
    fi
    python3 - "$out" "$server" "$qos" "$run" $((t1 - t0)) "$hz" "$(busy_pct "$a" "$b")" \
        >"$tmp/row" <<'EOF' || die "could not read sluice-bench's output for $server"
import json, sys
out, server, qos, run, ticks, hz, busy = sys.argv[1:]
r = json.loads(open(out).read().strip().splitlines()[-1])
n = r["acknowledged"] if int(qos) else r["confirmed_by_ping"]
lat = r["latency_us"]
cpu_us = int(ticks) * 1e6 / int(hz) / n if n else 0
errs = sum(r["errors"].values())
print(server, qos, run, "%.0f" % r["readings_per_sec"],
      "n/a" if lat["p50"] is None else lat["p50"], "n/a" if lat["p99"] is None else lat["p99"],
      "%.2f" % cpu_us, errs, busy)
EOF
    local row
    row=$(cat "$tmp/row")
    [ "$rc" = 0 ] || say "  $server QoS $qos run $run had errors: $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["errors"])' "$out")"
    say "  $row"
}

redone=0
for run in $(seq 1 "$RUNS"); do
    for qos in $QOS_LIST; do
        for server in $servers; do
            for try in 1 2 3; do
                [ "$WAIT_QUIET" -gt 0 ] && { wait_quiet || say "  still ${quiet_busy}% busy; running anyway"; }
                one_run "$server" "$qos" "$run"
                busy=$(awk '{ print $9 }' "$tmp/row")
                # the client and the server use up to ~2 CPUs themselves: judge
                # the rest only when WAIT_QUIET asks for it
                [ "$WAIT_QUIET" -eq 0 ] || [ "$try" -eq 3 ] || [ "$busy" -le 210 ] && break
                say "  the machine was ${busy}% busy (of $((ncpu * 100))%) during that run: redoing it"
                redone=$((redone + 1))
            done
            cat "$tmp/row" >>"$results"
            sleep 1
        done
    done
done

# ---------- report ----------

median() { # server qos column
    awk -v s="$1" -v q="$2" -v c="$3" '$1 == s && $2 == q { print $c }' "$results" | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) print "-"; else if ($1 == "n/a") print "n/a";
            else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
label() {
    case $1 in
    sluiced) echo "sluiced --threads 1 --fsync batch (PUBACK after fdatasync)" ;;
    mem) echo "Mosquitto ${mosq_version:-?}, persistence false" ;;
    disk) echo "Mosquitto ${mosq_version:-?}, persistence true, autosave every 1 s (not per message)" ;;
    esac
}

echo "### sluiced vs Mosquitto (MQTT 3.1.1) — $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "$ncpu CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), kernel $(uname -r);" \
    "\`sluice-bench mqtt --connections $CONNS --payload $PAYLOAD --duration $DURATION" \
    "${PIPELINE:+--pipeline $PIPELINE }--json\` (pipeline ${PIPELINE:-default, 1}) on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU;" \
    "median of $RUNS runs each, alternating; machine ${before_busy}% busy before the runs" \
    "($redone runs redone). Messages/s: acknowledged publishes (QoS 0: sent, and confirmed read" \
    "by a PINGRESP); latency to PUBACK (QoS 1) / PUBCOMP (QoS 2), n/a at QoS 0; server CPU from" \
    "/proc/PID/stat per message."
echo
[ -n "$sluiced_note" ] && echo "**Note:** $sluiced_note." && echo
echo "| QoS | server | msgs/s | vs Mosquitto (persistence off) | p50 µs | p99 µs | server CPU µs/msg | CPU vs Mosquitto (off) |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for qos in $QOS_LIST; do
    base_rps=$(median mem "$qos" 4)
    base_cpu=$(median mem "$qos" 7)
    for s in $servers; do
        rps=$(median "$s" "$qos" 4)
        cpu=$(median "$s" "$qos" 7)
        ratio=$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf (b > 0 ? "%.2f×" : "-"), a / b }')
        cratio=$(awk -v a="$cpu" -v b="$base_cpu" 'BEGIN { printf (b > 0 ? "%.2f×" : "-"), a / b }')
        printf '| %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$qos" "$(label "$s")" "$rps" "$ratio" \
            "$(median "$s" "$qos" 5)" "$(median "$s" "$qos" 6)" "$cpu" "$cratio"
    done
done
echo
echo "<details><summary>every run</summary>"
echo
echo "| server | QoS | run | msgs/s | p50 µs | p99 µs | CPU µs/msg | errors | machine busy % (of $((ncpu * 100))) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
awk '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9 }' "$results"
echo
echo "</details>"

if awk '($1 == "mem" || $1 == "disk") && $8 > 0 { f = 1 } END { exit !f }' "$results"; then
    say "WARNING: Mosquitto refused or dropped publishes: its numbers are not a clean baseline"
fi
if awk '$1 == "sluiced" && $8 > 0 { f = 1 } END { exit !f }' "$results"; then
    say "ERROR: sluiced refused, dropped or left publishes unacknowledged — a bug, not noise"
    exit 1
fi
