#!/usr/bin/env python3
"""The frame protocol over TCP (docs/frame-protocol.md) against a real sluiced:
the reference Python client (clients/python/sluice_frame.py) as a CLI and as a
library, raw sockets for what a well-behaved client never sends, a relay that
cuts connections mid-stream, a stolen copy of the store, kill -9 and SIGTERM
under load, and the C client example when it is built.

Every stored reading is checked with `sluice log cat`: proto "frame", its
device_seq, exactly once. Each case uses a device of its own, so one case's
high-water mark never meets another's readings.

The one fake server here answers WELCOME with a wrong signature: it tests the
client's own check, which no real server can. Storage failures are
test_frame_faults.py's. A case whose tool is missing (mdb_dump from
lmdb-utils, the C client: $SLUICE_FRAME_SEND, else examples/ beside sluiced)
is skipped; a file where nothing ran exits 77.
"""
import base64
import collections
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
import sluice_frame as sf  # noqa: E402
from mqttwire import closed_within  # noqa: E402
from sluicetest import (  # noqa: E402
    CaseFailed, Cli, Daemon, Suite, binaries, check, check_eq, need_tool, post, skip, tmpdir,
    wait_token_live)

SLUICED, SLUICE_CLI = binaries()
CLIENT = os.path.join(HERE, "..", "..", "clients", "python", "sluice_frame.py")
suite = Suite(limit=120)
S = {}
SUMMARY = re.compile(r"^sent (\d+) readings \((?:seq (\d+)\.\.(\d+)|no seq)\), (\d+) acknowledged, "
                     r"(\d+) bytes out, (\d+) bytes in", re.M)


def setup():
    base = tmpdir("sluice-frame-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    S.update(base=base, data=data, cli=cli, tokens={})
    d = Daemon(SLUICED, data, ["--frame", "127.0.0.1:0"], name="frame")
    S["d"] = d
    start()
    # a device for the first cases; wait_token_live proves the daemon has
    # loaded the table (it reloads within about a second of a CLI change)
    device("first")


def start():
    """(Re)starts the daemon on its data directory; the frame port is new each time."""
    d = S["d"]
    d.start()
    with open(d.ports_file) as f:
        ports = json.load(f)
    S["frame"] = ports.get("frame")
    check(isinstance(S["frame"], int) and S["frame"] > 0, "ports file has no frame: %r" % ports)


def daemon_alive():
    """Fails the case saying how, when the daemon is gone (a refused connection
    says nothing about why)."""
    p = S["d"].proc
    if p is not None and p.poll() is not None:
        raise CaseFailed("sluiced is not running: exit status %d (negative: signal), stderr %r" %
                         (p.returncode, S["d"].stderr()[-300:]))


def device(name):
    """A new device of org acme; its token, once the daemon knows it."""
    daemon_alive()
    tok = S["cli"].add_device("acme", name)
    S["tokens"][name] = tok
    wait_token_live(S["d"].http, tok)
    return tok


def rows_of(name):
    """The stored readings of device name."""
    return [r for r in S["cli"].log_cat("acme") if r.get("device") == name]


def check_frame_rows(rows, want_seqs, what, payload_of_seq=None):
    """rows are frame readings with device_seq each once, exactly want_seqs;
    payload_of_seq(seq) -> the text each was sent with."""
    check(all(r.get("proto") == "frame" for r in rows),
          "%s: a reading not stored as proto frame: %r" % (what, [r for r in rows if
                                                                  r.get("proto") != "frame"][:2]))
    seqs = [r.get("device_seq") for r in rows]
    dup = sorted(s for s, n in collections.Counter(seqs).items() if n > 1)
    got, want = sorted(set(s for s in seqs if s is not None)), sorted(want_seqs)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    check(not dup and not missing and not extra and None not in seqs,
          "%s: %d rows; twice %s; missing %s; unexpected %s; without device_seq %d" % (
              what, len(rows), dup[:10], missing[:10], extra[:10], seqs.count(None)))
    if payload_of_seq:
        for r in rows:
            want_p = payload_of_seq(r["device_seq"])
            check(same_payload(r, want_p), "%s: device_seq %d stored %r, sent %r" % (
                what, r["device_seq"], r.get("payload", r.get("payload_b64")), want_p))


def same_payload(row, text):
    """The stored reading is text: inline when it is JSON, base64 otherwise."""
    if "payload" in row:
        try:
            return row["payload"] == json.loads(text)
        except ValueError:
            return False
    return base64.b64decode(row.get("payload_b64", "")) == text.encode()


def run_client(*args, timeout=60):
    p = subprocess.run([sys.executable, CLIENT] + list(args), capture_output=True,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def summary(out):
    m = SUMMARY.search(out)
    check(m, "no summary line in %r" % out)
    sent, first, last, acked, bout, bin_ = m.groups()
    return dict(sent=int(sent), first=int(first or 0), last=int(last or 0), acked=int(acked),
                out=int(bout), inb=int(bin_))


# ---- raw frames, for what the client never sends ----

class Raw:
    def __init__(self, port=None, timeout=5):
        try:
            self.s = socket.create_connection(("127.0.0.1", port or S["frame"]), timeout=timeout)
        except ConnectionRefusedError:
            if not port:
                daemon_alive()
            raise
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self):
        self.s.close()

    def send(self, b):
        self.s.sendall(b)

    def frame(self, timeout=5):
        """The next frame (type, body), or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            got = sf.split_frame(self.buf, limit=1 << 20)
            if got:
                del self.buf[:got[2]]
                return got[0], got[1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise CaseFailed("no frame from the server within %gs (have %r)" %
                                 (timeout, bytes(self.buf)))
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                check(not self.buf, "EOF inside a frame: %r" % bytes(self.buf))
                return None
            self.buf += data

    def expect(self, ftype, what, timeout=5):
        f = self.frame(timeout)
        check(f is not None, "%s: the server closed the connection, want frame 0x%02x" %
              (what, ftype))
        if f[0] != ftype:
            desc = sf.parse_error(f[1]) if f[0] == sf.ERROR else f[1]
            raise CaseFailed("%s: frame 0x%02x %r, want 0x%02x" % (what, f[0], desc, ftype))
        return f[1]

    def error(self, what, timeout=5):
        """The ERROR that must come (ACKs before it skipped): (code, seq, message)."""
        while True:
            f = self.frame(timeout)
            check(f is not None, "%s: closed without an ERROR" % what)
            if f[0] == sf.ERROR:
                return sf.parse_error(f[1])
            check(f[0] == sf.ACK, "%s: frame 0x%02x %r, want ERROR" % (what, f[0], f[1]))

    def expect_error(self, code, what, timeout=5):
        got = self.error(what, timeout)
        check(got[0] == code, "%s: ERROR 0x%02x %r, want ERROR 0x%02x" % (what, got[0], got,
                                                                           code))
        check(closed_within(self.s, 3), "%s: not closed after ERROR 0x%02x" % (what, code))
        return got

    def hello(self, token_id, next_seq=0):
        h = sf.hello_frame(token_id, os.urandom(16), next_seq)
        self.send(h)
        return h

    def handshake(self, keys, next_seq=0, client_key=None, stored_key=None):
        """HELLO, CHALLENGE, PROOF (from client_key / stored_key when given:
        an attacker's guesses); returns (auth message, PROOF frame)."""
        h = self.hello(keys.token_id, next_seq)
        body = self.expect(sf.CHALLENGE, "CHALLENGE")
        auth = h + sf.frame(sf.CHALLENGE, body)
        proof = sf.proof_frame(sf.client_proof(client_key or keys.client_key,
                                               stored_key or keys.stored_key, auth))
        self.send(proof)
        return auth, proof

    def login(self, keys, next_seq=0):
        """A whole handshake; the parsed WELCOME, its signature checked."""
        auth, proof = self.handshake(keys, next_seq)
        w = sf.parse_welcome(self.expect(sf.WELCOME, "WELCOME"))
        check(w[0] == sf.server_signature(keys.server_key, auth, proof),
              "WELCOME's server_signature does not verify")
        return w


# ---- a relay that cuts, and records ----

class Relay:
    """127.0.0.1:port -> the frame port. The first `cuts` connections are cut
    (both sides closed) after cut_after bytes from the client; capture holds
    every byte relayed, both directions."""

    def __init__(self, target, cut_after=0, cuts=0):
        self.target = target
        self.cut_after, self.cuts_left = cut_after, cuts
        self.capture = bytearray()
        self.lock = threading.Lock()
        self.conns = self.cut = 0
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.ls.close()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += 1
                cut = None
                if self.cuts_left > 0:
                    self.cuts_left -= 1
                    cut = self.cut_after
            pair = (c, s)
            threading.Thread(target=self._pipe, args=(c, s, cut, pair), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, None, pair), daemon=True).start()

    def _pipe(self, src, dst, cut, pair):
        n = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if cut is not None and n + len(data) >= cut:
                    data = data[:cut - n]
                    with self.lock:
                        self.capture += data
                        self.cut += 1
                    dst.sendall(data)
                    break
                n += len(data)
                with self.lock:
                    self.capture += data
                dst.sendall(data)
        except OSError:
            pass
        for sk in pair:
            try:
                sk.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sk.close()
            except OSError:
                pass


# ---- the cases ----

@suite.case("the client's self-test: every §9 vector (keys, HELLO, CHALLENGE, PROOF, WELCOME "
            "signature, READING, timed READING, BATCH, ACK, ERROR) byte for byte")
def _():
    rc, out, err = run_client("--selftest")
    check_eq(rc, 0, "--selftest exit (%s)" % (out + err)[-600:])
    lines = out.splitlines()
    check(not [x for x in lines if x.startswith("FAIL")], "failed vectors: %s" % out)
    for name in ("token_id", "K", "ClientKey", "StoredKey", "ServerKey", "HELLO", "CHALLENGE",
                 "ClientSignature", "PROOF", "server_signature", "WELCOME", "READING",
                 "READING, timed", "BATCH", "ACK", "ERROR"):
        check("ok - " + name in lines, "vector %r not checked: %s" % (name, out))
    check("all vectors ok" in out, "no verdict: %s" % out)


@suite.case("CLI: 1,000 readings to a new device, exit 0, stored once each with proto frame and "
            "device_seq 1..1000; a second run continues at 1001..2000 (next_seq 0); <= 14 "
            "bytes a reading (S6)")
def _():
    tok = device("cli-1")
    text = '{"t":21.5}'
    rc, out, err = run_client("--host", "127.0.0.1", "--port", str(S["frame"]), "--token", tok,
                              "--count", "1000", "--payload", text)
    check_eq(rc, 0, "exit (stdout %r, stderr %r)" % (out, err))
    sm = summary(out)
    check_eq((sm["sent"], sm["acked"], sm["first"], sm["last"]), (1000, 1000, 1, 1000),
             "sent, acknowledged, seq range")
    check_frame_rows(rows_of("cli-1"), range(1, 1001), "first run", lambda s: text)
    per = (sm["out"] + sm["inb"]) / 1000.0
    check(per <= 14, "%.2f bytes a reading on the wire (%d out, %d in), S6 wants <= 14" % (
        per, sm["out"], sm["inb"]))
    print("# %.2f bytes a reading: %d out, %d in" % (per, sm["out"], sm["inb"]))
    rc, out, err = run_client("--host", "127.0.0.1", "--port", str(S["frame"]), "--token", tok,
                              "--count", "1000", "--payload", text)
    check_eq(rc, 0, "second run exit (stdout %r, stderr %r)" % (out, err))
    sm = summary(out)
    check_eq((sm["first"], sm["last"], sm["acked"]), (1001, 2000, 1000), "second run's seqs")
    check_frame_rows(rows_of("cli-1"), range(1, 2001), "both runs", lambda s: text)


@suite.case("CLI usage: a missing --token or --batch 0 exits 2; nothing is sent (--udp is "
            "test_udp.py's)")
def _():
    tok = device("usage-1")
    base = ["--host", "127.0.0.1", "--port", str(S["frame"])]
    rc, out, err = run_client(*(base + ["--count", "1"]))
    check_eq(rc, 2, "exit without --token (%r)" % err)
    rc, out, err = run_client(*(base + ["--token", tok, "--batch", "0"]))
    check_eq(rc, 2, "--batch 0 exit (%r)" % err)
    check_eq(rows_of("usage-1"), [], "readings stored by refused runs")


@suite.case("CLI --batch 50: 1,000 readings in BATCH frames, each stored once")
def _():
    tok = device("batch-1")
    text = '{"b":1}'
    rc, out, err = run_client("--host", "127.0.0.1", "--port", str(S["frame"]), "--token", tok,
                              "--count", "1000", "--payload", text, "--batch", "50")
    check_eq(rc, 0, "exit (stdout %r, stderr %r)" % (out, err))
    sm = summary(out)
    check_eq((sm["acked"], sm["first"], sm["last"]), (1000, 1, 1000), "acknowledged, seq range")
    # one READING each would be 1000 x (2 + 7); a BATCH item is 1 + 7, plus
    # 20 batch headers of 4 and the handshake's HELLO, PROOF and BYE
    check(sm["out"] <= 1000 * 8 + 20 * 4 + 29 + 34 + 2, "%d bytes out: not batched" % sm["out"])
    check_frame_rows(rows_of("batch-1"), range(1, 1001), "batched", lambda s: text)


@suite.case("a wrong token: the CLI exits 1 saying authentication failed (ERROR 0x02); raw, an "
            "unknown token_id still gets a CHALLENGE (no oracle), its PROOF ERROR 0x02 and "
            "close; readings sent before WELCOME on a failed proof are not stored")
def _():
    tok = device("auth-1")
    rc, out, err = run_client("--host", "127.0.0.1", "--port", str(S["frame"]), "--token",
                              tok[:-4] + "zzzz", "--count", "3")
    check_eq(rc, 1, "exit with a wrong token (stdout %r, stderr %r)" % (out, err))
    check("authentication failed (ERROR 0x02)" in err, "stderr %r" % err)
    check_eq(len(err.strip().splitlines()), 1, "lines on stderr (%r)" % err)
    # an unknown token_id: the CHALLENGE looks like any other
    known = Raw()
    known.hello(sf.Keys(tok).token_id)
    kb = known.expect(sf.CHALLENGE, "CHALLENGE for a known token")
    known.close()
    r = Raw()
    r.hello(os.urandom(8))
    body = r.expect(sf.CHALLENGE, "CHALLENGE for an unknown token_id")
    check_eq(len(body), len(kb), "CHALLENGE length, unknown vs known token")
    check_eq(sf.parse_challenge(body)[1], 0, "durable_seq for an unknown token")
    r.send(sf.proof_frame(os.urandom(32)))
    r.expect_error(0x02, "PROOF for an unknown token")
    r.close()
    # a known token_id with a proof from the wrong key, readings right behind it
    r = Raw()
    keys = sf.Keys(tok)
    r.handshake(keys, client_key=hashlib.sha256(b"not the key").digest())
    r.send(sf.reading_frame(b'{"early":1}') + sf.reading_frame(b'{"early":2}'))
    r.expect_error(0x02, "a bad PROOF with readings behind it")
    r.close()
    time.sleep(0.3)
    check_eq(rows_of("auth-1"), [], "readings stored from a failed proof")


def fake_server(token, good):
    """A one-trick server for the client's own check: it answers HELLO and
    PROOF like sluiced, with a WELCOME whose signature is right (good) or not.
    Returns (port, state): state has conns, proof_ok, after (frame types the
    client sent after WELCOME)."""
    keys = sf.Keys(token)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    st = {"conns": 0, "proof_ok": None, "after": [], "ls": ls}

    def read_frame(c, buf):
        while True:
            got = sf.split_frame(buf, limit=1 << 16)
            if got:
                del buf[:got[2]]
                return got[0], got[1]
            data = c.recv(65536)
            if not data:
                return None
            buf += data

    def serve():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            st["conns"] += 1
            c.settimeout(3)
            buf = bytearray()
            try:
                t, body = read_frame(c, buf)
                hello = sf.frame(t, body)
                chal = sf.challenge_frame(os.urandom(16), 0)
                c.sendall(chal)
                t, body = read_frame(c, buf)
                proof = sf.frame(t, body)
                auth = hello + chal
                ck = sf.xor(body, sf.client_signature(keys.stored_key, auth))
                st["proof_ok"] = hashlib.sha256(ck).digest() == keys.stored_key
                sig = sf.server_signature(keys.server_key, auth, proof)
                if not good:
                    sig = bytes([sig[0] ^ 1]) + sig[1:]
                c.sendall(sf.welcome_frame(sig, 0, 65536, 4096))
                while True:
                    f = read_frame(c, buf)
                    if f is None:
                        break
                    st["after"].append(f[0])
                    if f[0] in (sf.READING, sf.BATCH):
                        c.sendall(sf.ack_frame(1))
            except (OSError, TypeError):
                pass
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    return ls.getsockname()[1], st


@suite.case("a server whose WELCOME signature is wrong is refused (library and CLI): nothing sent "
            "after it, no retry; the same fake with the right signature is accepted")
def _():
    tok = "slk_fake0123456789abcdef0123456789abcdef0123"
    port, st = fake_server(tok, good=True)
    c = sf.FrameClient("127.0.0.1", port, tok, attempts=1, timeout=3)
    c.connect()
    c.send(b'{"x":1}')
    check(c.flush(3), "the good fake's ACK was not taken")
    c.close()
    st["ls"].close()
    check(st["proof_ok"], "the client's PROOF does not verify at the fake")
    check(sf.READING in st["after"], "no READING sent to a server that signed right: %r" %
          st["after"])
    port, st = fake_server(tok, good=False)
    c = sf.FrameClient("127.0.0.1", port, tok, attempts=3, timeout=3)
    try:
        c.connect()
        raise CaseFailed("connect() accepted a WELCOME with a wrong signature")
    except sf.ServerNotAuthenticated:
        pass
    check_eq(st["after"], [], "frames sent after a bad WELCOME")
    check_eq(st["conns"], 1, "connections to a server that failed its signature")
    rc, out, err = run_client("--host", "127.0.0.1", "--port", str(port), "--token", tok,
                              "--count", "5")
    check_eq(rc, 1, "CLI exit against a bad signature (%r %r)" % (out, err))
    check("signature" in err, "stderr %r" % err)
    check_eq(st["conns"], 2, "connections after the CLI run (one each)")
    check_eq(st["after"], [], "frames the CLI sent after a bad WELCOME")
    st["ls"].close()


def relay_session():
    """The library client through a relay that cuts the first 6 connections
    after 4,000 bytes each: 3,000 readings {"i":n}, n = their number."""
    if "relay" in S:
        return S["relay"]
    tok = device("relay-1")
    n = 3000
    relay = Relay(S["frame"], cut_after=4000, cuts=6)
    c = sf.FrameClient("127.0.0.1", relay.port, tok, attempts=10, backoff=0.02, timeout=5)
    try:
        c.connect()
        for i in range(1, n + 1):
            c.send(b'{"i":%d}' % i)
        ok = c.flush(30)
        c.close()
    finally:
        relay.close()
    S["relay"] = (tok, n, relay, c, ok)
    return S["relay"]


@suite.case("resumption: a relay cuts 6 connections mid-stream; the library client reconnects, "
            "resends from its oldest unacknowledged reading, and every reading 1..3000 is stored "
            "exactly once, under its own number")
def _():
    tok, n, relay, c, ok = relay_session()
    check(ok, "flush: %d readings still unacknowledged (acked %d)" % (c.held(), c.acked_seq))
    check_eq(relay.cut, 6, "connections cut")
    check(c.connections >= 7, "handshakes %d, want 7 or more" % c.connections)
    check_eq(c.acked_seq, n, "acked_seq")
    check_frame_rows(rows_of("relay-1"), range(1, n + 1), "through the relay",
                     lambda s: '{"i":%d}' % s)
    print("# %d connections, %d bytes out, %d in" % (c.connections, c.bytes_sent,
                                                     c.bytes_received))


@suite.case("a capture of the whole relayed session holds its token_id and readings but not the "
            "token, its hex or base64, K or ClientKey")
def _():
    tok, n, relay, c, ok = relay_session()
    cap = bytes(relay.capture)
    k = sf.Keys(tok)
    check(k.token_id in cap and b'{"i":1}' in cap and b'{"i":%d}' % n in cap,
          "the capture (%d bytes) does not hold the session" % len(cap))
    t = tok.encode()
    for what, secret in (("the token", t), ("the token's hex", t.hex().encode()),
                         ("the token's base64", base64.b64encode(t)), ("K", k.k),
                         ("K's hex", k.k.hex().encode()), ("ClientKey", k.client_key),
                         ("ClientKey's hex", k.client_key.hex().encode()),
                         ("the token without its prefix", t[4:])):
        check(secret not in cap, "%s is in the capture" % what)


def mdb_items(path):
    """{db name: [(key, value)]} of every DB of the LMDB file (mdb_dump -a -n)."""
    exe = need_tool("mdb_dump")
    p = subprocess.run([exe, "-a", "-n", path], capture_output=True, timeout=30)
    check(p.returncode == 0, "mdb_dump exit %d: %s" % (p.returncode, p.stderr.decode()[-300:]))
    out = {}
    name, pend, items = None, None, None
    for line in p.stdout.decode().splitlines():
        if line.startswith("database="):
            name = line.split("=", 1)[1]
        elif line == "HEADER=END":
            items = out.setdefault(name or "", [])
            pend = None
        elif line == "DATA=END":
            items, name = None, None
        elif line.startswith(" ") and items is not None:
            b = bytes.fromhex(line.strip())
            if pend is None:
                pend = b
            else:
                items.append((pend, b))
                pend = None
    return out


@suite.case("a stolen copy of the store does not authenticate: it holds StoredKey and ServerKey "
            "(tokens: u32 device, org, state, then both) but no token, K or ClientKey; no key "
            "or value works as a token (HTTP 401, frame ERROR 0x02) or as ClientKey")
def _():
    stolen = os.path.join(S["base"], "stolen.mdb")
    need_tool("mdb_dump")
    shutil.copyfile(os.path.join(S["data"], "sluice.mdb"), stolen)
    dbs = mdb_items(stolen)
    check("tokens" in dbs, "no tokens DB in the dump: %r" % sorted(dbs))
    tokens = dbs["tokens"]
    # not vacuous: every device of this file is there, with its verifiers
    for name, tok in S["tokens"].items():
        k = sf.Keys(tok)
        mine = [(key, v) for key, v in tokens if len(v) == 76 and v[12:44] == k.stored_key]
        check(mine, "device %s: no tokens value with its StoredKey" % name)
        check_eq(mine[0][1][44:76], k.server_key, "device %s: ServerKey after StoredKey" % name)
        check_eq(mine[0][0], hashlib.sha256(tok.encode()).digest(), "device %s: the key" % name)
    with open(stolen, "rb") as f:
        raw = f.read()
    for name, tok in S["tokens"].items():
        k = sf.Keys(tok)
        for what, secret in (("token", tok.encode()), ("token's hex", tok.encode().hex().encode()),
                             ("K", k.k), ("ClientKey", k.client_key)):
            check(secret not in raw, "device %s: its %s is in the store file" % (name, what))
    # no 32 bytes anywhere in the dump hash to a stored StoredKey: none is a ClientKey
    stored = {v[12:44] for _, v in tokens if len(v) == 76}
    check(stored, "no verifiers in the tokens DB")
    blobs = [b for items in dbs.values() for kv in items for b in kv]
    for b in blobs:
        for i in range(0, max(0, len(b) - 31)):
            check(hashlib.sha256(b[i:i + 32]).digest() not in stored,
                  "bytes of the store hash to a StoredKey: a ClientKey is stored")
    cands = set(blobs)
    for _, v in tokens:
        if len(v) == 76:
            cands.update((v[12:44], v[44:76]))
    http_port = S["d"].http
    refused_http = refused_frame = refused_key = 0
    for cand in sorted(cands):
        texts = [cand.hex()]
        if cand and all(32 < ch < 127 for ch in cand):
            texts.append(cand.decode())
        for t in texts:
            r = post(http_port, t, b"[]")
            check_eq(r.status, 401, "HTTP with a stolen %r as the token" % t[:70])
            refused_http += 1
        for t in [cand] + [x.encode() for x in texts]:
            if not t:
                continue
            raw_c = Raw()
            raw_c.handshake(sf.Keys(t))
            raw_c.expect_error(0x02, "frame with stolen bytes %r as the token" % t[:40])
            raw_c.close()
            refused_frame += 1
    # every verifier record, proofs from every 32-byte candidate as ClientKey
    keys32 = sorted(c for c in cands if len(c) == 32)
    for key, v in tokens:
        if len(v) != 76:
            continue
        fake = sf.Keys(b"")
        fake.token_id = key[:8]
        for ck in keys32:
            raw_c = Raw()
            raw_c.handshake(fake, client_key=ck, stored_key=v[12:44])
            raw_c.expect_error(0x02, "a proof from stolen bytes as ClientKey")
            raw_c.close()
            refused_key += 1
    # the harness itself logs in with what the device really holds
    raw_c = Raw()
    raw_c.login(sf.Keys(S["tokens"]["first"]))
    raw_c.close()
    print("# refused: %d HTTP tokens, %d frame tokens, %d ClientKey guesses" % (
        refused_http, refused_frame, refused_key))


@suite.case("protocol errors, each answered then closed: a header claiming 4 GiB (0x04, from the "
            "header alone, before and after auth), an unknown type (0x07), a READING before "
            "PROOF (0x07), a second HELLO (0x07), a non-minimal length, a BATCH whose count "
            "lies, SEQ over TCP, a timed reading before any TIME (0x07)")
def _():
    tok = device("proto-1")
    keys = sf.Keys(tok)
    fails = []

    def attempt(what, code, steps):
        r = Raw()
        try:
            steps(r)
            r.expect_error(code, what)
        except CaseFailed as e:
            fails.append(str(e))
        finally:
            r.close()

    huge = sf.varint(1 << 32)
    attempt("a READING header claiming 4 GiB after WELCOME", 0x04,
            lambda r: (r.login(keys), r.send(bytes([sf.READING]) + huge)))
    attempt("a HELLO header claiming 4 GiB", 0x04, lambda r: r.send(bytes([sf.HELLO]) + huge))
    attempt("an unknown frame type 0x55 after WELCOME", 0x07,
            lambda r: (r.login(keys), r.send(b"\x55\x00")))
    attempt("an unknown frame type 0x55 first", 0x07, lambda r: r.send(b"\x55\x00"))

    def reading_before_proof(r):
        r.hello(keys.token_id)
        r.expect(sf.CHALLENGE, "CHALLENGE")
        r.send(sf.reading_frame(b'{"before":"proof"}'))

    attempt("a READING before PROOF", 0x07, reading_before_proof)
    attempt("a second HELLO after WELCOME", 0x07,
            lambda r: (r.login(keys), r.hello(keys.token_id)))
    attempt("a READING whose length is 0x80 0x00 (not minimal)", 0x07,
            lambda r: (r.login(keys), r.send(b"\x10\x80\x00")))
    attempt("a BATCH of count 3 holding 2 readings", 0x07,
            lambda r: (r.login(keys), r.send(sf.frame(sf.BATCH, b"\x03" + sf.batch_body(
                [b'{"lie":1}', b'{"lie":2}'])[1:]))))
    attempt("SEQ (UDP only) over TCP", 0x07,
            lambda r: (r.login(keys), r.send(sf.frame(sf.SEQ, sf.varint(1)))))
    attempt("a timed READING before any TIME", 0x07,
            lambda r: (r.login(keys), r.send(sf.timed_reading_frame(5, b'{"untimed":1}'))))
    check(not fails, "; ".join(fails))
    check_eq(rows_of("proto-1"), [], "stored readings")


@suite.case("versioning (§11): a HELLO of version 2 gets ERROR 0x01 listing the versions spoken "
            "(\"speaks 1\"), then close")
def _():
    keys = sf.Keys(S["tokens"]["first"])
    r = Raw()
    r.send(sf.frame(sf.HELLO, bytes([2, 0]) + keys.token_id + os.urandom(16) + b"\x00"))
    code, _, msg = r.expect_error(0x01, "HELLO version 2")
    check("speaks 1" in msg, "ERROR 0x01 message %r does not list version 1" % msg)
    r.close()


@suite.case("handshake deadline: a silent connection, and one that stops after HELLO, get ERROR "
            "0x09 and are closed after 10 s (not before 9, by 11.5)")
def _():
    tok = device("slow-1")
    t0 = time.monotonic()
    silent = Raw(timeout=15)
    half = Raw(timeout=15)
    half.hello(sf.Keys(tok).token_id)
    half.expect(sf.CHALLENGE, "CHALLENGE")
    fails = []
    for what, r in (("silent", silent), ("after HELLO", half)):
        try:
            r.expect_error(0x09, what, timeout=13)
            took = time.monotonic() - t0
            if not 9.0 <= took <= 11.5:
                fails.append("%s: closed after %.1fs" % (what, took))
        except CaseFailed as e:
            fails.append(str(e))
        r.close()
    check(not fails, "; ".join(fails))


@suite.case("takeover: a second connection of the same token ends the first with ERROR 0x06; the "
            "second's WELCOME counts the first's reading, its own reading is numbered next")
def _():
    tok = device("take-1")
    keys = sf.Keys(tok)
    a = Raw()
    a.login(keys)
    a.send(sf.reading_frame(b'{"conn":"a"}'))
    check_eq(sf.parse_num(a.expect(sf.ACK, "ACK on the first"), "ACK"), 1, "first's ACK")
    b = Raw()
    auth, proof = b.handshake(keys)
    a.expect_error(0x06, "the first connection")
    w = sf.parse_welcome(b.expect(sf.WELCOME, "the second's WELCOME"))
    check(w[0] == sf.server_signature(keys.server_key, auth, proof), "second's signature")
    check_eq(w[1], 1, "the second's WELCOME durable_seq")
    b.send(sf.reading_frame(b'{"conn":"b"}'))
    check_eq(sf.parse_num(b.expect(sf.ACK, "ACK on the second"), "ACK"), 2, "second's ACK")
    b.send(sf.frame(sf.BYE))
    check(closed_within(b.s, 3), "BYE: not closed")
    a.close()
    b.close()
    check_frame_rows(rows_of("take-1"), [1, 2], "takeover",
                     lambda s: '{"conn":"%s"}' % "ab"[s - 1])


@suite.case("one round trip: readings sent right behind PROOF, before WELCOME, are stored; with "
            "next_seq 0 they are numbered after WELCOME's durable_seq")
def _():
    tok = device("rtt-1")
    keys = sf.Keys(tok)
    for run, first in ((0, 1), (1, 4)):
        r = Raw()
        h = r.hello(keys.token_id, 0)
        body = r.expect(sf.CHALLENGE, "CHALLENGE")
        auth = h + sf.frame(sf.CHALLENGE, body)
        proof = sf.proof_frame(sf.client_proof(keys.client_key, keys.stored_key, auth))
        r.send(proof + b"".join(sf.reading_frame(b'{"rtt":%d}' % (first + i)) for i in range(3)))
        w = sf.parse_welcome(r.expect(sf.WELCOME, "WELCOME after pipelined readings"))
        check_eq(w[1], first - 1, "WELCOME durable_seq, connection %d" % run)
        check_eq(sf.parse_num(r.expect(sf.ACK, "ACK"), "ACK"), first + 2, "ACK, connection %d" % run)
        r.send(sf.frame(sf.BYE))
        check(closed_within(r.s, 3), "BYE: not closed")
        r.close()
    check_frame_rows(rows_of("rtt-1"), range(1, 7), "pipelined", lambda s: '{"rtt":%d}' % s)


@suite.case("a HELLO carrying a ticket this server never issued (flags bit 0) goes on with "
            "CHALLENGE; the proof over that HELLO as sent logs in (§5)")
def _():
    tok = device("ticket-1")
    keys = sf.Keys(tok)
    r = Raw()
    h = sf.hello_frame(keys.token_id, os.urandom(16), 0, ticket=os.urandom(40))
    check_eq(h[3], 1, "flags of the HELLO built")
    r.send(h)
    body = r.expect(sf.CHALLENGE, "answer to a HELLO with a ticket")
    auth = h + sf.frame(sf.CHALLENGE, body)
    proof = sf.proof_frame(sf.client_proof(keys.client_key, keys.stored_key, auth))
    r.send(proof)
    w = sf.parse_welcome(r.expect(sf.WELCOME, "WELCOME"))
    check(w[0] == sf.server_signature(keys.server_key, auth, proof), "WELCOME's signature")
    check_eq(w[4], b"", "ticket issued")
    r.send(sf.reading_frame(b'{"ticket":1}'))
    check_eq(sf.parse_num(r.expect(sf.ACK, "ACK"), "ACK"), 1, "ACK")
    r.close()
    check_frame_rows(rows_of("ticket-1"), [1], "after a ticket HELLO", lambda s: '{"ticket":1}')


@suite.case("a gap: HELLO next_seq 100 on a device at 2 gets WELCOME durable_seq 99, its reading "
            "is stored as 100; a resend of 1..2 is acknowledged and not stored again")
def _():
    tok = device("gap-1")
    keys = sf.Keys(tok)
    c = sf.FrameClient("127.0.0.1", S["frame"], tok, attempts=1, timeout=5)
    c.send(b'{"g":1}')
    c.send(b'{"g":2}')
    check(c.flush(5), "first two not acknowledged")
    c.close()
    r = Raw()
    w = r.login(keys, next_seq=100)
    check_eq(w[1], 99, "WELCOME durable_seq after a gap")
    r.send(sf.reading_frame(b'{"g":100}'))
    check_eq(sf.parse_num(r.expect(sf.ACK, "ACK"), "ACK"), 100, "ACK after the gap")
    r.send(sf.frame(sf.BYE))
    check(closed_within(r.s, 3), "BYE: not closed")
    r.close()
    r = Raw()
    w = r.login(keys, next_seq=1)
    check_eq(w[1], 100, "WELCOME durable_seq for a resend")
    r.send(sf.reading_frame(b'{"g":"again"}') * 2 + sf.frame(sf.BYE))
    check(closed_within(r.s, 3), "BYE: not closed")
    r.close()
    check_frame_rows(rows_of("gap-1"), [1, 2, 100], "with a gap", lambda s: '{"g":%d}' % s)


@suite.case("a reading over --max-body (1 MiB + 1) inside max_frame: ERROR 0x04 naming its seq, "
            "then closed; the readings acknowledged before it stay, it is not stored")
def _():
    tok = device("big-1")
    keys = sf.Keys(tok)
    r = Raw(timeout=10)
    w = r.login(keys)
    check(w[2] > (1 << 20) + 16, "max_frame %d is not above --max-body" % w[2])
    r.send(sf.reading_frame(b'{"small":1}'))
    check_eq(sf.parse_num(r.expect(sf.ACK, "ACK"), "ACK"), 1, "ACK of the small one")
    r.send(sf.reading_frame(b"x" * ((1 << 20) + 1)))
    code, seq, msg = r.expect_error(0x04, "a reading of 1 MiB + 1", timeout=10)
    check_eq(seq, 2, "ERROR 0x04 seq (the first reading not stored; %r)" % msg)
    r.close()
    check_frame_rows(rows_of("big-1"), [1], "around the large one", lambda s: '{"small":1}')
    # the library client drops the large one, numbers the rest anew, goes on
    big = b"y" * ((1 << 20) + 1)
    c = sf.FrameClient("127.0.0.1", S["frame"], tok, attempts=3, timeout=10)
    dropped = []
    for p in (b'{"small":2}', big, b'{"small":3}', None, b'{"small":4}'):
        try:
            if p is None:
                check(c.flush(10), "flush: %d held" % c.held())
            else:
                c.send(p)
        except sf.FrameError as e:
            check_eq(e.code, 0x04, "the library's error")
            dropped.append(e.dropped)
    check(c.flush(10), "final flush: %d held" % c.held())
    c.close()
    check_eq([len(d or b"") for d in dropped], [len(big)], "readings the client dropped")
    check_frame_rows(rows_of("big-1"), [1, 2, 3, 4], "the library around the large one",
                     lambda s: '{"small":%d}' % s)


@suite.case("TIME then timed READING and timed BATCH: device_ts is t0 plus the dt's; PING gets "
            "PONG")
def _():
    tok = device("time-1")
    keys = sf.Keys(tok)
    r = Raw()
    r.login(keys)
    t0 = 1700000000000  # 2023-11-14T22:13:20Z
    items = [(100, b'{"n":3}'), (150, b'{"n":4}')]
    tbatch = sf.frame(sf.BATCH_TIMED, sf.varint(len(items)) + b"".join(
        sf.varint(dt) + sf.varint(len(p)) + p for dt, p in items))
    r.send(sf.frame(sf.PING))
    check_eq(r.frame(), (sf.PONG, b""), "answer to PING")
    r.send(sf.frame(sf.TIME, sf.varint(t0)) + sf.timed_reading_frame(0, b'{"n":1}') +
           sf.timed_reading_frame(250, b'{"n":2}') + tbatch + sf.frame(sf.BYE))
    acks = []
    while True:
        f = r.frame()
        if f is None:
            break
        check_eq(f[0], sf.ACK, "frame after BYE")
        acks.append(sf.parse_num(f[1], "ACK"))
    check(acks and acks[-1] == 4, "ACKs after BYE: %r" % acks)
    r.close()
    rows = rows_of("time-1")
    check_frame_rows(rows, range(1, 5), "timed", lambda s: '{"n":%d}' % s)
    got = {x["device_seq"]: x.get("device_ts") for x in rows}
    want = {1: "2023-11-14T22:13:20.000000Z", 2: "2023-11-14T22:13:20.250000Z",
            3: "2023-11-14T22:13:20.350000Z", 4: "2023-11-14T22:13:20.500000Z"}
    check_eq(got, want, "device_ts by device_seq")


@suite.case("takeover under load: the first connection's burst of 10,000 unacknowledged "
            "readings is cut by a second one; the second's WELCOME durable_seq is final: the "
            "first's stored readings are exactly 1..durable_seq, the second's follow")
def _():
    tok = device("take-2")
    keys = sf.Keys(tok)
    a = Raw()
    a.login(keys)
    burst = b"".join(sf.reading_frame(b'{"a":%d}' % i) for i in range(1, 10001))
    a.s.setblocking(False)  # as much as the socket takes: the server stops at its window
    try:
        a.send(burst)
    except BlockingIOError:
        pass
    a.s.setblocking(True)
    a.s.settimeout(5)
    b = Raw()
    auth, proof = b.handshake(keys)
    a.expect_error(0x06, "the first connection")
    a.close()
    w = sf.parse_welcome(b.expect(sf.WELCOME, "the second's WELCOME"))
    d = w[1]
    b.send(b"".join(sf.reading_frame(b'{"b":%d}' % i) for i in range(1, 11)) + sf.frame(sf.BYE))
    acks = []
    while True:
        f = b.frame()
        if f is None:
            break
        acks.append(sf.parse_num(f[1], "ACK"))
    b.close()
    check_eq(acks[-1:], [d + 10], "the second's last ACK")
    rows = rows_of("take-2")
    check_frame_rows(rows, range(1, d + 11), "after a takeover")
    for r in rows:
        want = '{"a":%d}' % r["device_seq"] if r["device_seq"] <= d else '{"b":%d}' % (
            r["device_seq"] - d)
        check(same_payload(r, want), "device_seq %d holds %r, want %s" % (
            r["device_seq"], r.get("payload"), want))
    print("# the first connection had %d of 10000 stored when it was taken over" % d)


@suite.case("idle deadline (--idle-timeout 1s on a daemon of its own): a quiet session gets "
            "ERROR 0x09 naming its next reading; one that PINGs every 0.3 s lives on")
def _():
    base = tmpdir("sluice-frame-idle-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("idle")
    tok = cli.add_device("idle", "idle-1")
    d = Daemon(SLUICED, data, ["--frame", "127.0.0.1:0", "--idle-timeout", "1s"], name="idle")
    d.start()
    try:
        with open(d.ports_file) as f:
            port = json.load(f)["frame"]
        keys = sf.Keys(tok)
        quiet, busy = Raw(port), Raw(port)
        quiet.login(keys)
        quiet.send(sf.reading_frame(b'{"q":1}'))
        check_eq(sf.parse_num(quiet.expect(sf.ACK, "ACK"), "ACK"), 1, "ACK")
        t0 = time.monotonic()
        code, seq, msg = quiet.expect_error(0x09, "an idle session", timeout=4)
        took = time.monotonic() - t0
        check(0.7 <= took <= 2.5, "idle session closed after %.1fs with --idle-timeout 1s" % took)
        check_eq(seq, 2, "ERROR 0x09 seq (%r)" % msg)
        quiet.close()
        busy.login(keys)
        for _ in range(8):
            busy.send(sf.frame(sf.PING))
            check_eq(busy.frame(), (sf.PONG, b""), "PONG")
            time.sleep(0.3)
        busy.send(sf.reading_frame(b'{"q":2}'))
        check_eq(sf.parse_num(busy.expect(sf.ACK, "ACK after PINGs"), "ACK"), 2, "ACK")
        busy.close()
    finally:
        d.kill()


@suite.case("the C client example (sluice-frame-send, same CLI): 1,000 readings, exit 0, each "
            "stored once")
def _():
    exe = os.environ.get("SLUICE_FRAME_SEND") or os.path.join(os.path.dirname(SLUICED),
                                                              "examples", "sluice-frame-send")
    if not os.access(exe, os.X_OK):
        skip("%s is not built" % exe)
    tok = device("c-1")
    text = '{"c":1}'
    p = subprocess.run([exe, "--host", "127.0.0.1", "--port", str(S["frame"]), "--token", tok,
                        "--count", "1000", "--payload", text], capture_output=True, timeout=60)
    check_eq(p.returncode, 0, "exit (%r)" % (p.stdout + p.stderr).decode()[-400:])
    check_frame_rows(rows_of("c-1"), range(1, 1001), "C client", lambda s: text)


@suite.case("SIGTERM while the library client streams: its ACKs come, then ERROR 0x08; every "
            "acknowledged reading is stored once; after a restart the rest goes in")
def _():
    tok = device("term-1")
    n, at = 6000, 2000
    c = sf.FrameClient("127.0.0.1", S["frame"], tok, attempts=2, backoff=0.05, timeout=5)
    c.connect()
    gave_up = None
    i = 0
    try:
        for i in range(1, n + 1):
            c.send(b'{"s":%d}' % i)
            if i == at:
                S["d"].proc.send_signal(signal.SIGTERM)
        c.flush(10)
    except ConnectionError as e:
        gave_up = e
    rc = S["d"].proc.wait(15)
    check_eq(rc, 0, "sluiced exit after SIGTERM")
    S["d"].kill()
    codes = [e.code for e in c.errors]
    check(0x08 in codes, "no ERROR 0x08 (errors %r, gave up: %s)" % (c.errors, gave_up))
    e8 = c.errors[codes.index(0x08)]
    check(c.acked_seq > 0, "nothing acknowledged before the shutdown")
    if e8.seq:
        check(c.acked_seq >= e8.seq - 1, "ERROR 0x08 says %d is the first not stored, but only "
              "%d was acknowledged before it" % (e8.seq, c.acked_seq))
    acked = c.acked_seq
    start()
    rows = rows_of("term-1")
    have = collections.Counter(r.get("device_seq") for r in rows)
    S["term"] = (e8, max(have) if have else 0)
    lost = [s for s in range(1, acked + 1) if have[s] != 1]
    check(not lost, "acknowledged readings not stored exactly once: %s (counts %s)" % (
        lost[:10], [have[s] for s in lost[:10]]))
    print("# SIGTERM after %d sent: %d acknowledged, ERROR 0x08 seq %d %r, %d stored" % (
        at, acked, e8.seq, e8.message, len(rows)))
    c.port = S["frame"]
    for j in range(i + 1, n + 1):
        c.send(b'{"s":%d}' % j)
    check(c.flush(20), "after the restart: %d still unacknowledged" % c.held())
    c.close()
    check_frame_rows(rows_of("term-1"), range(1, n + 1), "after the restart",
                     lambda s: '{"s":%d}' % s)


@suite.case("ERROR 0x08 names the first reading not stored (§2: seq, 0 only when none): readings "
            "sent after the last ACK are not stored, so its seq is that ACK + 1")
def _():
    if "term" not in S:
        skip("the SIGTERM case did not get ERROR 0x08")
    e8, stored_max = S["term"]
    check_eq(stored_max, e8.acked, "the highest reading stored before the restart")
    if e8.sent_upto <= e8.acked:
        # every reading sent was stored: 0 (none) is as true as acked + 1
        check(e8.seq in (0, e8.acked + 1), "ERROR 0x08 seq %d with every reading sent (1..%d) "
              "stored" % (e8.seq, e8.acked))
        return
    check_eq(e8.seq, e8.acked + 1, "ERROR 0x08 seq with readings %d..%d sent and not stored" % (
        e8.acked + 1, e8.sent_upto))


@suite.case("kill -9 under frame load: every acknowledged seq survives in log cat; the client "
            "resumes on the restarted daemon and every reading is stored (acknowledged ones "
            "exactly once)")
def _():
    tok = device("kill-1")
    n = 8000
    c = sf.FrameClient("127.0.0.1", S["frame"], tok, attempts=2, backoff=0.05, timeout=5)
    c.connect()
    killed_at = held_at_kill = None
    i = 0
    try:
        for i in range(1, n + 1):
            c.send(b'{"k":%d}' % i)
            if killed_at is None and i >= 2000 and c.acked_seq > 0 and c.held() > 0:
                S["d"].proc.kill()  # SIGKILL, readings in flight
                killed_at, held_at_kill = i, c.held()
        c.flush(10)
    except ConnectionError:
        pass
    check(killed_at is not None, "never killed: nothing in flight after an ACK")
    S["d"].kill()
    acked = c.acked_seq
    start()
    rows = rows_of("kill-1")
    have = collections.Counter(r.get("device_seq") for r in rows)
    lost = [s for s in range(1, acked + 1) if have[s] != 1]
    check(not lost, "acknowledged before the kill but not stored exactly once: %s (counts %s)" % (
        lost[:10], [have[s] for s in lost[:10]]))
    print("# killed after %d sent, %d held: %d acknowledged, %d stored" % (
        killed_at, held_at_kill, acked, len(rows)))
    c.port = S["frame"]
    for j in range(i + 1, n + 1):
        c.send(b'{"k":%d}' % j)
    check(c.flush(20), "after the restart: %d still unacknowledged" % c.held())
    c.close()
    rows = rows_of("kill-1")
    have = collections.Counter(r.get("device_seq") for r in rows)
    missing = [s for s in range(1, n + 1) if not have[s]]
    twice = [s for s in range(1, acked + 1) if have[s] != 1]
    check(not missing and not twice, "missing %s; acknowledged ones not once %s" % (
        missing[:10], twice[:10]))
    extra = sorted(s for s in have if s is None or not 1 <= s <= n)
    check(not extra, "unexpected device_seq %s" % extra[:10])
    dups = [s for s in have if have[s] > 1]
    if dups:
        print("# %d unacknowledged readings stored twice (e.g. %s)" % (len(dups), dups[:5]))
    for r in rows:
        check(same_payload(r, '{"k":%d}' % r["device_seq"]), "payload of %r" % r)


@suite.case("--frames: the same protocol inside TLS (the certificate of --https): the handshake, "
            "readings stored once with proto frame, ACKs, and plaintext frames refused")
def _():
    import ssl
    base = tmpdir("sluice-frames-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    tok = cli.add_device("acme", "tls-1")
    d = Daemon(SLUICED, data, ["--frames", "127.0.0.1:0"], name="frames").start()
    try:
        with open(d.ports_file) as f:
            port = json.load(f).get("frames")
        check(isinstance(port, int) and port > 0, "ports file has no frames")
        wait_token_live(d.http, tok)
        ctx = ssl.create_default_context(cafile=os.path.join(data, "tls", "server.crt"))
        ctx.check_hostname = False
        raw = Raw(port)
        raw.s = ctx.wrap_socket(raw.s, server_hostname="localhost")
        keys = sf.Keys(tok)
        w = raw.login(keys)
        check_eq(w[1], 0, "WELCOME durable_seq of a new device")
        raw.send(b"".join(sf.reading_frame(b'{"s":%d}' % i) for i in range(100)))
        acked = 0
        while acked < 100:
            f = raw.frame()
            check(f is not None and f[0] == sf.ACK, "want ACK, got %r" % (f,))
            acked = sf.parse_num(f[1], "ACK")
        raw.close()
        rows = [r for r in cli.log_cat("acme") if r.get("device") == "tls-1"]
        check_eq(sorted(r.get("device_seq") for r in rows), list(range(1, 101)), "stored seqs")
        check(all(r.get("proto") == "frame" for r in rows), "proto of TLS frames")
        # the TLS port takes no plaintext: a bare HELLO gets no CHALLENGE
        plain = socket.create_connection(("127.0.0.1", port), timeout=5)
        plain.sendall(sf.hello_frame(keys.token_id, os.urandom(16), 0))
        check(closed_within(plain, 12), "a plaintext HELLO on --frames was not closed")
        plain.close()
    finally:
        d.terminate(10)


if __name__ == "__main__":
    suite.run(setup)
