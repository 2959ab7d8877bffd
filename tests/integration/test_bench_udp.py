#!/usr/bin/env python3
"""sluice-bench in udp mode (INTERFACE.md "sluice-bench", docs/frame-protocol.md §6):
against a real sluiced on loopback (--udp 127.0.0.1:0, ports-file key "udp")
with a device, token and UDP socket each, at --batch 1 (a READING per
datagram) and --batch 16 (a BATCH per datagram); through a seeded lossy relay
(the go-back-N resends, counted, and still every reading once in the log);
then against tiny stdlib UDP servers: one that signs WELCOME with the wrong
key, one that never answers. Checks the exit status, the --json line, that
`sluice log cat` holds at least as many "udp" readings as the bench says were
acknowledged, each device's device_seq 1..n once, and the error kinds a wrong
token, a bad server signature and a silent server give.

Exits 77 when $SLUICED / $SLUICE_CLI / $SLUICE_BENCH are missing.
"""
import hashlib
import hmac
import json
import os
import random
import select
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    SKIP, CaseFailed, Cli, Daemon, Suite, binaries, check, check_eq, tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()
BENCH = os.environ.get("SLUICE_BENCH")
if not BENCH or not os.access(BENCH, os.X_OK):
    print("# skip: $SLUICE_BENCH is not set or not executable (%r)" % BENCH)
    sys.exit(SKIP)
suite = Suite(limit=60)
S = {}
NDEV = 4


def setup():
    work = tmpdir("sluice-bench-udp-")
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    toks = [cli.add_device("acme", "udp-%d" % i) for i in range(NDEV)]
    tokfile = os.path.join(work, "tokens.txt")
    with open(tokfile, "w") as f:
        f.write("".join(t + "\n" for t in toks))
    d = Daemon(SLUICED, data, extra=["--udp", "127.0.0.1:0"]).start()
    with open(d.ports_file) as f:
        ports = json.load(f)
    check(isinstance(ports.get("udp"), int) and ports["udp"] > 0,
          "ports file has no udp: %r" % ports)
    for t in toks:
        wait_token_live(d.http, t)
    S.update(cli=cli, d=d, toks=toks, tokfile=tokfile, work=work, port=ports["udp"],
             target="127.0.0.1:%d" % ports["udp"])


def bench(*args, timeout=30):
    p = subprocess.run([BENCH] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def udp_json(*args, target=None, want_rc=0):
    rc, out, err = bench("udp", "--target", target or S["target"], "--json", *args)
    check_eq(rc, want_rc, "exit status of %r (stderr %r)" % (args, err[-300:]))
    lines = out.strip().splitlines()
    check(lines, "no stdout; stderr %r" % err[-300:])
    try:
        r = json.loads(lines[-1])
    except ValueError:
        raise CaseFailed("last stdout line is not JSON: %r" % lines[-1])
    for key in ("readings_per_sec", "mb_per_sec", "latency_us", "errors", "sent",
                "acknowledged", "batch", "datagrams", "resent"):
        check(key in r, "report has no %r: %r" % (key, r))
    for key in ("p50", "p90", "p99", "p999", "max"):
        check(key in r["latency_us"], "latency_us has no %r: %r" % (key, r))
    return r, err


def check_log(acknowledged, before):
    """The log grew by at least `acknowledged` udp readings, and each device's
    device_seq is 1..n once over every run so far (next_seq 0 numbers a run's
    readings after the device's mark; a resend is never stored twice)."""
    rows = [r for r in S["cli"].log_cat("acme") if r.get("proto") == "udp"]
    grown = len(rows) - before
    check(grown >= acknowledged, "the log grew by %d udp readings, the bench had %d "
          "acknowledged" % (grown, acknowledged))
    seqs = {}
    for row in rows:
        seqs.setdefault(row["device"], []).append(row.get("device_seq"))
    for dev, v in seqs.items():
        v.sort()
        check(v == list(range(1, len(v) + 1)), "%s: device_seq not 1..%d once each (%d "
              "distinct, first %r)" % (dev, len(v), len(set(v)), v[:5]))
    return rows


def udp_count():
    return sum(1 for r in S["cli"].log_cat("acme") if r.get("proto") == "udp")


# Open loop (--rate, datagrams/s) so that the log stays small enough to read
# back in a few seconds; the closed loop runs through the relay below. The
# window (--pipeline, readings per device) leaves a quarter second of the
# offered rate in flight: with the default 64 readings, --batch 16 kept only
# 16 ms of slack across the 4 devices, and one slow fdatasync under a loaded
# CI machine left a datagram unsent at the end ("unsent: want 0, got 1").
for _batch, _rate in ((1, 4000), (16, 1000)):
    @suite.case("udp --batch %d: %d devices, a token and socket each, %d datagrams/s for 3 s: "
                "no errors, and the log holds every reading acknowledged" % (_batch, NDEV, _rate))
    def _(batch=_batch, rate=_rate):
        before = udp_count()
        r, _ = udp_json("--token-file", S["tokfile"], "--connections", str(NDEV),
                        "--batch", str(batch), "--payload", "40", "--duration", "3",
                        "--pipeline", str(max(64, rate * batch // NDEV // 4)),
                        "--rate", "%d/s" % rate)
        check_eq(r["errors"], {}, "errors")
        check_eq(r["unsent"], 0, "unsent")
        # the schedule starts at the first CHALLENGE, a few ms into the 3 s
        want = 3 * rate * batch
        check(0.98 * want <= r["sent"] <= want + batch, "about %d readings expected, %d sent"
              % (want, r["sent"]))
        check(r["readings_per_sec"] > 0, "readings_per_sec %r" % r["readings_per_sec"])
        check_eq(r["batch"], batch, "batch")
        check_eq(r["acknowledged"], r["sent"], "acknowledged (sent %d)" % r["sent"])
        check_eq(r["datagrams"] * batch, r["sent"], "datagrams x batch (no resends)")
        check_eq(r["resent"], 0, "resent")
        lat = r["latency_us"]
        check(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
              "percentiles out of order: %r" % lat)
        check_eq(r["handshakes"], NDEV, "handshakes")
        check_eq(r["server_window"], 4096, "server_window")
        rows = check_log(r["acknowledged"], before)
        for row in rows[-3:]:
            p = row.get("payload")
            check(isinstance(p, dict) and len(json.dumps(p, separators=(",", ":"))) == 40,
                  "a stored reading is not the 40-byte JSON sent: %r" % row)


# ---- a seeded lossy relay between the bench and sluiced ----

def relay(target_port, drop, seed):
    """Forwards datagrams both ways between one front port and the server, a
    socket per client address, dropping `drop` of them at random (seeded).
    Returns (port, stop, counts)."""
    rng = random.Random(seed)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    stop = threading.Event()
    counts = {"seen": 0, "dropped": 0}
    backs, peers = {}, {}

    def run():
        while not stop.is_set():
            r, _, _ = select.select([front] + list(peers), [], [], 0.1)
            for s in r:
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:
                    continue
                counts["seen"] += 1
                if rng.random() < drop:
                    counts["dropped"] += 1
                    continue
                if s is front:
                    if addr not in backs:
                        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        b.connect(("127.0.0.1", target_port))
                        backs[addr], peers[b] = b, addr
                    backs[addr].send(data)
                else:
                    front.sendto(data, peers[s])
        for s in [front] + list(peers):
            s.close()

    threading.Thread(target=run, daemon=True).start()
    return front.getsockname()[1], stop, counts


@suite.case("udp through a relay that drops 5% each way: the lost datagrams and ACKs are "
            "resent (counted, exit 3), yet every reading is acknowledged and stored once")
def _():
    before = udp_count()
    port, stop, counts = relay(S["port"], 0.05, 1)
    try:
        r, err = udp_json("--token-file", S["tokfile"], "--connections", "2", "--batch", "4",
                          "--pipeline", "32", "--duration", "3",
                          target="127.0.0.1:%d" % port, want_rc=3)
    finally:
        stop.set()
    check(counts["dropped"] > 0, "the relay dropped nothing: %r" % counts)
    check_eq(list(r["errors"]), ["resends"], "error kinds")
    check(r["resent"] > 0 and r["errors"]["resends"] == r["resent"],
          "resent %r, errors %r" % (r["resent"], r["errors"]))
    check(r["resend_timeouts"] > 0, "resend_timeouts %r" % r["resend_timeouts"])
    check(r["acknowledged"] > 0, "nothing acknowledged")
    check_eq(r["acknowledged"], r["sent"], "acknowledged (sent %d)" % r["sent"])
    check("resends" in err, "stderr does not name resends: %r" % err[-300:])
    check_log(r["acknowledged"], before)


@suite.case("udp: a token the server does not know counts error_auth and exits non-zero")
def _():
    r, err = udp_json("--token", "slk_" + "0" * 40, "--duration", "1", want_rc=3)
    check_eq(r["errors"], {"error_auth": 1}, "errors")
    check_eq(r["acknowledged"], 0, "acknowledged")
    check_eq(r["readings_per_sec"], 0, "readings_per_sec")
    check("error_auth" in err, "stderr does not name error_auth: %r" % err[-300:])


@suite.case("udp usage: a --batch x --payload over 1,200 bytes, fewer tokens than devices, "
            "options of other modes: exit 2, one line")
def _():
    t = ["udp", "--target", S["target"], "--token", S["toks"][0]]
    for args in (t + ["--batch", "18"],  # 18 x 64 B readings: 1,212 bytes at the widest
                 t + ["--payload", "1200"],
                 t + ["--batch", "100", "--payload", "11"],
                 t + ["--connections", "2"],
                 t + ["--batch", "16", "--pipeline", "8"],
                 t + ["--qos", "1"],
                 ["udp", "--token", "t"]):
        rc, out, err = bench(*args)
        check_eq(rc, 2, "exit status of %r (stderr %r)" % (args, err))
        check_eq(len(err.splitlines()), 1, "stderr lines of %r: %r" % (args, err))
        check(err.startswith("sluice-bench: "), "stderr of %r: %r" % (args, err))
    rc, out, err = bench(*(t + ["--batch", "18"]))
    check("1200" in err and "at most 17" in err, "the usage line does not say why: %r" % err)
    # the widest that fits does run (with a device the relay case did not use: its
    # session may outlive a BYE the relay dropped, and the server answers a
    # handshake that takes a live session over only on its retry, 1 s later)
    r, _ = udp_json("--token", S["toks"][NDEV - 1], "--batch", "100", "--payload", "10",
                    "--duration", "0.5", "--rate", "20/s")
    check_eq(r["errors"], {}, "errors at --batch 100 --payload 10")


# ---- UDP servers of our own ----

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


def split_frames(b):
    out, i = [], 0
    while i < len(b):
        n = shift = 0
        j = i + 1
        while True:
            n |= (b[j] & 0x7F) << shift
            shift += 7
            j += 1
            if not b[j - 1] & 0x80:
                break
        out.append(b[i:j + n])
        i = j + n
    return out


def impostor(token):
    """A UDP server that answers the handshake and checks the device's proof
    for `token` honestly, then signs WELCOME with a key that is not the
    token's ServerKey. Returns (port, stop, proofs_ok)."""
    k = hmac.new(token.encode(), b"sluice frame key v1", hashlib.sha256).digest()
    stored = hashlib.sha256(hmac.new(k, b"Client Key", hashlib.sha256).digest()).digest()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.1)
    stop = threading.Event()
    proofs_ok = []

    def run():
        while not stop.is_set():
            try:
                d, addr = s.recvfrom(65536)
            except socket.timeout:
                continue
            if d[:8] != bytes(8):
                continue
            f = split_frames(d[8:])
            if len(f) == 1 and f[0][0] == 0x01:
                s.sendto(bytes(8) + frame(0x02, os.urandom(16) + varint(0)), addr)
            elif len(f) == 3 and [x[0] for x in f] == [1, 2, 3]:
                sig = hmac.new(stored, f[0] + f[1], hashlib.sha256).digest()
                ck = bytes(a ^ b for a, b in zip(f[2][2:34], sig))
                proofs_ok.append(hashlib.sha256(ck).digest() == stored)
                wrong = hmac.new(b"not the server key", f[0] + f[1] + f[2],
                                 hashlib.sha256).digest()
                s.sendto(bytes(8) + frame(0x04, wrong + varint(0) + varint(8192) +
                                          varint(4096) + varint(0)), addr)
        s.close()

    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()[1], stop, proofs_ok


@suite.case("udp: a WELCOME whose server signature is wrong counts bad_signature, exits "
            "non-zero, and the device's proof was right")
def _():
    tok = S["toks"][0]
    port, stop, proofs_ok = impostor(tok)
    try:
        r, err = udp_json("--token", tok, "--duration", "1", target="127.0.0.1:%d" % port,
                          want_rc=3)
    finally:
        stop.set()
    check_eq(proofs_ok, [True], "proofs checked by the impostor (one handshake, not retried)")
    check_eq(r["errors"], {"bad_signature": 1}, "errors")
    check_eq(r["sent"], 0, "sent (readings wait for a WELCOME that verifies)")
    check("signature" in err, "stderr does not say why: %r" % err[-300:])


@suite.case("udp: a server that never answers: no_welcome, exit 3; nothing listening (ICMP "
            "port unreachable): exit 1, cannot connect")
def _():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound, so no ICMP; nobody reads
    try:
        r, err = udp_json("--token", S["toks"][0], "--duration", "1",
                          target="127.0.0.1:%d" % s.getsockname()[1], want_rc=3)
        port = s.getsockname()[1]
    finally:
        s.close()
    check_eq(r["errors"], {"no_welcome": 1}, "errors")
    check_eq(r["sent"], 0, "sent")
    rc, out, err = bench("udp", "--target", "127.0.0.1:%d" % port, "--token", "t", "--json",
                         "--duration", "1")
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check_eq(out, "", "stdout")
    check("cannot connect" in err and "refused" in err, "stderr %r" % err)


if __name__ == "__main__":
    suite.run(setup=setup)
