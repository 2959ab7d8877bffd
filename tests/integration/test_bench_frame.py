#!/usr/bin/env python3
"""sluice-bench in frame mode (INTERFACE.md "sluice-bench", docs/frame-protocol.md):
against a real sluiced on loopback (--frame 127.0.0.1:0, ports-file key
"frame") with one device and token per connection, at --batch 1 (READING
frames) and --batch 16 (BATCH frames); then against a tiny stdlib frame
server that signs WELCOME with the wrong key. Checks the exit status, the
--json line, that `sluice log cat` holds at least as many frame readings as
the bench says were acknowledged durable, and the error kinds a wrong token
and a bad server signature give.

Exits 77 when $SLUICED / $SLUICE_CLI / $SLUICE_BENCH or curl are missing.
"""
import hashlib
import hmac
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
suite = Suite(limit=120)
S = {}
NDEV = 4


def setup():
    work = tmpdir("sluice-bench-frame-")
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    toks = [cli.add_device("acme", "frame-%d" % i) for i in range(NDEV)]
    tokfile = os.path.join(work, "tokens.txt")
    with open(tokfile, "w") as f:
        f.write("".join(t + "\n" for t in toks))
    d = Daemon(SLUICED, data, extra=["--frame", "127.0.0.1:0"]).start()
    with open(d.ports_file) as f:
        ports = json.load(f)
    check(isinstance(ports.get("frame"), int) and ports["frame"] > 0,
          "ports file has no frame: %r" % ports)
    for t in toks:
        wait_token_live(d.http, t)
    S.update(cli=cli, d=d, toks=toks, tokfile=tokfile, work=work,
             target="127.0.0.1:%d" % ports["frame"])


def bench(*args, timeout=30):
    p = subprocess.run([BENCH] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def frame_json(*args, target=None, want_rc=0):
    rc, out, err = bench("frame", "--target", target or S["target"], "--json", *args)
    check_eq(rc, want_rc, "exit status of %r (stderr %r)" % (args, err[-300:]))
    lines = out.strip().splitlines()
    check(lines, "no stdout; stderr %r" % err[-300:])
    try:
        r = json.loads(lines[-1])
    except ValueError:
        raise CaseFailed("last stdout line is not JSON: %r" % lines[-1])
    for key in ("readings_per_sec", "mb_per_sec", "latency_us", "errors", "sent",
                "acknowledged", "batch"):
        check(key in r, "report has no %r: %r" % (key, r))
    for key in ("p50", "p90", "p99", "p999", "max"):
        check(key in r["latency_us"], "latency_us has no %r: %r" % (key, r))
    return r, err


def frame_rows():
    return [r for r in S["cli"].log_cat("acme") if r.get("proto") == "frame"]


for _batch in (1, 16):
    @suite.case("frame --batch %d: %d connections, a token each, 1.5 s at 4,000 frames/s: no errors, "
                "and the log "
                "holds every reading acknowledged" % (_batch, NDEV))
    def _(batch=_batch):
        before = len(frame_rows())
        r, _ = frame_json("--token-file", S["tokfile"], "--connections", str(NDEV),
                          "--batch", str(batch), "--payload", "40", "--duration", "1.5",
                          # bounded, so that reading the log back stays quick
                          "--rate", "4000/s")
        check_eq(r["errors"], {}, "errors")
        check(r["readings_per_sec"] > 0, "readings_per_sec %r" % r["readings_per_sec"])
        check_eq(r["batch"], batch, "batch")
        check_eq(r["acknowledged"], r["sent"], "acknowledged (sent %d)" % r["sent"])
        check(r["acknowledged"] % batch == 0, "acknowledged %d is not whole batches"
              % r["acknowledged"])
        lat = r["latency_us"]
        check(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
              "percentiles out of order: %r" % lat)
        check_eq(r["handshakes"], NDEV, "handshakes")
        rows = frame_rows()
        grown = len(rows) - before
        check(grown >= r["acknowledged"], "the log grew by %d frame readings, the bench had %d "
              "acknowledged" % (grown, r["acknowledged"]))
        # next_seq 0 numbers each run's readings after the device's mark: per
        # device, 1, 2, 3 ... across runs, none twice, none skipped
        seqs = {}
        for row in rows:
            seqs.setdefault(row["device"], []).append(row.get("device_seq"))
        for dev, v in seqs.items():
            check(sorted(v) == list(range(1, len(v) + 1)), "%s: device_seq not 1..%d once each "
                  "(first %r)" % (dev, len(v), sorted(v)[:5]))
        for row in rows[-3:]:
            p = row.get("payload")
            check(isinstance(p, dict) and len(json.dumps(p, separators=(",", ":"))) == 40,
                  "a stored reading is not the 40-byte JSON sent: %r" % row)


@suite.case("frame --rate: an open loop, every frame acknowledged, the offered rate reported")
def _():
    r, _ = frame_json("--token", S["toks"][0], "--duration", "1.5", "--rate", "200/s",
                      "--batch", "4")
    check_eq(r["errors"], {}, "errors")
    check_eq(r["offered_per_sec"], 200.0, "offered_per_sec")
    check_eq(r["unsent"], 0, "unsent")
    check(1100 <= r["acknowledged"] <= 1204, "about 300 frames of 4 expected, %d readings "
          "acknowledged" % r["acknowledged"])


@suite.case("frame: a token the server does not know counts error_auth and exits non-zero")
def _():
    r, err = frame_json("--token", "slk_" + "0" * 40, "--duration", "1", want_rc=3)
    check(r["errors"].get("error_auth", 0) == 1, "errors %r" % r["errors"])
    check_eq(r["acknowledged"], 0, "acknowledged")
    check_eq(r["readings_per_sec"], 0, "readings_per_sec")
    check("error_auth" in err, "stderr does not name error_auth: %r" % err[-300:])


@suite.case("frame usage: fewer tokens than connections, a token twice, --batch over "
            "--pipeline, options of other modes: exit 2, one line")
def _():
    t = ["frame", "--target", S["target"]]
    twice = os.path.join(S["work"], "tokens-twice.txt")
    with open(twice, "w") as f:
        f.write("%s\n%s\n%s\n" % (S["toks"][0], S["toks"][1], S["toks"][0]))
    for args in (t + ["--token-file", twice, "--connections", "3"],t + ["--token", S["toks"][0], "--connections", "2"],
                 t + ["--token-file", S["tokfile"], "--connections", str(NDEV + 1)],
                 t + ["--token-file", os.path.join(S["work"], "missing.txt")],
                 t + ["--token", S["toks"][0], "--token-file", S["tokfile"]],
                 t + ["--token", S["toks"][0], "--batch", "0"],
                 t + ["--token", S["toks"][0], "--batch", "32", "--pipeline", "16"],
                 t + ["--token", S["toks"][0], "--payload", "1"],
                 t + ["--token", S["toks"][0], "--qos", "1"],
                 t + ["--token", S["toks"][0], "--readings", "2"],
                 t,
                 ["http", "--target", S["target"], "--token", "t", "--batch", "2"],
                 ["mqtt", "--target", S["target"], "--token-file", S["tokfile"]]):
        rc, out, err = bench(*args)
        check_eq(rc, 2, "exit status of %r (stderr %r)" % (args, err))
        check_eq(len(err.splitlines()), 1, "stderr lines of %r: %r" % (args, err))
        check(err.startswith("sluice-bench: "), "stderr of %r: %r" % (args, err))
    rc, out, err = bench(*(t + ["--token", S["toks"][0], "--connections", "2"]))
    check("tokens" in err, "the usage line does not say why: %r" % err)


# ---- a frame server of our own: WELCOME signed with the wrong key ----

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def frame(t, body):
    return bytes([t]) + varint(len(body)) + body


def read_frame(sock, buf):
    """(whole frame bytes, rest of buf); None when the peer closed."""
    while True:
        if len(buf) >= 2:
            n = shift = 0
            for i in range(1, min(len(buf), 11)):
                n |= (buf[i] & 0x7F) << shift
                shift += 7
                if not buf[i] & 0x80:
                    if len(buf) >= i + 1 + n:
                        return buf[:i + 1 + n], buf[i + 1 + n:]
                    break
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk


def verifiers(token):
    """(StoredKey, ServerKey) as docs/frame-protocol.md §3 derives them."""
    k = hmac.new(token.encode(), b"sluice frame key v1", hashlib.sha256).digest()
    ck = hmac.new(k, b"Client Key", hashlib.sha256).digest()
    return hashlib.sha256(ck).digest(), hmac.new(k, b"Server Key", hashlib.sha256).digest()


def impostor(token):
    """A listener that checks the device's proof for `token` honestly, then
    answers WELCOME signed with a key that is not the token's ServerKey (a
    server that never held the verifiers). Returns (port, stop, proofs_ok)."""
    stored, _ = verifiers(token)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(0.2)
    stop = threading.Event()
    proofs_ok = []

    def serve(c):
        c.settimeout(5)
        try:
            hello, buf = read_frame(c, b"")
            if not hello or hello[0] != 0x01:
                return
            challenge = frame(0x02, os.urandom(16) + varint(0))
            c.sendall(challenge)
            proof, buf = read_frame(c, buf)
            if not proof or proof[0] != 0x03:
                return
            sig = hmac.new(stored, hello + challenge, hashlib.sha256).digest()
            client_key = bytes(a ^ b for a, b in zip(proof[2:34], sig))
            proofs_ok.append(hashlib.sha256(client_key).digest() == stored)
            wrong = hmac.new(b"not the server key", hello + challenge + proof,
                             hashlib.sha256).digest()
            c.sendall(frame(0x04, wrong + varint(0) + varint(65536) + varint(4096) + varint(0)))
            while not stop.is_set() and read_frame(c, buf)[0]:
                pass
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
    return ls.getsockname()[1], stop, proofs_ok


@suite.case("frame: a WELCOME whose server signature is wrong counts bad_signature, exits "
            "non-zero, and the device's proof was right")
def _():
    tok = S["toks"][0]
    port, stop, proofs_ok = impostor(tok)
    try:
        r, err = frame_json("--token", tok, "--duration", "1",
                            target="127.0.0.1:%d" % port, want_rc=3)
    finally:
        stop.set()
    check_eq(proofs_ok, [True], "proofs checked by the impostor (one connection, not retried)")
    check_eq(r["errors"].get("bad_signature"), 1, "bad_signature in %r" % r["errors"])
    check_eq(r["acknowledged"], 0, "acknowledged")
    check("signature" in err, "stderr does not say why: %r" % err[-300:])


@suite.case("frame: a server that accepts and never answers HELLO: no_welcome, exit 3")
def _():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)  # the kernel accepts; nobody ever reads
    try:
        r, err = frame_json("--token", S["toks"][0], "--connections", "1", "--duration", "1",
                            target="127.0.0.1:%d" % ls.getsockname()[1], want_rc=3)
    finally:
        ls.close()
    check_eq(r["errors"], {"no_welcome": 1}, "errors")
    check_eq(r["sent"], 0, "sent (nothing before PROOF)")


@suite.case("frame: nothing listening: exit 1, cannot connect")
def _():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, out, err = bench("frame", "--target", "127.0.0.1:%d" % port, "--token", "t", "--json")
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check_eq(out, "", "stdout")
    check("cannot connect" in err, "stderr %r" % err)


if __name__ == "__main__":
    suite.run(setup=setup)
