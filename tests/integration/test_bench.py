#!/usr/bin/env python3
"""sluice-bench in HTTP mode (INTERFACE.md, "sluice-bench"): run against a real
sluiced on loopback, then against a tiny stdlib server that dribbles its
responses one byte per write, so the report, the --json line, the error kinds
and the exit codes are checked as a script sees them.

Exits 77 when $SLUICED / $SLUICE_CLI / $SLUICE_BENCH or curl are missing.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    SKIP, CaseFailed, Cli, Daemon, Suite, binaries, check, check_eq, tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()
BENCH = os.environ.get("SLUICE_BENCH")
if not BENCH or not os.access(BENCH, os.X_OK):
    print("# skip: $SLUICE_BENCH is not set or not executable (%r)" % BENCH)
    sys.exit(SKIP)
suite = Suite(limit=40)
S = {}


def setup():
    work = tmpdir("sluice-bench-")
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    tok = cli.add_device("acme", "bench-1")
    d = Daemon(SLUICED, data).start()
    wait_token_live(d.http, tok)
    S.update(cli=cli, d=d, tok=tok, target="127.0.0.1:%d" % d.http)


def bench(*args, timeout=15):
    p = subprocess.run([BENCH] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def bench_json(*args):
    """Runs with --json; expects exit 0 and returns the parsed last stdout line."""
    rc, out, err = bench(*(list(args) + ["--json"]))
    check_eq(rc, 0, "exit status (stderr %r)" % err[-300:])
    lines = out.strip().splitlines()
    check(lines, "no stdout; stderr %r" % err[-300:])
    try:
        r = json.loads(lines[-1])
    except ValueError:
        raise CaseFailed("last stdout line is not JSON: %r" % lines[-1])
    for key in ("readings_per_sec", "mb_per_sec", "latency_us", "errors"):
        check(key in r, "report has no %r: %r" % (key, r))
    for key in ("p50", "p90", "p99", "p999", "max"):
        check(key in r["latency_us"], "latency_us has no %r: %r" % (key, r))
    return r


def stored_count():
    out = S["cli"].must("log", "cat", "--org", "acme")
    return len(out.splitlines())


@suite.case("http: 4 connections for 1 s against sluiced, no errors")
def _():
    r = bench_json("http", "--target", S["target"], "--token", S["tok"], "--connections", "4",
                   "--duration", "1")
    check(r["readings_per_sec"] > 0, "readings_per_sec %r" % r["readings_per_sec"])
    check(r["mb_per_sec"] > 0, "mb_per_sec %r" % r["mb_per_sec"])
    check_eq(r["errors"], {}, "errors")
    lat = r["latency_us"]
    check(lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
          "percentiles out of order: %r" % lat)
    check(lat["max"] > 0, "max latency 0: %r" % lat)


@suite.case("http: wrong token counts http_401 and zero readings/s")
def _():
    r = bench_json("http", "--target", S["target"], "--token", "slk_" + "0" * 40,
                   "--connections", "2", "--duration", "0.5")
    check(r["errors"].get("http_401", 0) > 0, "errors %r" % r["errors"])
    check_eq(r["readings_per_sec"], 0, "readings_per_sec")


@suite.case("http: --readings 5 --pipeline 4 stores readings in multiples of 5")
def _():
    before = stored_count()
    r = bench_json("http", "--target", S["target"], "--token", S["tok"], "--connections", "2",
                   "--duration", "0.5", "--readings", "5", "--pipeline", "4", "--payload",
                   "100")
    check_eq(r["errors"], {}, "errors")
    time.sleep(0.5)  # requests still in flight at the end are committed anyway
    grown = stored_count() - before
    check(grown > 0 and grown % 5 == 0, "log grew by %d readings" % grown)


@suite.case("http: progress line on stderr and a plain report without --json")
def _():
    rc, out, err = bench("http", "--target", S["target"], "--token", S["tok"], "--duration",
                         "1.2")
    check_eq(rc, 0, "exit status (stderr %r)" % err)
    check("\r" in err and "readings/s" in err, "no progress line on stderr: %r" % err)
    check("readings/s" in out and "p99" in out, "report: %r" % out)


def dribble_server(close_every=0, delay=0.0):
    """A listening socket whose thread answers each POST, `delay` seconds after
    reading it, with a 200 whose bytes go out one send() at a time; returns
    (port, stop)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    ls.settimeout(0.2)
    stop = threading.Event()
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(0.5)
        buf = b""
        served = 0
        try:
            while not stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":", 1)[1])
                while len(buf) < n:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                buf = buf[n:]
                served += 1
                last = close_every and served % close_every == 0
                r = resp.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") if last else resp
                if delay:
                    time.sleep(delay)
                for i in range(len(r)):
                    c.sendall(r[i:i + 1])
                if last:
                    return
        except OSError:
            return
        finally:
            c.close()

    def accept_loop():
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        ls.close()

    threading.Thread(target=accept_loop, daemon=True).start()
    return ls.getsockname()[1], stop


def bench_dribble(server_opts, *args):
    """bench_json in http mode against a dribble_server(**server_opts)."""
    port, stop = dribble_server(**server_opts)
    try:
        return bench_json("http", "--target", "127.0.0.1:%d" % port, "--token", "t", *args)
    finally:
        stop.set()


@suite.case("http: responses split into 1-byte writes and Connection: close are followed")
def _():
    r = bench_dribble({"close_every": 7}, "--connections", "2", "--duration", "0.5",
                      "--pipeline", "3")
    check(r["readings_per_sec"] > 0, "readings_per_sec %r" % r["readings_per_sec"])
    # a close after a response with pipelined requests behind it loses them: "reset"
    extra = set(r["errors"]) - {"reset"}
    check(not extra, "errors %r" % r["errors"])


@suite.case("http: nothing listening: exit 1 with one line")
def _():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound, never listening: connections are refused
    rc, out, err = bench("http", "--target", "127.0.0.1:%d" % port, "--token", "t", "--json")
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check_eq(out, "", "stdout")
    check("cannot connect" in err, "stderr %r" % err)


@suite.case("usage: missing --target, bad numbers, unknown options: exit 2, one line")
def _():
    for args in (["http", "--token", "t"],
                 ["http", "--target", S["target"]],
                 ["http", "--target", "127.0.0.1", "--token", "t"],
                 ["http", "--target", S["target"], "--token", "t", "--connections", "0"],
                 ["http", "--target", S["target"], "--token", "t", "--connections", "10001"],
                 ["http", "--target", S["target"], "--token", "t", "--duration", "3601"],
                 ["http", "--target", S["target"], "--token", "t", "--duration", "x"],
                 ["http", "--target", S["target"], "--token", "t", "--pipeline", "-1"],
                 ["http", "--target", S["target"], "--token", "t", "--bogus", "1"],
                 ["http", "--target", S["target"], "--token", "t", "--rate", "0"],
                 ["http", "--target", S["target"], "--token", "t", "--rate", "-5"],
                 ["http", "--target", S["target"], "--token", "t", "--rate", "fast"],
                 ["http", "--target", S["target"], "--token", "t", "--rate", "100/min"],
                 ["http", "--target", S["target"], "--token", "t", "--rate", "1e9"],
                 ["http", "--target", S["target"], "--token", "t", "--duration"],
                 ["http", "--target", S["target"], "--token", "a\nb"],
                 ["gopher", "--target", S["target"], "--token", "t"],
                 []):
        rc, out, err = bench(*args)
        check_eq(rc, 2, "exit status of %r (stderr %r)" % (args, err))
        check_eq(len(err.splitlines()), 1, "stderr lines of %r: %r" % (args, err))
        check(err.startswith("sluice-bench: "), "stderr of %r: %r" % (args, err))


@suite.case("http --rate: an open loop sends the offered rate, every reading stored")
def _():
    before = stored_count()
    r = bench_json("http", "--target", S["target"], "--token", S["tok"], "--connections", "4",
                   "--duration", "1.5", "--rate", "400/s")
    check_eq(r["errors"], {}, "errors")
    check_eq(r["offered_per_sec"], 400.0, "offered_per_sec")
    check_eq(r["unsent"], 0, "unsent")
    # 601 requests fall due in 1.5 s; the last few may be unanswered at the end
    sent = r["readings_per_sec"] * 1.5
    check(560 <= sent <= 602, "about 600 readings expected, %.0f answered" % sent)
    time.sleep(0.5)
    grown = stored_count() - before
    check(570 <= grown <= 602, "log grew by %d readings for ~600 sent" % grown)


@suite.case("http --rate: latency counts from when a request was due, not when it went out")
def _():
    # one connection, answers 0.1 s after each request, 20 requests/s offered:
    # a closed loop would report ~100 ms; requests due meanwhile queue up, and
    # their waiting must show (coordinated omission corrected)
    r = bench_dribble({"delay": 0.1}, "--connections", "1", "--duration", "1.5", "--rate", "20")
    lat = r["latency_us"]
    check(lat["max"] >= 400000, "max latency %d us: queueing behind slow answers not counted"
          % lat["max"])
    check(r["unsent"] >= 10, "30 requests due, ~14 answered: unsent %r" % r["unsent"])
    check(r["readings_per_sec"] < 12, "readings_per_sec %r over what the server can answer"
          % r["readings_per_sec"])


@suite.case("modes not implemented yet: exit 2")
def _():
    for args in (["replay", "x.pcap", "--target", S["target"]],
                 ["replay"]):
        rc, out, err = bench(*args)
        check_eq(rc, 2, "exit status of %r (stderr %r)" % (args, err))
        check("not implemented yet" in err, "stderr of %r: %r" % (args, err))
    rc, out, err = bench("udp")  # a mode now (test_bench_udp.py): its usage, not "later"
    check_eq(rc, 2, "exit status of udp without --target (stderr %r)" % err)
    check("--target" in err and "not implemented" not in err, "stderr of udp: %r" % err)


@suite.case("https against a plain HTTP port: the handshake fails, said in one line, exit 1; TLS "
            "flags on a plain mode: exit 2")
def _():
    rc, out, err = bench("https", "--target", S["target"], "--token", "t", "--duration", "1")
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check("TLS handshake failed" in err, "stderr: %r" % err)
    for args in (["http", "--target", S["target"], "--token", "t", "--handshakes"],
                 ["http", "--target", S["target"], "--token", "t", "--cacert", "x"],
                 ["mqtt", "--target", S["target"], "--token", "t", "--resume"]):
        rc, out, err = bench(*args)
        check_eq(rc, 2, "exit status of %r (stderr %r)" % (args, err))


if __name__ == "__main__":
    suite.run(setup=setup)
