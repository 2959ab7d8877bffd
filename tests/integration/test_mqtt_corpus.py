#!/usr/bin/env python3
"""The Mosquitto broker's MQTT packet sequences (../shared/corpora/mqtt-mosquitto,
EPL-2.0 OR EDL-1.0, data only) replayed against a real sluiced.

Each corpus test is a sequence of packets sent and answers expected from
Mosquitto (notation in ../shared/corpora/README.md). Here, as an ingest-only
server with device tokens:

- every CONNECT carries the test token: the runner's own CONNECT (groups with
  "connect", client id = the test name) has password = token; a CONNECT the
  test sends without credentials gets the username+password flags and fields
  appended (remaining length recomputed); one with a password has it replaced
  by the token; one with only a username gets a password (= token) added, so
  that whatever the test does to the username stays in it. A CONNECT that does
  not parse is sent exactly as written.
- answers our contract shares with Mosquitto are compared: CONNACK (3.1.1 whole;
  5.0 flags and reason, not the properties), PUBACK/PUBREC/PUBCOMP (type, id,
  reason; a missing reason is 0x00), PINGRESP, UNSUBACK's packet id.
  Broker-only answers are not: a SUBACK must carry the same packet id and as
  many codes, each a failure (>= 0x80); PUBLISH deliveries to subscribers
  (retained or not) and the PUBRELs of deliveries never come, and
  "external_publish" helpers (which only make deliveries) are not run.
- expect_disconnect true (the default): the connection is closed within 2 s;
  before the close, MQTT 5 may hear a DISCONNECT with reason >= 0x80 and a
  refused CONNECT its CONNACK refusal. expect_disconnect false: still open, a
  PINGREQ is answered with PINGRESP.

DIFFER below lists, with the reason, the cases whose expectation for sluice is
not Mosquitto's. Every sequence that fails is printed with its bytes; the file
fails when any did. Cases run on 12 connections at a time.
"""
import json
import os
import re
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import Cli, Daemon, Suite, binaries, check, tmpdir  # noqa: E402

SKIP = 77


def corpus_dir():
    """SLUICE_CORPORA (what tests/meson.build passes the unit tests), else
    SLUICE_SRC/../shared/corpora, else next to this source tree."""
    cands = []
    if os.environ.get("SLUICE_CORPORA"):
        cands.append(os.environ["SLUICE_CORPORA"])
    if os.environ.get("SLUICE_SRC"):
        cands.append(os.path.join(os.environ["SLUICE_SRC"], "..", "shared", "corpora"))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cands.append(os.path.join(root, "..", "shared", "corpora"))
    for c in cands:
        d = os.path.join(c, "mqtt-mosquitto")
        if os.path.isdir(d):
            return os.path.abspath(d)
    return None


CORPUS = corpus_dir()
if not CORPUS:
    print("# skip: no mqtt-mosquitto corpus (set SLUICE_CORPORA, or ../shared/corpora)")
    sys.exit(SKIP)
SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=85)
S = {}

# ---- the corpus notation ----


def varint(n):
    """Also encodes values >= 2^28 (5+ bytes), as the corpus means to."""
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def parse_payload(text):
    out = b""
    for tok in re.findall(r"'[^']*'|\S+", text):
        c = tok[0]
        if c == "'":
            out += tok[1:-1].encode()
        elif c == "i":
            out += int(tok[1:]).to_bytes(1, "big")
        elif c in "Hkms":
            out += int(tok[1:]).to_bytes(2, "big")
        elif c == "L":
            out += int(tok[1:]).to_bytes(4, "big")
        elif c in "rv":
            out += varint(int(tok[1:]))
        else:
            out += bytes.fromhex(tok)
    return out


def mstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def read_varint(b, i, limit=4):
    n, mult = 0, 1
    for k in range(limit):
        if i + k >= len(b):
            return None, i
        n += (b[i + k] & 0x7F) * mult
        mult *= 128
        if not b[i + k] & 0x80:
            return n, i + k + 1
    return None, i


def with_token(data, token):
    """The CONNECT at the start of data with the token put in (see the module
    comment), and whatever follows it untouched; None when it does not parse."""
    rem, i = read_varint(data, 1)
    if rem is None or len(data) < i + rem:
        return None
    body, rest = data[i:i + rem], data[i + rem:]
    try:
        p = 0

        def take(n):
            nonlocal p
            if p + n > len(body):
                raise ValueError
            v = body[p:p + n]
            p += n
            return v

        def take_str():
            return take(struct.unpack(">H", take(2))[0])

        take_str()  # protocol name
        level = take(1)[0]
        flags = take(1)[0]
        take(2)  # keepalive
        if level == 5:
            n, q = read_varint(body, p)
            if n is None:
                return None
            p = q
            take(n)
        take_str()  # client id
        if flags & 0x04:
            if level == 5:
                n, q = read_varint(body, p)
                if n is None:
                    return None
                p = q
                take(n)
            take_str()
            take_str()
        head = body[:p]
        user = take_str() if flags & 0x80 else None
        pw = take_str() if flags & 0x40 else None
        if p != len(body):
            return None
    except (ValueError, struct.error):
        return None
    flags_at = 2 + struct.unpack(">H", head[:2])[0] + 1
    if user is None and pw is None:
        flags |= 0xC0
        user = b"corpus"
    flags |= 0x40
    head = head[:flags_at] + bytes([flags]) + head[flags_at + 1:]
    out = head + (mstr(user) if user is not None else b"") + mstr(token)
    return data[:1] + varint(len(out)) + out + rest


def default_connect(name, ver, token):
    if ver == 3:
        vh = mstr("MQIsdp") + bytes([3, 0xC2]) + struct.pack(">H", 60)
    else:
        vh = mstr("MQTT") + bytes([ver, 0xC2]) + struct.pack(">H", 60)
        if ver == 5:
            vh += b"\x00"
    body = vh + mstr(name[:100]) + mstr("corpus") + mstr(token)
    return b"\x10" + varint(len(body)) + body


# ---- what differs for sluice, and why ----
# (file, group regex, name regex, override, why). override keys:
#   "disconnect": the expect_disconnect for sluice;
#   "connack": the CONNACK reason sluice answers in place of the expected one
#              (the connection is then closed).
DIFFER = [
    ("CONNECT.json", r"^v3\.1 ", r"ok",
     {"disconnect": True, "connack": 0x01},
     "MQTT 3.1 (MQIsdp, level 3) is not spoken: CONNACK 0x01 unacceptable protocol version"),
    (None, r"", r"",
     "acks-a-delivery",
     "the client acknowledges a PUBLISH delivery (PUBACK/PUBREC/PUBCOMP) that an ingest-only "
     "server never made: an ack for an id it never sent is a protocol error (v5 DISCONNECT 0x82)"),
]


def differ(fname, group, test):
    for f, g, n, over, why in DIFFER:
        if f and f != fname:
            continue
        if not re.search(g, group) or not re.search(n, test["name"]):
            continue
        if over == "acks-a-delivery":
            seen_delivery = False
            hit = False
            for m in test["msgs"]:
                if m["type"] == "external_publish":
                    seen_delivery = True
                elif m["type"] == "recv" and parse_payload(m["payload"])[:1] and \
                        parse_payload(m["payload"])[0] >> 4 == 3:
                    seen_delivery = True
                elif m["type"] == "send" and seen_delivery:
                    b = parse_payload(m["payload"])
                    if b and b[0] >> 4 in (4, 5, 7):
                        hit = True
            if hit:
                return {"disconnect": True}, why
            continue
        return over, why
    return None, None


# ---- the runner ----

class Closed(Exception):
    pass


class Mismatch(Exception):
    pass


class Wire:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, b):
        try:
            self.s.sendall(b)
        except OSError:
            self.eof = True  # the server closed already; what it said is still readable

    def packet(self, timeout):
        """(first byte, body), or raises Closed / socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, i = read_varint(self.buf, 1)
                if n is not None and len(self.buf) >= i + n:
                    pk = (self.buf[0], self.buf[i:i + n])
                    self.buf = self.buf[i + n:]
                    return pk
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                raise Closed(self.buf)
            self.buf += d

    def close(self):
        self.s.close()


def hx(b):
    return b.hex(" ")


def ack_fields(body, ver):
    pid = body[:2]
    reason = body[2] if ver == 5 and len(body) > 2 else 0
    return pid, reason


def run_one(port, token, ver, connect, name, msgs, expect_disconnect, over):
    """None when the sequence behaved; otherwise what went wrong, with bytes."""
    log = []  # what was sent and heard, for the report
    w = Wire(port)
    try:
        if connect:
            c = default_connect(name, ver, token)
            w.send(c)
            log.append("> " + hx(c))
            t, b = w.packet(2)
            log.append("< %02x %s" % (t, hx(b)))
            if t != 0x20 or b[:2] != b"\x00\x00":
                return "runner's CONNECT refused", log
        for m in msgs:
            if m["type"] == "send":
                b = parse_payload(m["payload"])
                if b and b[0] >> 4 == 1:
                    b = with_token(b, token) or b
                w.send(b)
                log.append("> " + hx(b))
            elif m["type"] == "recv":
                want = parse_payload(m["payload"])
                wt = want[0] >> 4
                wrem, wi = read_varint(want, 1)
                wbody = want[wi:]
                if wt == 3 or wt == 6:
                    continue  # a delivery (and its PUBREL): broker-only
                if wt == 2 and over and "connack" in over:
                    wbody = bytes([0, over["connack"]])
                try:
                    t, body = w.packet(2)
                except Closed:
                    if wt == 14 or (expect_disconnect and wt == 2 and wbody[1:2] != b"\x00"):
                        # a DISCONNECT (or a refusal) Mosquitto says before closing:
                        # closing without it is allowed
                        log.append("< EOF (want %s)" % hx(want))
                        return finish_closed(w, log, expect_disconnect)
                    log.append("< EOF")
                    return "closed where %s was expected" % hx(want), log
                except socket.timeout:
                    log.append("< (nothing in 2 s)")
                    return "no answer where %s was expected" % hx(want), log
                log.append("< %02x %s" % (t, hx(body)))
                err = compare(wt, want[0], wbody, t, body, ver)
                if err:
                    return err, log
        return finish(w, log, expect_disconnect, ver)
    except socket.timeout:
        return "timed out", log
    except Closed:
        return "closed unexpectedly", log
    finally:
        w.close()


def compare(wt, wfirst, wbody, t, body, ver):
    if wt == 2:  # CONNACK: 3.1.1 whole, 5.0 flags and reason
        if t != 0x20 or (body if ver != 5 else body[:2]) != (wbody if ver != 5 else wbody[:2]):
            return "CONNACK: want %s" % hx(wbody)
    elif wt in (4, 5, 7):  # PUBACK, PUBREC, PUBCOMP
        if t != wfirst or ack_fields(body, ver) != ack_fields(wbody, ver):
            return "ack: want %02x %s" % (wfirst, hx(wbody))
    elif wt == 9:  # SUBACK: id and count the same, every code a failure
        props = 0
        wprops = 0
        if ver == 5:
            n, i = read_varint(body, 2)
            props = (i - 2) + (n or 0)
            n, i = read_varint(wbody, 2)
            wprops = (i - 2) + (n or 0)
        codes, wcodes = body[2 + props:], wbody[2 + wprops:]
        if t != 0x90 or body[:2] != wbody[:2] or len(codes) != len(wcodes) or \
                any(c < 0x80 for c in codes):
            return "SUBACK: want id %s and %d failure codes" % (hx(wbody[:2]), len(wcodes))
    elif wt == 11:  # UNSUBACK: id (and in 5.0 as many codes)
        if t != 0xB0 or body[:2] != wbody[:2]:
            return "UNSUBACK: want id %s" % hx(wbody[:2])
    elif wt == 13:
        if (t, body) != (0xD0, b""):
            return "PINGRESP: want d0 00"
    elif wt == 14:  # a DISCONNECT Mosquitto sends: ours must carry a failure
        if t != 0xE0 or (body[:1] or b"\x00")[0] < 0x80:
            return "DISCONNECT: want a reason >= 0x80"
    else:
        if (t, body) != (wfirst, wbody):
            return "want %02x %s" % (wfirst, hx(wbody))
    return None


def finish_closed(w, log, expect_disconnect):
    if expect_disconnect:
        return None, log
    return "closed, want the connection open", log


def finish(w, log, expect_disconnect, ver):
    if expect_disconnect:
        deadline = time.monotonic() + 2
        while True:
            try:
                t, body = w.packet(max(0.01, deadline - time.monotonic()))
            except Closed:
                return None, log
            except socket.timeout:
                log.append("< (still open after 2 s)")
                return "still open 2 s after the sequence", log
            log.append("< %02x %s" % (t, hx(body)))
            if t == 0xE0 and ver == 5 and body[:1] and body[0] >= 0x80:
                continue
            if t == 0x20 and body[1:2] != b"\x00":
                continue  # a refused CONNECT's CONNACK
            return "unexpected packet before the close", log
    w.send(b"\xc0\x00")
    log.append("> c0 00")
    try:
        t, body = w.packet(2)
    except Closed:
        log.append("< EOF")
        return "closed, want the connection open (PINGREQ)", log
    except socket.timeout:
        log.append("< (nothing in 2 s)")
        return "no PINGRESP", log
    log.append("< %02x %s" % (t, hx(body)))
    if (t, body) != (0xD0, b""):
        return "PINGRESP: want d0 00", log
    return None, log


def sequences():
    """(file, group, test, ver, connect, expect_disconnect) in corpus order."""
    out = []
    for fname in sorted(f for f in os.listdir(CORPUS) if f.endswith(".json")):
        with open(os.path.join(CORPUS, fname)) as f:
            groups = json.load(f)
        for g in groups:
            if g.get("disable"):
                continue
            for t in g["tests"]:
                out.append((fname, g["group"], t, t.get("ver", g.get("ver", 4)),
                            t.get("connect", g.get("connect", True)),
                            t.get("expect_disconnect", g.get("expect_disconnect", True))))
    return out


TOTALS = {"run": 0, "passed": 0, "differ": 0, "failed": 0}


def setup():
    base = tmpdir("sluice-mqttc-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("corpus")
    S["tok"] = cli.add_device("corpus", "mosq")
    d = Daemon(SLUICED, data, ["--mqtt", "127.0.0.1:0", "--header-timeout", "1s"], name="mqttc")
    d.start()
    check(d.mqtt, "ports file has no mqtt port")
    S["d"] = d
    S["seqs"] = sequences()


def run_file(fname):
    seqs = [s for s in S["seqs"] if s[0] == fname]

    def one(s):
        _, group, t, ver, connect, exp = s
        over, why = differ(fname, group, t)
        if over and "disconnect" in over:
            exp = over["disconnect"]
        name = (group + " " + t["name"]).strip()
        err, log = run_one(S["d"].mqtt, S["tok"], ver, connect, re.sub(r"\s+", " ", name),
                           t["msgs"], exp, over)
        return name, over is not None, why, err, log

    with ThreadPoolExecutor(12) as ex:
        results = list(ex.map(one, seqs))
    bad = []
    for name, in_differ, why, err, log in results:
        TOTALS["run"] += 1
        if err:
            TOTALS["failed"] += 1
            bad.append(name)
            print("#   FAIL %s: %s%s\n#     %s" % (name, err, " (differ: %s)" % why if in_differ
                                                   else "", "\n#     ".join(log)), flush=True)
        else:
            TOTALS["passed"] += 1
            if in_differ:
                TOTALS["differ"] += 1
    check(not bad, "%d of %d sequences failed: %s" % (len(bad), len(seqs), "; ".join(bad[:8]) +
                                                       (" ..." if len(bad) > 8 else "")))


for _f in sorted(f for f in os.listdir(CORPUS) if f.endswith(".json")):
    suite.case("corpus %s" % _f)(lambda f=_f: run_file(f))


def teardown():
    print("# totals: %(run)d sequences run, %(passed)d passed (%(differ)d of them under the "
          "DIFFER table), %(failed)d failed" % TOTALS, flush=True)


if __name__ == "__main__":
    suite.run(setup=setup, teardown=teardown)
