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
import queue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttwire import mstr, varint  # noqa: E402  (varint also encodes values >= 2^28, as the corpus means to)
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
# Each entry: file (None: any), a regex on "group name", what sluice does instead,
# and why. What "do" may say:
#   disconnect   the expect_disconnect for sluice
#   early_close  sluice ends the connection earlier in the sequence (MQTT 5 after a
#                DISCONNECT >= 0x80): the rest of the sequence is moot
#   connack      the CONNACK reason sluice answers in place of the expected one
#   refusal      (5.0) any CONNACK refusal >= 0x80 where Mosquitto refuses with another
#   ack          {Mosquitto's PUBACK/PUBREC reason: sluice's}
#   then_recv    packets (corpus notation) sluice sends that Mosquitto does not
#   runner_connack  the runner's own CONNECT is refused with this code, then closed
DIFFER = [
    ("CONNECT.json", r"^v3\.1 ", {"disconnect": True, "connack": 0x01},
     "MQTT 3.1 (MQIsdp, level 3) is not spoken: CONNACK 0x01 unacceptable protocol version"),
    ("CONNACK.json", r"issue 2163 v3$", {"runner_connack": 0x01},
     "MQTT 3.1 is not spoken: the runner's level-3 CONNECT is refused with 0x01"),
    ("CONNECT.json", r"^v3\.1\.1 CONNECT 10 proto ver [26] ", {"connack": 0x01},
     "an unknown protocol level in a 3.1.1 CONNECT is CONNACK 0x01 [MQTT-3.1.2-2]; Mosquitto "
     "answers in the 5.0 shape (00 84 00)"),
    ("CONNECT.json", r"^v5\.0 +(CONNECT 10 Client ID with (0x0000|U\+D800|U\+FFFF)|"
     r"(CONNECT|WILL) DISALLOWED PROPERTIES )", {"refusal": True},
     "5.0 refusal reason: sluice says 0x81 Malformed Packet for a property not valid in its "
     "packet [MQTT 2.2.2.2] and for a client id that is not valid UTF-8 [MQTT-1.5.4-1, -2]; "
     "Mosquitto says 0x82 / 0x85"),
    (None, r"^v5\.0 ", {"ack": {0x10: 0x00}},
     "5.0 PUBACK/PUBREC 0x10 'no matching subscribers' is a broker's; an ingest server "
     "stores the reading: 0x00"),
    ("PUBLISH.json", r"PUBLISH with \$ topic - ", {"ack": {0x87: 0x00}},
     "a topic beginning with $ is a topic name like any other here (stored with the reading; "
     "device and org come from the token): no broker $SYS / $share namespace to protect"),
    ("PUBLISH.json", r"34 QoS 2 Dup flow\*3$", {"disconnect": False, "then_recv": "50 r2 m1234"},
     "a QoS 2 PUBLISH resent before its PUBREL is answered with PUBREC again and stored once "
     "[MQTT-4.3.3]; Mosquitto's limit of one resend is its own"),
    (None, r"^v(3\.1\.1|5\.0) +PUB(ACK|REC|COMP)( ALLOWED PROPERTIES)? [457]0 (unsolicited|with )",
     {"disconnect": True, "early_close": True},
     "an ack for a packet id the server never sent: sluice never sends a PUBLISH, so it closes "
     "(5.0 DISCONNECT 0x82); Mosquitto ignores it"),
    ("PUBREL.json", r"^v5\.0 +PUBREL( ALLOWED PROPERTIES)? 62 (unsolicited|with )", {"ack": {0x00: 0x92}},
     "5.0 PUBREL of an unknown packet id: PUBCOMP 0x92 Packet Identifier not found "
     "[MQTT 3.7.2.1]; Mosquitto answers 0x00"),
    (None, "", "acks-a-delivery",
     "the client acknowledges a PUBLISH delivery (PUBACK/PUBREC/PUBCOMP) that an ingest-only "
     "server never made: an ack for an id it never sent closes (5.0 DISCONNECT 0x82)"),
]


def differ(fname, group, test):
    """The merged overrides of every DIFFER entry that applies, and their reasons."""
    name = re.sub(r"\s+", " ", group) + " " + test["name"].strip()
    over, whys = {}, []
    for f, rx, do, why in DIFFER:
        if (f and f != fname) or not re.search(rx, name):
            continue
        if do == "acks-a-delivery":
            seen, hit = False, False
            for m in test["msgs"]:
                b = parse_payload(m["payload"]) if "payload" in m and m["type"] != \
                    "external_publish" else b""
                if m["type"] == "external_publish" or (m["type"] == "recv" and b and
                                                        b[0] >> 4 == 3):
                    seen = True
                elif m["type"] == "send" and seen and b and b[0] >> 4 in (4, 5, 7):
                    hit = True
            if not hit:
                continue
            do = {"disconnect": True, "early_close": True}
        if "ack" in do and "ack" in over:
            do = dict(do, ack={**over["ack"], **do["ack"]})
        over.update(do)
        keys = set(do) - {"ack"} | {("ack", k) for k in do.get("ack", {})}
        whys.append((keys, why))
    return over, whys


# ---- the runner ----

class Closed(Exception):
    pass


class Wire:
    def __init__(self, port, token):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.token = token.encode()
        self.log = []  # what was sent and heard, for the report

    def note(self, arrow, b):
        self.log.append(arrow + " " + hx(b).replace(hx(self.token), "<token>"))

    def send(self, b, what=None):
        if what:
            self.log.append("> " + what)
        else:
            self.note(">", b)
        try:
            self.s.sendall(b)
        except OSError:
            pass  # the server closed already; what it said is still readable

    def packet(self, timeout=2):
        """(first byte, body); raises Closed at EOF, socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, i = read_varint(self.buf, 1)
                if n is not None and len(self.buf) >= i + n:
                    pk = (self.buf[0], self.buf[i:i + n])
                    self.buf = self.buf[i + n:]
                    self.note("<", bytes([pk[0]]) + varint(len(pk[1])) + pk[1])
                    return pk
            left = deadline - time.monotonic()
            if left <= 0:
                self.log.append("< (nothing in %g s)" % timeout)
                raise socket.timeout
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                self.log.append("< EOF" + (" after %s" % hx(self.buf) if self.buf else ""))
                raise Closed()
            self.buf += d

    def close(self):
        self.s.close()


def hx(b):
    return b.hex(" ")


def ack_fields(body, ver):
    return body[:2], (body[2] if ver == 5 and len(body) > 2 else 0)


def is_refusal(t, body, ver):
    """A packet a server may send just before closing: a CONNACK refusal, a 5.0
    DISCONNECT >= 0x80."""
    if t == 0x20:
        return body[1:2] not in (b"", b"\x00")
    return t == 0xE0 and ver == 5 and body[:1] and body[0] >= 0x80


def run_one(port, token, ver, connect, name, msgs, expect_disconnect, over, used):
    """None when the sequence behaved, else what went wrong; and the wire log.
    used collects the overrides that changed an expectation."""
    w = Wire(port, token)
    try:
        return run_steps(w, ver, connect, name, msgs, expect_disconnect, over, used), w.log
    except socket.timeout:
        return "no answer in time", w.log
    except Closed:
        return "closed by the server", w.log
    finally:
        w.close()


def run_steps(w, ver, connect, name, msgs, expect_disconnect, over, used):
    if "disconnect" in over and over["disconnect"] != expect_disconnect:
        used.add("disconnect")
        expect_disconnect = over["disconnect"]
    if connect:
        w.send(default_connect(name, ver, w.token.decode()), "CONNECT v%d (runner, token)" % ver)
        t, b = w.packet()
        if "runner_connack" in over:
            used.add("runner_connack")
            if (t, b[:2]) != (0x20, bytes([0, over["runner_connack"]])):
                return "runner's CONNECT: want refusal 0x%02x" % over["runner_connack"]
            return finish(w, True, ver)
        if t != 0x20 or b[:2] != b"\x00\x00":
            return "runner's CONNECT refused"
    for m in msgs:
        if m["type"] == "send":
            b = parse_payload(m["payload"])
            if b and b[0] >> 4 == 1:
                b = with_token(b, w.token.decode()) or b
            w.send(b)
        elif m["type"] == "recv":
            want = parse_payload(m["payload"])
            wt = want[0] >> 4
            _, wi = read_varint(want, 1)
            wbody = want[wi:]
            if wt in (3, 6):
                continue  # a delivery to a subscriber, or its PUBREL: broker-only
            if wt == 14 and over.get("disconnect") is False:
                used.add("disconnect")
                continue  # the DISCONNECT Mosquitto ends with: sluice carries on
            if wt == 2 and "connack" in over and wbody[1:2] != bytes([over["connack"]]):
                used.add("connack")
                wbody = bytes([wbody[0], over["connack"]]) + (wbody[2:] if ver == 5 else b"")
            try:
                t, body = w.packet()
            except Closed:
                if wt == 14 or (expect_disconnect and wt == 2 and wbody[1:2] != b"\x00"):
                    return finish(w, expect_disconnect, ver, closed=True)  # said nothing: allowed
                if over.get("early_close") and expect_disconnect:
                    used.add("early_close")
                    return None
                return "closed where %s was expected" % hx(want)
            if over.get("early_close") and is_refusal(t, body, ver) and wt != 14:
                used.add("early_close")
                return finish(w, True, ver)
            err = compare(wt, want[0], wbody, t, body, ver, over, used)
            if err:
                return err
    if "then_recv" in over:
        used.add("then_recv")
        want = parse_payload(over["then_recv"])
        _, wi = read_varint(want, 1)
        t, body = w.packet()
        err = compare(want[0] >> 4, want[0], want[wi:], t, body, ver, over, used)
        if err:
            return err
    return finish(w, expect_disconnect, ver)


def compare(wt, wfirst, wbody, t, body, ver, over, used):
    if wt == 2:  # CONNACK: 3.1.1 whole, 5.0 flags and reason
        if ver != 5:
            ok = (t, body) == (0x20, wbody)
        else:
            ok = t == 0x20 and body[:2] == wbody[:2]
            if not ok and over.get("refusal") and t == 0x20 and wbody[1] >= 0x80 and \
                    body[1:2] and body[1] >= 0x80:
                used.add("refusal")
                ok = True
        if not ok:
            return "CONNACK: want %s" % hx(wbody)
    elif wt in (4, 5, 7):  # PUBACK, PUBREC, PUBCOMP: type, id, reason
        pid, reason = ack_fields(wbody, ver)
        mapped = over.get("ack", {}).get(reason, reason)
        if t == wfirst and ack_fields(body, ver) == (pid, mapped) and mapped != reason:
            used.add(("ack", reason))
        elif t != wfirst or ack_fields(body, ver) != (pid, reason):
            return "ack: want %02x %s" % (wfirst, hx(wbody))
    elif wt == 9:  # SUBACK: the same id and count, every code a failure
        props = wprops = 0
        if ver == 5:
            n, i = read_varint(body, 2)
            props = (i - 2) + (n or 0)
            n, i = read_varint(wbody, 2)
            wprops = (i - 2) + (n or 0)
        codes, wcodes = body[2 + props:], wbody[2 + wprops:]
        if t != 0x90 or body[:2] != wbody[:2] or len(codes) != len(wcodes) or \
                any(c < 0x80 for c in codes):
            return "SUBACK: want id %s and %d failure codes" % (hx(wbody[:2]), len(wcodes))
    elif wt == 11:  # UNSUBACK: its id
        if t != 0xB0 or body[:2] != wbody[:2]:
            return "UNSUBACK: want id %s" % hx(wbody[:2])
    elif wt == 13:
        if (t, body) != (0xD0, b""):
            return "PINGRESP: want d0 00"
    elif wt == 14:  # a DISCONNECT Mosquitto sends: ours must carry a failure
        if t != 0xE0 or not body[:1] or body[0] < 0x80:
            return "DISCONNECT: want a reason >= 0x80"
    elif (t, body) != (wfirst, wbody):
        return "want %02x %s" % (wfirst, hx(wbody))
    return None


def finish(w, expect_disconnect, ver, closed=False):
    if expect_disconnect:
        if closed:
            return None
        deadline = time.monotonic() + 2
        while True:
            try:
                t, body = w.packet(max(0.01, deadline - time.monotonic()))
            except Closed:
                return None
            except socket.timeout:
                return "still open 2 s after the sequence"
            if not is_refusal(t, body, ver):
                return "a packet where the close was expected"
    if closed:
        return "closed, want the connection open"
    w.send(b"\xc0\x00")
    try:
        t, body = w.packet()
    except Closed:
        return "closed, want the connection open (PINGREQ)"
    except socket.timeout:
        return "no PINGRESP"
    if (t, body) != (0xD0, b""):
        return "PINGRESP: want d0 00"
    return None


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
LANES = 12  # sequences run side by side, each lane with a device of its own
BY_WHY = {}  # DIFFER reason -> sequences that passed under it


def setup():
    base = tmpdir("sluice-mqttc-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("corpus")
    # one device per lane: many sequences share a client id (their test name),
    # and a client id connected again for the same device takes over the older
    # connection [MQTT-3.1.4-2]; sequences running side by side must not
    S["lanes"] = queue.Queue()
    for i in range(LANES):
        S["lanes"].put(cli.add_device("corpus", "mosq-%d" % i))
    d = Daemon(SLUICED, data, ["--mqtt", "127.0.0.1:0", "--header-timeout", "1s"], name="mqttc")
    d.start()
    check(d.mqtt, "ports file has no mqtt port")
    S["d"] = d
    S["seqs"] = sequences()


def run_file(fname):
    seqs = [s for s in S["seqs"] if s[0] == fname]

    def one(s):
        _, group, t, ver, connect, exp = s
        over, whys = differ(fname, group, t)
        name = (group + " " + t["name"]).strip()
        used = set()
        tok = S["lanes"].get()
        try:
            err, log = run_one(S["d"].mqtt, tok, ver, connect, re.sub(r"\s+", " ", name),
                               t["msgs"], exp, over, used)
        finally:
            S["lanes"].put(tok)
        return name, bool(used), "; ".join(w for keys, w in whys if keys & used), err, log

    with ThreadPoolExecutor(LANES) as ex:
        results = list(ex.map(one, seqs))
    bad = []
    for name, in_differ, why, err, log in results:
        TOTALS["run"] += 1
        if err:
            TOTALS["failed"] += 1
            bad.append(name)
            print("#   FAIL %s: %s%s\n#     %s" % (name, err, " (DIFFER applied: %s)" % why if why
                                                   else "", "\n#     ".join(log)), flush=True)
        else:
            TOTALS["passed"] += 1
            if in_differ:
                TOTALS["differ"] += 1
                BY_WHY[why] = BY_WHY.get(why, 0) + 1
    check(not bad, "%d of %d sequences failed: %s" % (len(bad), len(seqs), "; ".join(bad[:8]) +
                                                       (" ..." if len(bad) > 8 else "")))


for _f in sorted(f for f in os.listdir(CORPUS) if f.endswith(".json")):
    suite.case("corpus %s" % _f)(lambda f=_f: run_file(f))


def teardown():
    print("# totals: %(run)d sequences run, %(passed)d passed (%(differ)d of them under the "
          "DIFFER table), %(failed)d failed" % TOTALS, flush=True)
    for why, n in sorted(BY_WHY.items(), key=lambda kv: -kv[1]):
        print("#   %4d under DIFFER: %s" % (n, why[:110]), flush=True)


if __name__ == "__main__":
    suite.run(setup=setup, teardown=teardown)
