#!/usr/bin/env python3
"""The HTTP device API as a device sees it (INTERFACE.md, "HTTP device API"):
a real sluiced on loopback, real curl, then `sluice log cat` to see what was
stored. Every accepted reading must come back with the right org, device and
payload; every refusal must store nothing.

Exits 77 when $SLUICED / $SLUICE_CLI or curl are missing.
"""
import base64
import gzip
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    Cli, Conn, Daemon, Suite, binaries, check, check_eq, curl, metrics, post, readings_with, request,
    tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=58)
S = {}  # run state: daemon, cli, tokens, work dir
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
MIB = 1 << 20


def setup():
    work = tmpdir("sluice-ingest-")
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    tok = cli.add_device("acme", "pump-7")
    d = Daemon(SLUICED, data).start()
    wait_token_live(d.http, tok)
    S.update(work=work, cli=cli, d=d, tok=tok, url="http://127.0.0.1:%d/v1/readings" % d.http)


def write(name, data):
    path = os.path.join(S["work"], name)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    return path


def curl_post(body_file, ctype="application/json", extra=(), token=None, url=None):
    args = ["-H", "X-Auth-Token: " + (token or S["tok"]), "-H", "Content-Type: " + ctype,
            "--data-binary", "@" + body_file] + list(extra) + [url or S["url"]]
    return curl(args)


def expect_202(got, n):
    code, body, err = got
    check_eq((code, body), (202, b'{"accepted":%d}' % n), "status and body (curl stderr %r)" % err)


def expect_stored(org, marker_key, marker, want_payloads, device="pump-7"):
    """The readings of org whose payload[marker_key] == marker are exactly
    want_payloads, in order, each with the envelope fields right."""
    rows = readings_with(S["cli"].log_cat(org), marker_key, marker)
    check_eq([r["payload"] for r in rows], want_payloads, "stored payloads for %s=%r" %
             (marker_key, marker))
    for r in rows:
        check_eq((r.get("org"), r.get("device"), r.get("proto")), (org, device, "http"),
                 "envelope of %r" % r)
        check(TS_RE.match(r.get("ts", "")), "bad ts in %r" % r)


@suite.case("json object -> 202 accepted 1, stored as sent")
def _():
    obj = {"case": "object", "temp": 21.5, "unit": "C", "tags": ["a", "b"], "ok": True,
           "nested": {"x": None, "s": "caf\u00e9 \"q\" \\"}}
    expect_202(curl_post(write("obj.json", json.dumps(obj))), 1)
    expect_stored("acme", "case", "object", [obj])


@suite.case("json array of 3 -> 202 accepted 3, three readings in order")
def _():
    arr = [{"case": "array", "i": i, "v": i * 1.5} for i in range(3)]
    expect_202(curl_post(write("arr.json", json.dumps(arr))), 3)
    expect_stored("acme", "case", "array", arr)


@suite.case("ndjson of 3 lines -> 202 accepted 3")
def _():
    lines = [{"case": "ndjson", "i": i} for i in range(3)]
    body = "".join(json.dumps(x) + "\n" for x in lines)
    expect_202(curl_post(write("n.ndjson", body), "application/x-ndjson"), 3)
    expect_stored("acme", "case", "ndjson", lines)


@suite.case("octet-stream -> 202 accepted 1, stored as payload_b64")
def _():
    blob = bytes(range(256)) + b"\x00\n\r\xff octet-marker-7f3a"
    expect_202(curl_post(write("blob.bin", blob), "application/octet-stream"), 1)
    rows = [r for r in S["cli"].log_cat("acme") if "payload_b64" in r]
    got = [base64.b64decode(r["payload_b64"]) for r in rows]
    check_eq(got.count(blob), 1, "octet readings equal to what was sent (have %d b64 rows)" %
             len(rows))
    r = rows[got.index(blob)]
    check("payload" not in r, "an opaque reading has no inline payload: %r" % r)
    check_eq((r["org"], r["device"], r["proto"]), ("acme", "pump-7", "http"), "envelope")


@suite.case("gzip json (Content-Encoding: gzip) -> 202, stored inflated")
def _():
    arr = [{"case": "gzip", "i": i, "pad": "z" * 100} for i in range(3)]
    gz = write("arr.json.gz", gzip.compress(json.dumps(arr).encode()))
    expect_202(curl_post(gz, extra=["-H", "Content-Encoding: gzip"]), 3)
    expect_stored("acme", "case", "gzip", arr)


@suite.case("chunked upload (Transfer-Encoding: chunked) -> 202, stored")
def _():
    # ~96 KiB so that curl sends it as several chunks
    arr = [{"case": "chunked", "i": i, "pad": chr(ord("a") + i) * 32000} for i in range(3)]
    expect_202(curl_post(write("chunked.json", json.dumps(arr)),
                         extra=["-H", "Transfer-Encoding: chunked"]), 3)
    expect_stored("acme", "case", "chunked", arr)


@suite.case("second org: each org's log holds only its own readings")
def _():
    cli = S["cli"]
    cli.add_org("beta")
    btok = cli.add_device("beta", "sensor-1")
    wait_token_live(S["d"].http, btok)
    arr = [{"case": "beta-only", "i": i} for i in range(2)]
    expect_202(curl_post(write("beta.json", json.dumps(arr)), token=btok), 2)
    beta = cli.log_cat("beta")
    check_eq([r["payload"] for r in beta], arr, "beta's whole log")
    for r in beta:
        check_eq((r["org"], r["device"]), ("beta", "sensor-1"), "beta envelope")
    acme = cli.log_cat("acme")
    check(acme, "acme's log is empty")
    check_eq(readings_with(acme, "case", "beta-only"), [], "beta readings in acme's log")
    check(all(r["org"] == "acme" and r["device"] == "pump-7" for r in acme),
          "acme's log shows another org/device: %r" %
          [r for r in acme if r["org"] != "acme" or r["device"] != "pump-7"][:2])


@suite.case("401 for missing and unknown token, byte-identical bodies")
def _():
    body = json.dumps({"case": "unauth"})
    missing = post(S["d"].http, None, body)
    unknown = post(S["d"].http, "slk_" + "0" * 40, body)
    wrong_shape = post(S["d"].http, "nonsense", body)
    check_eq(missing.status, 401, "missing token status")
    check_eq(unknown.status, 401, "unknown token status")
    check_eq(wrong_shape.status, 401, "malformed token status")
    check_eq(unknown.body, missing.body, "unknown-token body vs missing-token body")
    check_eq(wrong_shape.body, missing.body, "malformed-token body vs missing-token body")
    check(missing.body, "401 body is empty")
    # via curl too: same body again
    code, cbody, _ = curl(["-H", "Content-Type: application/json", "--data", body, S["url"]])
    check_eq((code, cbody), (401, missing.body), "curl without token")
    check_eq(readings_with(S["cli"].log_cat("acme"), "case", "unauth"), [],
             "refused readings stored")


@suite.case("400 for a token in the URL; the token is never logged")
def _():
    tok = S["tok"]
    body = json.dumps({"case": "url-token"})
    base = "http://127.0.0.1:%d" % S["d"].http
    for path in ["/v1/readings?token=" + tok, "/v1/readings?access_token=" + tok,
                 "/v1/readings/" + tok, "/v1/readings?x=1&token=" + tok]:
        # the token in the header too: the refusal must not depend on auth failing
        code, rbody, err = curl(["-H", "X-Auth-Token: " + tok, "-H",
                                 "Content-Type: application/json", "--data", body, base + path])
        check_eq(code, 400, "POST %s status (body %r, curl %r)" % (path.replace(tok, "<tok>"),
                                                                   rbody, err))
        check(tok.encode() not in rbody, "the 400 body echoes the token")
    # let any asynchronous logging reach the files
    time.sleep(0.2)
    out, err = S["d"].stdout(), S["d"].stderr()
    check(tok not in out and tok not in err, "token found in the daemon's output")
    check(tok[4:] not in out and tok[4:] not in err, "token body found in the daemon's output")
    check_eq(readings_with(S["cli"].log_cat("acme"), "case", "url-token"), [],
             "readings of refused requests stored")


@suite.case("400 for malformed JSON names the reading; nothing of it stored")
def _():
    r = post(S["d"].http, S["tok"], b'[{"case":"bad-json","i":0},{"b":]')
    check_eq(r.status, 400, "status for [{..},{\"b\":]")
    msg = r.json().get("error", "")
    check(re.search(r"\breading 1\b", msg), "error does not name reading 1: %r" % msg)
    r = post(S["d"].http, S["tok"], b'{"case":"bad-json","i":1}\n{"case":"bad-json","i":2}\n'
             b'{"x": tru}\n', "application/x-ndjson")
    check_eq(r.status, 400, "status for ndjson with a bad third line")
    msg = r.json().get("error", "")
    check(re.search(r"\breading 2\b", msg), "error does not name reading 2: %r" % msg)
    r = post(S["d"].http, S["tok"], b'{"case":"bad-json"')
    check_eq(r.status, 400, "status for a truncated object")
    check_eq(readings_with(S["cli"].log_cat("acme"), "case", "bad-json"), [],
             "readings of a refused request stored")


@suite.case("413 for 1 MiB + 1 body; exactly 1 MiB accepted")
def _():
    def body_of(size, tag):
        head = '{"case":"%s","pad":"' % tag
        return (head + "p" * (size - len(head) - 2) + '"}').encode()

    big = write("big.json", body_of(MIB + 1, "too-big"))
    code, body, err = curl_post(big)
    check_eq(code, 413, "1 MiB + 1 status (body %r, curl %r)" % (body, err))
    exact = body_of(MIB, "exactly-1mib")
    check_eq(len(exact), MIB, "test body size")
    expect_202(curl_post(write("exact.json", exact)), 1)
    rows = S["cli"].log_cat("acme")
    check_eq(len(readings_with(rows, "case", "too-big")), 0, "too-big stored")
    check_eq([len(json.dumps(r["payload"], separators=(",", ":")))
              for r in readings_with(rows, "case", "exactly-1mib")], [MIB], "1 MiB reading")


@suite.case("413 for a small gzip body that inflates past 1 MiB")
def _():
    bomb = b"[" + b" " * (2 * MIB) + b"]"  # valid JSON: only the size limit refuses it
    gz = gzip.compress(bomb)
    check(len(gz) < 16384, "test bomb is not small (%d)" % len(gz))
    code, body, err = curl_post(write("bomb.gz", gz), extra=["-H", "Content-Encoding: gzip"])
    check_eq(code, 413, "status (body %r, curl %r)" % (body, err))
    # just over the limit after inflation
    edge = b'{"case":"gz-edge","p":"' + b"q" * (MIB - 24) + b'"}'
    check_eq(len(edge), MIB + 1, "test body size")
    code, body, err = curl_post(write("edge.gz", gzip.compress(edge)),
                                extra=["-H", "Content-Encoding: gzip"])
    check_eq(code, 413, "1 MiB + 1 after gunzip (body %r)" % body)
    check_eq(readings_with(S["cli"].log_cat("acme"), "case", "gz-edge"), [], "stored")


@suite.case("415 for an unsupported content type or encoding")
def _():
    body = json.dumps({"case": "415"})
    for ctype, extra in [("text/plain", {}), ("application/xml", {}),
                         ("application/json", {"Content-Encoding": "br"}),
                         ("application/json", {"Content-Encoding": "compress"})]:
        r = post(S["d"].http, S["tok"], body, ctype, extra)
        check_eq(r.status, 415, "status for %s %r" % (ctype, extra))
    code, _, _ = curl_post(write("415.json", body), "text/csv")
    check_eq(code, 415, "curl text/csv")
    check_eq(readings_with(S["cli"].log_cat("acme"), "case", "415"), [], "stored")


@suite.case("405 for methods other than POST on /v1/readings")
def _():
    for method in ["GET", "PUT", "DELETE"]:
        r = request(S["d"].http, method, "/v1/readings", {"X-Auth-Token": S["tok"]})
        check_eq(r.status, 405, method + " status")
        check_eq(r.headers.get("allow"), "POST", method + " Allow header")
    code, _, _ = curl(["-H", "X-Auth-Token: " + S["tok"], S["url"]])
    check_eq(code, 405, "curl GET")


@suite.case("404 for other paths")
def _():
    for path in ["/", "/v1/reading", "/v1/readingsx", "/v2/readings", "/v1/readings/x"]:
        r = post(S["d"].http, S["tok"], '{"case":"404"}', path=path)
        check_eq(r.status, 404, "POST %s status" % path)
    check_eq(readings_with(S["cli"].log_cat("acme"), "case", "404"), [], "stored")


@suite.case("keep-alive: 1000 POSTs over one connection from one curl")
def _():
    n = 1000
    d = S["d"]
    cfg = []
    for i in range(n):
        # 'next' resets per-URL options but curl keeps its connection cache
        cfg += ['url = "%s"' % S["url"], 'header = "X-Auth-Token: %s"' % S["tok"],
                'header = "Content-Type: application/json"',
                'data = "{\\"case\\":\\"keepalive\\",\\"i\\":%d}"' % i,
                'output = "/dev/null"', 'silent', 'write-out = "%{http_code} %{num_connects}\\n"']
        if i < n - 1:
            cfg.append("next")
    path = write("ka.curlrc", "\n".join(cfg) + "\n")
    with Conn(d.admin) as admin:  # one keep-alive admin connection: it counts once, before
        before = metrics(d.admin, admin)["sluice_connections_accepted_total"]
        p = subprocess.run(["curl", "-K", path], capture_output=True, timeout=45)
        after = metrics(d.admin, admin)["sluice_connections_accepted_total"]
    lines = p.stdout.decode().split()
    check_eq(p.returncode, 0, "curl exit (stderr %r)" % p.stderr[-300:])
    codes, conns = lines[0::2], [int(x) for x in lines[1::2]]
    check_eq(len(codes), n, "responses")
    bad = [(i, c) for i, c in enumerate(codes) if c != "202"]
    check_eq(bad[:5], [], "non-202 responses (index, code)")
    check_eq(sum(conns), 1, "curl num_connects summed over %d requests" % n)
    check_eq(after - before, 1, "sluice_connections_accepted_total delta")
    rows = readings_with(S["cli"].log_cat("acme"), "case", "keepalive")
    check_eq([r["payload"]["i"] for r in rows], list(range(n)), "stored keep-alive readings")


if __name__ == "__main__":
    suite.run(setup=setup, teardown=lambda: S.get("d") and S["d"].terminate())
