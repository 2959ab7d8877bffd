#!/usr/bin/env python3
"""Regression tests for the S3 defects that are about answers on the wire
(D1, D4, D5, D12, D13, D14, D15, D16): each case failed on the code before
the fixes (7cbe1d8) and passes after them. Each case names its defect.

Loopback only, every count and deadline bounded. Exits 77 when $SLUICED /
$SLUICE_CLI or curl are missing.
"""
import json
import os
import shutil
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    Conn, Suite, binaries, check, check_eq, post_bytes, request,
    wait_token_live)
import regress_util  # noqa: E402
from regress_util import (  # noqa: E402
    ResponseParser, note, pump, start_daemon, stored_count)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=170)
S = {}


def fresh(name, orgs):
    """A data dir with one device per org: (data, cli, {org: token})."""
    return regress_util.fresh(SLUICE_CLI, "regr-" + name, orgs)


def setup():
    # default --max-body (1 MiB): what bounds a connection's buffered input
    # on the old code, which D12 overran
    data, cli, toks = fresh("main", ["pipe", "trail"])
    d = start_daemon(SLUICED, data, [], name="main")
    for t in toks.values():
        wait_token_live(d.http, t)
    S.update(data=data, cli=cli, toks=toks, d=d)


def big_daemon():
    """A second daemon with --max-body 16MiB (D1), orgs big and big2."""
    if "big" not in S:
        data, cli, toks = fresh("big", ["big", "big2"])
        S["big"] = start_daemon(SLUICED, data, ["--max-body", "16MiB"], name="big")
        for t in toks.values():
            wait_token_live(S["big"].http, t)
        S.update(bigcli=cli, bigtoks=toks)
    return S["big"]


def big_array_post(tok, n):
    body = b"[" + b",".join([b"{}"] * n) + b"]"
    return post_bytes("/v1/readings", tok, body)


def one_big_request(port, raw, timeout):
    with Conn(port, timeout=timeout) as c:
        got, eof, sent = pump(c.sock, raw, time.monotonic() + timeout,
                              want=lambda b: _complete(b))
        check(sent == len(raw), "server stopped reading after %d of %d bytes (got %r)" %
              (sent, len(raw), got[:200]))
        p = ResponseParser()
        p.feed(got)
        check(p.responses, "no response within %ds (eof %s, got %r)" % (timeout, eof, got[:200]))
        return p.responses[0]


def _complete(b):
    p = ResponseParser()
    try:
        p.feed(b)
    except Exception:
        return True
    return bool(p.responses)


@suite.case("D1: 1,700,000 readings in one array: 413 with nothing stored, or 202 N with "
            "exactly N stored")
def _():
    st, hd, body = one_big_request(big_daemon().http,
                                   big_array_post(S["bigtoks"]["big"], 1700000), 90)
    n = stored_count(S["bigcli"], "big")
    note("1.7M array: %d %r, %d stored" % (st, body[:80], n))
    if st == 413:
        check_eq(n, 0, "readings stored after a 413")
    else:
        check_eq(st, 202, "status for the 1.7M array (%r)" % body[:200])
        acc = json.loads(body)["accepted"]
        check_eq(n, acc, "stored readings vs the accepted count")
        check_eq(acc, 1700000, "accepted count of a 202 for a 1.7M array")


@suite.case("D1: 600,000 readings in one array: 202 accepted 600000, 600000 stored")
def _():
    try:
        st, hd, body = one_big_request(big_daemon().http,
                                       big_array_post(S["bigtoks"]["big2"], 600000), 90)
        check_eq((st, body), (202, b'{"accepted":600000}'), "response to 600k readings")
        check_eq(stored_count(S["bigcli"], "big2"), 600000, "stored readings")
    finally:  # its logs are tens of MB: gone before the next case
        if "big" in S:
            S["big"].kill()
            shutil.rmtree(os.path.dirname(S["bigcli"].data_dir), True)


@suite.case("D5: /metrics is over 2 KiB, well-formed Prometheus text, with the budget gauges")
def _():
    r = request(S["d"].admin, "GET", "/metrics")
    check_eq(r.status, 200, "GET /metrics status (body %r)" % r.body[:200])
    text = r.body.decode()
    check(len(r.body) > 2048, "metrics only %d bytes" % len(r.body))
    check(text.endswith("\n"), "metrics text does not end with a newline: %r" % text[-80:])
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            check(len(line.split(" ", 3)) >= 3, "bad comment line %r" % line)
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        check(base.startswith("sluice_") and base.replace("_", "").isalnum(),
              "bad metric name in %r" % line)
        check("{" not in name or name.endswith("}"), "bad labels in %r" % line)
        try:
            float(value)
        except ValueError:
            raise AssertionError("bad sample value in %r" % line)
        names.add(base)
    for want in ("sluice_connections_open", "sluice_commit_pending_bytes",
                 "sluice_request_memory_bytes"):
        check(want in names, "%s missing from /metrics (have %s)" % (want, sorted(names)))


N_PIPE = 100000


@suite.case("D12: 100,000 pipelined requests on one connection read concurrently: all "
            "answered in order, not dropped")
def _():
    tok = S["toks"]["pipe"]
    kinds = [
        (post_bytes("/v1/readings", tok, b"[]"), 202),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (post_bytes("/v1/readings", tok, b"[{\"a\":"), 400),
    ]
    raw = b"".join(kinds[i % 3][0] for i in range(N_PIPE))
    state = {"bad": None}
    p = None

    def keep(status, headers, body):
        i = p.count - 1
        want = kinds[i % 3][1]
        if status != want and state["bad"] is None:
            state["bad"] = (i, want, status, body[:120])

    p = ResponseParser(keep=keep)
    with Conn(S["d"].http, timeout=60) as c:
        _, eof, sent = pump(c.sock, raw, time.monotonic() + 60, want=lambda b: p.count >= N_PIPE,
                            on_data=p.feed)
    check(state["bad"] is None, "response %d: want %d, got %d %r" % state["bad"]
          if state["bad"] else "")
    check_eq((p.count, sent), (N_PIPE, len(raw)),
             "responses and bytes sent (eof %s)" % eof)
    check_eq(stored_count(S["cli"], "pipe"), 0, "readings stored from [] and bad JSON")


@suite.case("D16: a chunked trailer section over 8 KiB -> 431 naming the trailer")
def _():
    tok = S["toks"]["trail"]
    head = (b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + tok.encode() +
            b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"a" * 200) for i in range(60))
    raw = head + b"2\r\n[]\r\n0\r\n" + trailers + b"\r\n"
    with Conn(S["d"].http, timeout=10) as c:
        got, eof, sent = pump(c.sock, raw, time.monotonic() + 10, want=_complete)
    p = ResponseParser()
    p.feed(got)
    check(p.responses, "no response to an oversized trailer (got %r)" % got[:200])
    st, hd, body = p.responses[0]
    check_eq(st, 431, "status for a 12 KiB trailer section (body %r)" % body)
    check(b"trailer" in body, "431 body does not mention the trailer: %r" % body)


@suite.case("D13: --max-body 1MiB, ~0.76 MB in 1-byte chunks -> 202 and stored intact; "
            "1.1 MB -> 413")
def _():
    data, cli, toks = fresh("chunk", ["ch"])
    d = start_daemon(SLUICED, data, ["--max-body", "1MiB", "--body-timeout", "60s"], name="chunk")
    try:
        tok = toks["ch"]
        wait_token_live(d.http, tok)
        head = (b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + tok.encode() +
                b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        results = []
        for size in (760000, 1100000):
            filler = "x" * (size - len('[{"s":""}]'))
            body = json.dumps([{"s": filler}], separators=(",", ":")).encode()
            check_eq(len(body), size, "body size")
            raw = head + b"".join(b"1\r\n%c\r\n" % c for c in body) + b"0\r\n\r\n"
            with Conn(d.http, timeout=60) as c:
                got, eof, sent = pump(c.sock, raw, time.monotonic() + 60, want=_complete)
            p = ResponseParser()
            p.feed(got)
            check(p.responses, "%d bytes in 1-byte chunks: no status (eof %s after %d of %d "
                  "bytes sent, got %r)" % (size, eof, sent, len(raw), got[:200]))
            results.append((p.responses[0][0], p.responses[0][2]))
        check_eq(results[0], (202, b'{"accepted":1}'), "0.76 MB in 1-byte chunks")
        check_eq(results[1][0], 413, "1.1 MB in 1-byte chunks (%r)" % results[1][1])
        rows = cli.log_cat("ch")
        check_eq(len(rows), 1, "readings stored")
        check_eq(len(rows[0]["payload"]["s"]), 760000 - len('[{"s":""}]'), "stored length")
    finally:
        d.kill()
        shutil.rmtree(os.path.dirname(data), True)


@suite.case("D4: an address throttled for bad tokens (429) still gets 202 for a valid token")
def _():
    data, cli, toks = fresh("auth", ["nat"])
    d = start_daemon(SLUICED, data, ["--auth-fail-rate", "10", "--threads", "1"], name="auth")
    try:
        tok = toks["nat"]
        wait_token_live(d.http, tok)
        bad = post_bytes("/v1/readings", "slk_" + "0" * 40, b'{"bad":1}')
        statuses = []
        for _ in range(300):
            with Conn(d.http, timeout=5) as c:
                c.send(bad)
                r = c.read_response()
            statuses.append(r.status)
            if r.status == 429:
                break
        check_eq(statuses[-1], 429, "after %d bad tokens (statuses %s)" %
                 (len(statuses), sorted(set(statuses))))
        check(r.headers.get("retry-after", "").isdigit(), "429 without Retry-After")
        good = []
        for i in range(5):
            with Conn(d.http, timeout=5) as c:
                c.send(post_bytes("/v1/readings", tok, json.dumps({"good": i})))
                good.append(c.read_response().status)
        check_eq(good, [202] * 5, "valid token from the throttled address")
        with Conn(d.http, timeout=5) as c:
            c.send(bad)
            check_eq(c.read_response().status, 429, "bad token still throttled after the good ones")
        check_eq(sorted(r["payload"].get("good") for r in cli.log_cat("nat")), list(range(5)),
                 "stored good readings")
    finally:
        d.kill()


@suite.case("D14: SIGTERM with 50 silent connections: exit 0 within 3 s")
def _():
    data, cli, toks = fresh("term", ["t"])
    d = start_daemon(SLUICED, data, [], name="term")
    conns = []
    try:
        for _ in range(50):
            conns.append(socket.create_connection(("127.0.0.1", d.http), timeout=5))
        time.sleep(0.3)  # accepted by the workers
        t0 = time.monotonic()
        rc = d.terminate(timeout=3.0)
        took = time.monotonic() - t0
        check_eq(rc, 0, "exit status within 3 s of SIGTERM (None: still running, %.1fs)" % took)
        note("exit %.2fs after SIGTERM" % took)
    finally:
        for s in conns:
            s.close()
        d.kill()


@suite.case("D15: a flood of failing commits: < 10 stderr lines about it, then a "
            "'N more in the last 10 s' summary within 12 s")
def _():
    data, cli, toks = fresh("flood", ["f"])
    os.environ["SLUICE_FAULT_INJECT"] = "write:ENOSPC"
    try:
        d = start_daemon(SLUICED, data, [], name="flood")
    finally:
        del os.environ["SLUICE_FAULT_INJECT"]
    try:
        check("fault injection active" in d.stderr(), "no fault seam: %r" % d.stderr()[-300:])
        tok = toks["f"]
        base = d.stderr().count("\n")
        # wait for the token (a failed write is 503, not 401)
        deadline = time.monotonic() + 10
        while True:
            with Conn(d.http, timeout=5) as c:
                c.send(post_bytes("/v1/readings", tok, b'{"x":1}'))
                st = c.read_response().status
            if st != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        check_eq(st, 503, "a reading under write:ENOSPC")
        conns = [Conn(d.http, timeout=5) for _ in range(4)]
        n503 = 0
        t_end = time.monotonic() + 2.0
        req = post_bytes("/v1/readings", tok, b'{"x":1}')
        try:
            while time.monotonic() < t_end:
                for c in conns:
                    c.send(req)
                for c in conns:
                    r = c.read_response()
                    check_eq(r.status, 503, "status under write:ENOSPC")
                    n503 += 1
        finally:
            for c in conns:
                c.close()
        check(n503 >= 50, "only %d requests in the flood" % n503)
        lines = d.stderr().splitlines()[base:]
        check(len(lines) < 10, "%d stderr lines for %d failed commits: %r" %
              (len(lines), n503, lines[:12]))
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            if "more in the last 10 s" in d.stderr():
                break
            time.sleep(0.2)
        summary = [ln for ln in d.stderr().splitlines() if "more in the last 10 s" in ln]
        check(summary, "no 'more in the last 10 s' summary within 12 s; stderr tail %r" %
              d.stderr()[-400:])
        note("%d failed requests; summary: %s" % (n503, summary[0][:160]))
        check_eq(stored_count(cli, "f"), 0, "readings stored under write:ENOSPC")
    finally:
        d.kill()


if __name__ == "__main__":
    suite.run(setup=setup, teardown=lambda: S.get("d") and S["d"].terminate())
