#!/usr/bin/env python3
"""HTTP/1.1 on the wire against a real sluiced (INTERFACE.md, "HTTP device API"):
raw sockets for what curl will not send — pipelining, request-smuggling shapes,
oversized and slow header blocks, Expect: 100-continue, requests and bodies cut
into many small sends.

The daemon runs with --header-timeout 1s so the slow-header cases finish fast.
Exits 77 when $SLUICED / $SLUICE_CLI or curl are missing.
"""
import json
import socket
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    Cli, Conn, Daemon, Suite, binaries, check, check_eq, post_bytes, readable_within,
    readings_with, tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=58)
S = {}
HEADER_TIMEOUT = 1.0


def setup():
    work = tmpdir("sluice-wire-")
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    tok = cli.add_device("acme", "pump-7")
    d = Daemon(SLUICED, data, ["--header-timeout", "1s"]).start()
    wait_token_live(d.http, tok)
    S.update(cli=cli, d=d, tok=tok)


def reading_post(payload, ctype="application/json"):
    return post_bytes("/v1/readings", S["tok"], json.dumps(payload), ctype)


def stored(key, value):
    return [r["payload"] for r in readings_with(S["cli"].log_cat("acme"), key, value)]


def expect_202(resp, n):
    check_eq((resp.status, resp.body), (202, b'{"accepted":%d}' % n), "response")


@suite.case("pipelining: 3 requests in one send -> 3 responses in order, stored in order")
def _():
    reqs = [[{"case": "pipe", "req": k, "i": j} for j in range(k + 1)] for k in range(3)]
    with Conn(S["d"].http) as c:
        c.send(b"".join(reading_post(r) for r in reqs))
        got = [c.read_response() for _ in range(3)]
    # each request has a different reading count, so the order is visible
    check_eq([(r.status, r.body) for r in got],
             [(202, b'{"accepted":1}'), (202, b'{"accepted":2}'), (202, b'{"accepted":3}')],
             "pipelined responses")
    check_eq(stored("case", "pipe"), [x for r in reqs for x in r], "stored readings")


@suite.case("pipelining: an immediate error does not overtake a 202 waiting for fsync")
def _():
    a = reading_post({"case": "pipe-order", "i": 0})
    bad = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    b = reading_post([{"case": "pipe-order", "i": 1}, {"case": "pipe-order", "i": 2}])
    with Conn(S["d"].http) as c:
        c.send(a + bad + b)
        got = [c.read_response() for _ in range(3)]
    check_eq([r.status for r in got], [202, 404, 202], "statuses in request order")
    check_eq([got[0].body, got[2].body], [b'{"accepted":1}', b'{"accepted":2}'], "bodies")
    check_eq([p["i"] for p in stored("case", "pipe-order")], [0, 1, 2], "stored")


@suite.case("pipelining past the queue depth, then the client half-closes: all 40 answered")
def _():
    # 40 > the 32 responses a connection may have outstanding: the rest wait in
    # the buffer, and a FIN behind them must not drop them
    reqs = [reading_post({"case": "pipe-fin", "i": i}) for i in range(40)]
    with Conn(S["d"].http) as c:
        c.send(b"".join(reqs))
        c.sock.shutdown(socket.SHUT_WR)
        got = [c.read_response(timeout=5) for _ in range(40)]
        check(c.wait_eof(3.0), "connection not closed after the last response")
    check_eq([r.status for r in got], [202] * 40, "statuses")
    check_eq([p["i"] for p in stored("case", "pipe-fin")], list(range(40)), "stored in order")


def smuggle_case(name, head_lines, body=None, sep=b"\r\n"):
    """A POST whose header block is head_lines joined by sep; its body, if any
    server accepted it, is a valid reading marked as smuggled."""
    if body is None:
        body = json.dumps({"case": "smuggled", "shape": name}).encode()

    @suite.case("smuggling shape -> 400 and close: " + name)
    def _():
        tok = S["tok"].encode()
        # the hidden request carries a valid token too: if it got through, it would be stored
        raw = sep.join(l.replace(b"TOK", tok).replace(b"LEN", b"%d" % len(body))
                       for l in head_lines) + b"\r\n\r\n" + body.replace(b"TOK", tok)
        with Conn(S["d"].http) as c:
            c.send(raw)
            r = c.read_response(timeout=3)
            check_eq(r.status, 400, "status for %r" % raw[:300])
            check(c.wait_eof(2.0), "connection still open 2 s after the 400")


REQ = b"POST /v1/readings HTTP/1.1"
HOST = b"Host: 127.0.0.1"
AUTH = b"X-Auth-Token: TOK"
CT = b"Content-Type: application/json"
HIDDEN = json.dumps({"case": "smuggled", "shape": "hidden"}).encode()
HIDDEN_REQ = (b"0\r\n\r\nPOST /v1/readings HTTP/1.1\r\nHost: x\r\nX-Auth-Token: TOK\r\n"
              b"Content-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN)

smuggle_case("Content-Length with Transfer-Encoding",
             [REQ, HOST, AUTH, CT, b"Content-Length: 5", b"Transfer-Encoding: chunked"],
             body=HIDDEN_REQ)
smuggle_case("Transfer-Encoding then Content-Length",
             [REQ, HOST, AUTH, CT, b"Transfer-Encoding: chunked", b"Content-Length: 5"],
             body=HIDDEN_REQ)
smuggle_case("duplicate equal Content-Length",
             [REQ, HOST, AUTH, CT, b"Content-Length: LEN", b"Content-Length: LEN"])
smuggle_case("duplicate different Content-Length",
             [REQ, HOST, AUTH, CT, b"Content-Length: LEN", b"Content-Length: 3"])
smuggle_case("Content-Length list '5, 5'", [REQ, HOST, AUTH, CT, b"Content-Length: LEN, LEN"])
smuggle_case("Transfer-Encoding gzip, chunked",
             [REQ, HOST, AUTH, CT, b"Transfer-Encoding: gzip, chunked"], body=HIDDEN_REQ)
smuggle_case("Transfer-Encoding identity", [REQ, HOST, AUTH, CT, b"Transfer-Encoding: identity",
                                            b"Content-Length: LEN"])
smuggle_case("obs-fold continuation line",
             [REQ, HOST, AUTH, CT, b"X-Note: a", b" folded", b"Content-Length: LEN"])
smuggle_case("obs-fold on Transfer-Encoding",
             [REQ, HOST, AUTH, CT, b"Content-Length: LEN", b"Transfer-Encoding:", b" chunked"])
smuggle_case("bare LF line endings", [REQ, HOST, AUTH, CT, b"Content-Length: LEN"], sep=b"\n")
smuggle_case("one bare LF inside CRLF headers",
             [REQ, HOST, AUTH + b"\n" + CT, b"Content-Length: LEN"])
smuggle_case("space before colon", [REQ, HOST, AUTH, CT, b"Content-Length : LEN"])
smuggle_case("Content-Length +N", [REQ, HOST, AUTH, CT, b"Content-Length: +LEN"])
smuggle_case("Content-Length hex", [REQ, HOST, AUTH, CT, b"Content-Length: 0x10"])
smuggle_case("no Host on HTTP/1.1", [REQ, AUTH, CT, b"Content-Length: LEN"])


@suite.case("no smuggled reading was stored")
def _():
    check_eq(stored("case", "smuggled"), [], "readings from refused requests")


@suite.case("431 for a 9 KiB header block, then close")
def _():
    raw = post_bytes("/v1/readings", S["tok"], '{"case":"431"}',
                     extra=b"X-Pad: " + b"a" * (9 * 1024) + b"\r\n")
    with Conn(S["d"].http) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse before the rest arrives; the response must still come
        r = c.read_response(timeout=3)
        check_eq(r.status, 431, "status")
        check(c.wait_eof(2.0), "connection still open 2 s after the 431")
    check_eq(stored("case", "431"), [], "stored")


def expect_408_at(c, t0, what):
    r = c.read_response(timeout=4)
    took = time.monotonic() - t0
    check_eq(r.status, 408, what + " status")
    check(HEADER_TIMEOUT - 0.15 <= took <= 3.0,
          "%s: 408 after %.2fs with a %.1fs header timeout" % (what, took, HEADER_TIMEOUT))
    check(c.wait_eof(2.0), what + ": connection still open 2 s after the 408")
    return took


@suite.case("408 for a stalled header block (--header-timeout 1s), then close")
def _():
    with Conn(S["d"].http) as c:
        t0 = time.monotonic()
        c.send(b"POST /v1/readings HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: ")
        expect_408_at(c, t0, "stalled header")


@suite.case("slowloris: a header trickled 1 byte / 200 ms is cut at the deadline")
def _():
    with Conn(S["d"].http) as c:
        t0 = time.monotonic()
        c.send(b"POST /v1/readings HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sent = 0
        # never-ending header line; stop as soon as the server answers
        while time.monotonic() - t0 < 4.0:
            if readable_within(c.sock, 0.2):
                break
            try:
                c.send(b"a")
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                break
        took = expect_408_at(c, t0, "trickled header (%d bytes trickled)" % sent)
        check(took < 2.0, "trickling extended the header deadline: 408 after %.2fs" % took)


@suite.case("a silent connection is closed at the header timeout")
def _():
    with Conn(S["d"].http) as c:
        t0 = time.monotonic()
        check(readable_within(c.sock, 4.0), "silent connection still open after 4 s")
        took = time.monotonic() - t0
        check(HEADER_TIMEOUT - 0.15 <= took <= 3.0, "closed after %.2fs" % took)
        data = b""
        try:
            while True:
                chunk = c.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        check(data == b"" or data.startswith(b"HTTP/1.1 408 "),
              "a silent connection got %r" % data[:100])


@suite.case("Expect: 100-continue -> '100 Continue' before the body, then 202")
def _():
    body = json.dumps({"case": "expect", "i": 0}).encode()
    head = post_bytes("/v1/readings", S["tok"], body, extra=b"Expect: 100-continue\r\n")
    head = head[:-len(body)]
    with Conn(S["d"].http) as c:
        c.send(head)
        interim = c.read_response(timeout=2, allow_interim=True)
        check_eq((interim.status, interim.raw_head), (100, b"HTTP/1.1 100 Continue"),
                 "interim response before the body")
        c.send(body)
        expect_202(c.read_response(), 1)
    check_eq(stored("case", "expect"), [{"case": "expect", "i": 0}], "stored")


@suite.case("a request sent 1 byte per send -> 202")
def _():
    raw = reading_post({"case": "bytewise"})
    with Conn(S["d"].http) as c:
        for i in range(len(raw)):
            c.send(raw[i:i + 1])
            time.sleep(0.001)  # separate segments, well inside the 1 s header deadline
        expect_202(c.read_response(), 1)
    check_eq(stored("case", "bytewise"), [{"case": "bytewise"}], "stored")


@suite.case("a body split across many sends -> 202, stored intact")
def _():
    payload = [{"case": "split-body", "i": i, "s": "x" * 50} for i in range(20)]
    body = json.dumps(payload).encode()
    raw = post_bytes("/v1/readings", S["tok"], body)
    head = raw[:-len(body)]
    with Conn(S["d"].http) as c:
        c.send(head)
        for i in range(0, len(body), 37):
            c.send(body[i:i + 37])
            time.sleep(0.002)
        expect_202(c.read_response(), 20)
    check_eq(stored("case", "split-body"), payload, "stored")


@suite.case("a chunked body with its framing split across sends -> 202")
def _():
    payload = [{"case": "split-chunked", "i": i} for i in range(5)]
    body = json.dumps(payload).encode()
    chunked = b""
    for i in range(0, len(body), 23):
        part = body[i:i + 23]
        chunked += b"%x\r\n" % len(part) + part + b"\r\n"
    chunked += b"0\r\n\r\n"
    head = (b"POST /v1/readings HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: " +
            S["tok"].encode() + b"\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with Conn(S["d"].http) as c:
        c.send(head)
        for i in range(0, len(chunked), 5):
            c.send(chunked[i:i + 5])
            time.sleep(0.002)
        expect_202(c.read_response(), 5)
    check_eq(stored("case", "split-chunked"), payload, "stored")


@suite.case("a 512 KiB body sent in 16 KiB pieces -> 202 (not stalled)")
def _():
    head = '{"case":"big-split","pad":"'
    body = (head + "b" * (512 * 1024 - len(head) - 2) + '"}').encode()
    raw = post_bytes("/v1/readings", S["tok"], body)
    with Conn(S["d"].http) as c:
        t0 = time.monotonic()
        for i in range(0, len(raw), 16384):
            c.send(raw[i:i + 16384])
            time.sleep(0.001)
        r = c.read_response(timeout=5)
        expect_202(r, 1)
        check(time.monotonic() - t0 < 5, "slow")
    check_eq(len(stored("case", "big-split")), 1, "stored")


if __name__ == "__main__":
    suite.run(setup=setup, teardown=lambda: S.get("d") and S["d"].terminate())
