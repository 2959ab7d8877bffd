#!/usr/bin/env python3
"""Regression tests for the S3 defects about memory, backpressure and
descriptors (D2, D3, D9, D10, D11): each case failed on the code before the
fixes (7cbe1d8) and passes after them. Each case names its defect.

Memory is sluiced's VmRSS (/proc/PID/status), descriptors /proc/PID/fd, CPU
utime+stime (/proc/PID/stat); descriptor limits are set on sluiced alone
through a preexec_fn. Thresholds are generous bounds, never speeds.
Loopback only. Exits 77 when $SLUICED / $SLUICE_CLI or curl are missing.
"""
import json
import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    Cli, Conn, Suite, binaries, check, check_eq, post_bytes, tmpdir, wait_token_live)
import regress_util  # noqa: E402
from regress_util import (  # noqa: E402
    ResponseParser, cpu_seconds, disk_usage, gone, sanitized, nfds, note, pump, raise_own_nofile, rss,
    start_daemon, stored_count)

SLUICED, SLUICE_CLI = binaries()
SANITIZED = sanitized(SLUICED)
suite = Suite(limit=175)


def check_rss(grew, bound, why):
    """An RSS bound, except under ASan (see regress_util.sanitized)."""
    if SANITIZED:
        note("RSS bound not checked (ASan build): " + why)
    else:
        check(grew < bound, why)
MiB = 1 << 20


def fresh(name, orgs):
    """A data dir with one device per org: (data, cli, {org: token})."""
    return regress_util.fresh(SLUICE_CLI, "lim-" + name, orgs)



REQ_404 = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
REQ_405 = b"DELETE /v1/readings HTTP/1.1\r\nHost: x\r\n\r\n"
PAIRS = 2000  # one send unit: 4000 requests, 404 and 405 alternating


@suite.case("D2: a client pipelining for 10 s without reading: RSS grows < 32 MiB; then "
            "everything sent is answered, in order")
def _():
    # --max-body 64MiB: the old code bounded a connection's buffered input by
    # 4 x max-body and reset past it; with room there, it was output that grew
    data, cli, toks = fresh("out", ["o"])
    d = start_daemon(SLUICED, data, ["--max-body", "64MiB"], name="out")
    try:
        pid = d.proc.pid
        base = rss(pid)
        unit = (REQ_404 + REQ_405) * PAIRS
        s = socket.create_connection(("127.0.0.1", d.http), timeout=5)
        s.setblocking(False)
        units = 0
        off = 0
        peak = base
        t_end = time.monotonic() + 10
        next_probe = 0
        while True:
            now = time.monotonic()
            if now >= next_probe:
                peak = max(peak, rss(pid))
                next_probe = now + 0.25
                if peak - base > 256 * MiB:
                    break  # clearly failed: stop feeding it
            if now >= t_end and off == 0:
                break
            _, w, _ = select.select([], [s], [], 0.1)
            if not w:
                continue
            try:
                off += s.send(unit[off:])
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                raise AssertionError("the server reset a pipelining client after %d requests "
                                     "(RSS +%d MiB): %s" % (units * 2 * PAIRS,
                                                            (rss(pid) - base) // MiB, e))
            if off == len(unit):
                units += 1
                off = 0
                time.sleep(0.01)  # paced: ~12 MB/s of requests
        peak = max(peak, rss(pid))
        sent = units * 2 * PAIRS
        note("%d requests sent in 10 s; RSS %d -> peak %d MiB" % (sent, base // MiB, peak // MiB))
        check_rss(peak - base, 32 * MiB, "RSS grew by %d MiB (from %d MiB) while a client did "
                  "not read" % ((peak - base) // MiB, base // MiB))
        state = {"bad": None}
        p = None

        def keep(status, headers, body):
            want = 404 if (p.count - 1) % 2 == 0 else 405
            if status != want and state["bad"] is None:
                state["bad"] = (p.count - 1, want, status)

        p = ResponseParser(keep=keep)
        _, eof, _ = pump(s, b"", time.monotonic() + 40, want=lambda b: p.count >= sent,
                         on_data=p.feed)
        s.close()
        check(state["bad"] is None, "response %s: want %s, got %s" % state["bad"]
              if state["bad"] else "")
        check_eq(p.count, sent, "responses read after the pause (eof %s)" % eof)
    finally:
        d.kill()
        gone(data)


def post_reading(port, tok, body, timeout=90):
    """One POST on a fresh connection; sends while reading (the server may
    answer early). Returns (status, headers, body) or raises."""
    raw = post_bytes("/v1/readings", tok, body)
    with Conn(port, timeout=timeout) as c:
        p = ResponseParser()
        _, eof, sent = pump(c.sock, raw, time.monotonic() + timeout,
                            want=lambda b: p.responses, on_data=p.feed)
        check(p.responses, "no response after %d of %d bytes (eof %s)" % (sent, len(raw), eof))
        return p.responses[0]


def big_reading(size, tag):
    pre = json.dumps({"tag": tag, "s": ""})[:-2]
    filler = b"y" * (size - len(pre) - 2)
    return pre.encode() + filler + b'"}'


@suite.case("D3: --max-body 64MiB: a 20 MB reading -> 413 (nothing stored), a 15 MB "
            "reading -> 202 and stored")
def _():
    data, cli, toks = fresh("big", ["b"])
    d = start_daemon(SLUICED, data, ["--max-body", "64MiB"], name="big")
    try:
        tok = toks["b"]
        wait_token_live(d.http, tok)
        st, hd, body = post_reading(d.http, tok, big_reading(20 * 1000 * 1000, "20"), timeout=30)
        check_eq(st, 413, "status for a 20 MB reading (%r, retry-after %r)" %
                 (body[:160], hd.get("retry-after")))
        check_eq(stored_count(cli, "b"), 0, "readings stored after the 413")
        st, hd, body = post_reading(d.http, tok, big_reading(15 * 1000 * 1000, "15"))
        check_eq((st, body), (202, b'{"accepted":1}'), "response to a 15 MB reading")
        check_eq(stored_count(cli, "b"), 1, "readings stored")
    finally:
        d.kill()
        gone(data)


@suite.case("D3: --threads 1, 8 concurrent clients x 3 requests of 12 MB readings: all 202, "
            "24 stored")
def _():
    data, cli, toks = fresh("pend", ["p"])
    d = start_daemon(SLUICED, data, ["--max-body", "64MiB", "--threads", "1"], name="pend")
    try:
        tok = toks["p"]
        wait_token_live(d.http, tok)
        body = big_reading(12 * 1000 * 1000, "12")
        results = []
        lock = threading.Lock()

        def client(k):
            for i in range(3):
                try:
                    st, hd, b = post_reading(d.http, tok, body, timeout=100)
                    r = (st, b[:120])
                except Exception as e:  # a failed case, reported below
                    r = (-1, str(e)[:120])
                with lock:
                    results.append(r)

        ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        check_eq(len(results), 24, "requests finished")
        bad = [r for r in results if r != (202, b'{"accepted":1}')]
        check(not bad, "%d of 24 not 202 {accepted:1}: %r" % (len(bad), sorted(set(bad))[:4]))
        check_eq(stored_count(cli, "p"), 24, "readings stored")
    finally:
        d.kill()
        gone(data)


@suite.case("request memory: a body of known size that does not fit waits (reading stops) "
            "until another's finishes, or is cut off at its deadline (408): then 202")
def _():
    # budget 16 MiB: a 9 MB body reserves a 16 MiB buffer, so a second body
    # must wait for it; the holder sends half, pauses, then the rest
    data, cli, toks = fresh("wait", ["w"])
    d = start_daemon(SLUICED, data, ["--max-body", "16MiB", "--max-request-memory", "16MiB",
                                     "--threads", "1", "--body-timeout", "3s"], name="wait")
    try:
        tok = toks["w"]
        wait_token_live(d.http, tok)
        held = post_bytes("/v1/readings", tok, big_reading(9 * 1000 * 1000, "held"))
        half = len(held) // 2
        # larger than what a paused connection lets through (its slack and the
        # socket buffers), so it really waits; sent from a thread, which blocks
        small = post_bytes("/v1/readings", tok, big_reading(6 * 1000 * 1000, "small"))

        def send_bg(c, data):
            t = threading.Thread(target=lambda: c.sock.sendall(data), daemon=True)
            t.start()
            return t

        def answer(c):
            p = ResponseParser()
            _, eof, _ = pump(c.sock, b"", time.monotonic() + 10, want=lambda b: p.responses,
                             on_data=p.feed)
            check(p.responses, "no answer (eof %s)" % eof)
            return p.responses[0]

        # 1: the holder finishes after 1 s: the waiting body is then let in
        with Conn(d.http, timeout=10) as a, Conn(d.http, timeout=10) as b:
            a.sock.sendall(held[:half])
            time.sleep(0.3)
            tb = send_bg(b, small)
            time.sleep(0.7)
            a.sock.sendall(held[half:])
            st_a, _, _ = answer(a)
            st_b, _, body_b = answer(b)
            check_eq((st_a, st_b), (202, 202), "holder and waiter statuses")
            tb.join(5)
        # 2: the holder stalls: its deadline (it started first) answers it 408
        # and frees its memory, and the waiter goes on (its own deadline is later)
        with Conn(d.http, timeout=10) as a, Conn(d.http, timeout=10) as b:
            a.sock.sendall(held[:half])
            time.sleep(0.3)
            t0 = time.monotonic()
            tb = send_bg(b, small)
            st_a, _, _ = answer(a)
            st_b, _, _ = answer(b)
            waited = time.monotonic() - t0
            check_eq((st_a, st_b), (408, 202), "stalled holder's and waiter's statuses")
            check(waited > 2, "the waiter was answered after %.1f s: it did not wait for the "
                  "holder's deadline (3 s)" % waited)
            tb.join(5)
        check_eq(stored_count(cli, "w"), 3, "readings stored")
    finally:
        d.kill()
        gone(data)


def open_clients(port, n):
    """n non-blocking connects to port (completed by the kernel's backlog or
    not yet): the sockets."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def hold_and_watch(d, socks, seconds):
    """Holds the clients for seconds, reading what comes: (CPU seconds sluiced
    used meanwhile, {sock: bytes received}, set of socks closed)."""
    pid = d.proc.pid
    got = {s: b"" for s in socks}
    closed = set()
    c0 = cpu_seconds(pid)
    t_end = time.monotonic() + seconds
    while True:
        left = t_end - time.monotonic()
        if left <= 0:
            break
        live = [s for s in socks if s not in closed]
        r = []
        if live:
            r, _, _ = select.select(live, [], [], min(left, 0.2))
        else:
            time.sleep(min(left, 0.2))
        for s in r:
            try:
                chunk = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk:
                got[s] = (got[s] + chunk)[:4096]
            else:
                closed.add(s)
    return cpu_seconds(pid) - c0, got, closed


def emfile_case(extra, derived):
    data, cli, toks = fresh("emfile", ["e"])
    d = start_daemon(SLUICED, data, extra, name="emfile", nofile=512)
    socks = []
    try:
        tok = toks["e"]
        wait_token_live(d.http, tok)
        err0 = d.stderr()
        socks = open_clients(d.http, 700)
        cpu, got, closed = hold_and_watch(d, socks, 3.0)
        err = d.stderr()
        lines = err.splitlines()
        answered = [g for g in got.values() if g]
        n503 = sum(1 for g in answered if g.startswith(b"HTTP/1.1 503 "))
        silent_close = sum(1 for s in closed if not got[s])
        note("700 clients under RLIMIT_NOFILE 512 %s: %.2f s CPU in 3 s, %d stderr lines, "
             "%d answered 503, %d closed without an answer, %d waiting" %
             (extra, cpu, len(lines), n503, silent_close,
              sum(1 for s in socks if not got[s] and s not in closed)))
        check(cpu < 1.0, "sluiced used %.2f s of CPU in 3 s with clients beyond its descriptors"
              % cpu)
        check(len(lines) < 50, "%d stderr lines: %r" % (len(lines), lines[-5:]))
        bad = [g[:60] for g in answered if not g.startswith(b"HTTP/1.1 503 ")]
        check(not bad, "clients answered other than 503: %r" % bad[:3])
        check(all(b"\r\nretry-after: " in g.lower() for g in answered if b"\r\n\r\n" in g),
              "a 503 without Retry-After: %r" % answered[:1])
        check_eq(silent_close, 0, "clients closed without any answer")
        check(n503 >= 1, "no client beyond the limit was answered 503")
        if derived:
            m = [ln for ln in err0.splitlines() if "max-connections" in ln]
            check_eq(len(m), 1, "start-up lines naming max-connections (%r)" % m)
            check("512" in m[0], "the limit line does not name the limit 512: %r" % m[0])
    finally:
        for s in socks:
            s.close()
    try:
        # the clients are gone: it serves again
        deadline = time.monotonic() + 10
        while True:
            with Conn(d.http, timeout=5) as c:
                c.send(post_bytes("/v1/readings", tok, b'{"after":1}'))
                st = c.read_response().status
            if st == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        check_eq(st, 202, "a reading after the clients left")
        check_eq(stored_count(cli, "e"), 1, "stored readings")
    finally:
        d.kill()
        gone(data)


@suite.case("D9: RLIMIT_NOFILE 512, 700 clients holding: < 1 s CPU over 3 s, < 50 stderr "
            "lines, max-connections named once, the extra ones 503 or waiting")
def _():
    emfile_case([], derived=True)


@suite.case("D9: the same with an explicit --max-connections 100000: no spin")
def _():
    emfile_case(["--max-connections", "100000"], derived=False)


def unfinished_bodies(extra, bound, name):
    """300 connections each sending an unfinished chunked body of up to 3 MB in
    64 KiB chunks: sluiced's RSS grows < bound; what is answered is 503 with
    Retry-After; afterwards a reading is accepted."""
    data, cli, toks = fresh(name, ["u"])
    d = start_daemon(SLUICED, data, ["--threads", "1", "--max-body", "4MiB",
                                     "--body-timeout", "60s"] + extra, name=name)
    socks = []
    try:
        tok = toks["u"]
        wait_token_live(d.http, tok)
        pid = d.proc.pid
        base = peak = rss(pid)
        head = (b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + tok.encode() +
                b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        first = b'[{"s":"' + b"x" * (65536 - 7)
        chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        per = 3 * 1000 * 1000 // 65536  # chunks per connection
        socks = [socket.create_connection(("127.0.0.1", d.http), timeout=5) for _ in range(300)]
        st = {}
        for s in socks:
            s.setblocking(False)
            st[s] = {"out": head + b"10000\r\n" + first + b"\r\n", "chunks": 1, "in": b"",
                     "eof": False}
        t_end = time.monotonic() + 20
        next_probe = 0
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now >= next_probe:
                peak = max(peak, rss(pid))
                next_probe = now + 0.2
                if peak - base > 3 * bound:
                    break  # clearly failed: stop feeding it
            live = [s for s in socks if not st[s]["eof"]]
            want_w = [s for s in live if st[s]["out"] or st[s]["chunks"] < per]
            if not live or not want_w:
                break
            r, w, _ = select.select(live, want_w, [], 0.1)
            for s in r:
                try:
                    c = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    c = b""
                if c:
                    st[s]["in"] = (st[s]["in"] + c)[:4096]
                else:
                    st[s]["eof"] = True
            for s in w:
                x = st[s]
                if not x["out"] and x["chunks"] < per:
                    x["out"] = chunk
                    x["chunks"] += 1
                try:
                    n = s.send(x["out"])
                    x["out"] = x["out"][n:]
                except BlockingIOError:
                    pass
                except OSError:
                    x["eof"] = True
            time.sleep(0.005)  # slowly
        time.sleep(1.0)
        peak = max(peak, rss(pid))
        answered = [x["in"] for x in st.values() if x["in"]]
        n503 = sum(1 for a in answered if a.startswith(b"HTTP/1.1 503 "))
        full = sum(1 for x in st.values() if x["chunks"] >= per and not x["out"])
        note("%s: RSS %d -> peak %d MiB; %d answered (%d 503), %d sent all %d chunks, "
             "%d closed" % (extra or "defaults", base // MiB, peak // MiB, len(answered), n503,
                            full, per, sum(1 for x in st.values() if x["eof"])))
        check_rss(peak - base, bound, "RSS grew by %d MiB with 300 unfinished bodies" %
                  ((peak - base) // MiB))
        bad = [a[:80] for a in answered if not a.startswith(b"HTTP/1.1 503 ")]
        check(not bad, "unfinished bodies answered other than 503: %r" % bad[:3])
        check(all(b"\r\nretry-after: " in a.lower() for a in answered),
              "a 503 without Retry-After: %r" % answered[:1])
        check(full < 300, "sluiced took all 300 unfinished 3 MB bodies in")
    finally:
        for s in socks:
            s.close()
    try:
        time.sleep(0.5)
        r = None
        for _ in range(20):
            with Conn(d.http, timeout=5) as c:
                c.send(post_bytes("/v1/readings", tok, b'{"after":1}'))
                r = c.read_response()
            if r.status == 202:
                break
            time.sleep(0.25)
        check_eq(r.status, 202, "a reading once the unfinished bodies are gone (%r)" % r)
        check_eq(stored_count(cli, "u"), 1, "stored readings")
    finally:
        d.kill()
        gone(data)


@suite.case("D10: 300 unfinished 3 MB chunked bodies (--threads 1, default budgets): RSS "
            "grows < 100 MiB, answered 503 + Retry-After or not read")
def _():
    unfinished_bodies([], 100 * MiB, "unfin")


@suite.case("D10: the same with --max-request-memory 16MiB: RSS grows < 64 MiB")
def _():
    unfinished_bodies(["--max-request-memory", "16MiB"], 64 * MiB, "unfin16")


ORGS = ["org%03d" % i for i in range(600)]
O = {}


def many_orgs():
    """One data dir with 600 orgs, a device in each (made once)."""
    if not O:
        data = os.path.join(tmpdir("sluice-lim-orgs-"), "data")
        cli = Cli(SLUICE_CLI, data)
        toks = {}

        def make(names):
            for org in names:
                cli.add_org(org)
                toks[org] = cli.add_device(org, "dev")

        ts = [threading.Thread(target=make, args=(ORGS[k::4],)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        check_eq(len(toks), len(ORGS), "devices made")
        O.update(data=data, cli=cli, toks=toks)
    return O


def one_reading_each(port, orgs, toks, tag):
    """One reading per org over 8 keep-alive connections; the statuses."""
    out = {}
    lock = threading.Lock()

    def run(names):
        c = Conn(port, timeout=30)
        try:
            for org in names:
                c.send(post_bytes("/v1/readings", toks[org], json.dumps({"tag": tag, "org": org})))
                r = c.read_response()
                with lock:
                    out[org] = r.status
                if r.headers.get("connection", "").lower() == "close":
                    c.close()
                    c = Conn(port, timeout=30)
        except Exception as e:
            with lock:
                out.setdefault("error", str(e)[:200])
        finally:
            c.close()

    ts = [threading.Thread(target=run, args=(orgs[k::8],)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


@suite.case("D11: 400 orgs one reading each, --log-idle-timeout 1s: after 3 s < 100 fds "
            "and the data dir < 20 MiB")
def _():
    o = many_orgs()
    d = start_daemon(SLUICED, o["data"], ["--log-idle-timeout", "1s"], name="orgs")
    try:
        wait_token_live(d.http, o["toks"][ORGS[-1]])
        got = one_reading_each(d.http, ORGS[:400], o["toks"], "idle")
        bad = {k: v for k, v in got.items() if v != 202}
        check(not bad and len(got) == 400, "not all 400 got 202: %r" % list(bad.items())[:5])
        fds_busy = nfds(d.proc.pid)
        time.sleep(3.0)
        deadline = time.monotonic() + 5
        while nfds(d.proc.pid) >= 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        fds = nfds(d.proc.pid)
        du = disk_usage(o["data"])
        note("fds %d after the readings, %d 3 s later; data dir %.1f MiB" %
             (fds_busy, fds, du / MiB))
        check(fds < 100, "%d descriptors open 3 s after 400 orgs wrote once" % fds)
        check(du < 20 * MiB, "data dir takes %.1f MiB for 400 readings" % (du / MiB))
        for org in (ORGS[0], ORGS[399]):
            check_eq(stored_count(o["cli"], org), 1, "readings stored in %s" % org)
    finally:
        d.terminate(timeout=10)
        d.kill()


@suite.case("D11: RLIMIT_NOFILE 1024, 600 orgs one reading each: all 202")
def _():
    o = many_orgs()
    d = start_daemon(SLUICED, o["data"], [], name="orgs1024", nofile=1024)
    try:
        wait_token_live(d.http, o["toks"][ORGS[-1]])
        got = one_reading_each(d.http, ORGS, o["toks"], "nofile")
        bad = {k: v for k, v in got.items() if v != 202}
        check(not bad and len(got) == 600, "%d of 600 not 202: %r" %
              (len(bad) + 600 - len(got), list(bad.items())[:5]))
        for org in (ORGS[0], ORGS[450], ORGS[599]):
            rows = [r for r in o["cli"].log_cat(org) if r["payload"].get("tag") == "nofile"]
            check_eq(len(rows), 1, "readings stored in %s" % org)
    finally:
        d.kill()
        gone(o["data"])


if __name__ == "__main__":
    raise_own_nofile()
    suite.run()
