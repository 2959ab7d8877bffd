#!/usr/bin/env python3
"""bench/bytes-per-reading.py — what one reading costs on the wire, per transport.

A real sluiced on loopback (ephemeral ports, a scratch data directory) takes
--count readings (1,000) of a 10-byte JSON payload, {"t":21.5}, from one
device over one connection per transport:

  frame/TCP    READING frames, and BATCH frames of 10 (docs/frame-protocol.md):
               HELLO, CHALLENGE, PROOF, WELCOME, the readings, the ACKs, BYE; with a
               capture, also the reference client clients/python/sluice_frame.py
               as a device runs it (--count, --batch), when it is there
  frame/UDP    the same frames in datagrams (§6), a device of this script's own:
               the stateless handshake (00x8 | HELLO, CHALLENGE, HELLO | CHALLENGE |
               PROOF, WELCOME), then session datagrams session_id | dgram_seq | SEQ |
               a READING or a BATCH of 10 | mac8, the server's ACK datagrams, and BYE
               (with the ACK it gets)
  MQTT 3.1.1   QoS 0 and QoS 1: CONNECT (client id, username, password = the
               token), CONNACK, PUBLISH to "readings" (PUBACK at QoS 1), DISCONNECT
  HTTP/1.1     keep-alive: POST /v1/readings with X-Auth-Token, one reading per
               request, each 202 awaited, as a device sends them

Each is sent two ways where it makes a difference: "one at a time" waits for
each acknowledgement before the next reading (a device reporting every few
seconds: every reading pays for its own ACK / PUBACK / response), and
"window 64" keeps up to 64 readings unacknowledged (a device flushing what it
buffered: the frame protocol's cumulative ACKs then cover several readings).
QoS 0 has nothing to wait for; HTTP is one at a time only.

Bytes are counted on the wire: with CAP_NET_RAW, an AF_PACKET socket on lo
sees every segment of the connection (every datagram of the UDP device's
socket), so the table gives TCP (UDP) payload bytes (the application's) and,
separately, bytes with the IPv4 and TCP (UDP: 8-byte) headers
(loopback: no link header counted; segments are as large as the sender's
writes, and every ACK a device waits for is answered at once, so a device on a
real link that sleeps between readings also pays a pure TCP ACK per segment,
which this does not show; UDP has no such ACKs). Without CAP_NET_RAW it counts
payload bytes in the client's socket calls, and says so. Either way the connection's handshake,
acknowledgements and goodbye are included, amortised over the readings.

Every run is checked: all readings acknowledged (QoS 0: all stored, by
`sluice log cat`), and the capture's payload bytes equal the client's.

  bench/bytes-per-reading.py [--sluiced build/sluiced] [--cli build/sluice] [--count N]
                             [--only frame,udp,mqtt,http]

Output: a Markdown table on stdout. Exit 0; 1 when a run fails (a UDP run
that had to resend counts as failed: its bytes would not be the protocol's
alone); 77 when sluiced, the CLI, or sluiced's frame or udp listener is
missing.
"""
import argparse
import hashlib
import hmac
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77
PAYLOAD = b'{"t":21.5}'
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def die(why, code=1):
    print("bytes-per-reading: " + why, file=sys.stderr)
    sys.exit(code)


# ---- counting on the wire ----

class Capture:
    """Every IPv4 TCP segment and UDP datagram leaving lo (each crosses it once
    as outgoing), kept as (IP protocol, src port, dst port, IP bytes, TCP / UDP
    payload bytes)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self.segments = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                d, addr = self.sock.recvfrom(1 << 17)
            except socket.timeout:
                continue
            if addr[2] != socket.PACKET_OUTGOING or len(d) < 14 + 40 or d[12:14] != b"\x08\x00":
                continue
            ip = d[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] not in (6, 17):
                continue
            total = struct.unpack(">H", ip[2:4])[0]
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            head = (ip[ihl + 12] >> 4) * 4 if ip[9] == 6 else 8
            self.segments.append((ip[9], sport, dport, total, total - ihl - head))

    def flow(self, client_port, server_port, proto=6):
        """(up payload, up IP bytes, down payload, down IP bytes, segments) of
        one TCP connection (proto 6) or UDP socket pair (17)."""
        up = [s[1:] for s in self.segments
              if s[0] == proto and s[1] == client_port and s[2] == server_port]
        down = [s[1:] for s in self.segments
                if s[0] == proto and s[1] == server_port and s[2] == client_port]
        return (sum(s[3] for s in up), sum(s[2] for s in up), sum(s[3] for s in down),
                sum(s[2] for s in down), len(up) + len(down))

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


class Counted:
    """A TCP connection that counts what the client writes and reads."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.s.getsockname()[1]
        self.server_port = port
        self.up = self.down = 0
        self.buf = b""

    def send(self, b):
        self.s.sendall(b)
        self.up += len(b)

    def fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.down += len(chunk)
        self.buf += chunk

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def until_eof(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return
                self.down += len(chunk)
                self.buf += chunk
        except ConnectionResetError:
            return

    def close(self):
        self.s.close()


# ---- frame protocol (docs/frame-protocol.md), the device side ----

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


def get_varint(b, i):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if not x & 0x80:
            return v, i


def read_frame(c):
    """(type, body, the whole frame) of the next frame on c."""
    while True:
        if len(c.buf) >= 2:
            try:
                n, i = get_varint(c.buf, 1)
            except IndexError:
                n = None
            if n is not None and len(c.buf) >= i + n:
                whole = c.take(i + n)
                return whole[0], whole[i:], whole
        c.fill()


def frame_keys(token):
    t = token.encode()
    k = hmac.new(t, b"sluice frame key v1", hashlib.sha256).digest()
    ck = hmac.new(k, b"Client Key", hashlib.sha256).digest()
    return {"id": hashlib.sha256(t).digest()[:8], "client": ck,
            "stored": hashlib.sha256(ck).digest(),
            "server": hmac.new(k, b"Server Key", hashlib.sha256).digest()}


def frame_run(port, token, count, batch, window):
    """One connection: the handshake, `count` readings in READING frames
    (batch 1) or BATCH frames, at most `window` unacknowledged, BYE, and the
    server's close. Returns the Counted connection."""
    k = frame_keys(token)
    c = Counted(port)
    hello = frame(0x01, b"\x01\x00" + k["id"] + os.urandom(16) + varint(0))
    c.send(hello)
    t, body, challenge = read_frame(c)
    if t != 0x02:
        raise RuntimeError("frame: HELLO answered with type 0x%02x %r" % (t, body))
    sig = hmac.new(k["stored"], hello + challenge, hashlib.sha256).digest()
    proof = frame(0x03, bytes(a ^ b for a, b in zip(k["client"], sig)))
    c.send(proof)
    want_sig = hmac.new(k["server"], hello + challenge + proof, hashlib.sha256).digest()
    if batch == 1:
        unit = frame(0x10, PAYLOAD)
    else:
        unit = frame(0x12, varint(batch) + (varint(len(PAYLOAD)) + PAYLOAD) * batch)
    st = {"base": None, "acked": 0}

    def on_frame():
        t, body, _ = read_frame(c)
        if t == 0x04:
            if body[:32] != want_sig:
                raise RuntimeError("frame: WELCOME's server signature is wrong")
            st["base"] = get_varint(body, 32)[0]
        elif t == 0x20:
            if st["base"] is None:
                raise RuntimeError("frame: an ACK before WELCOME")
            st["acked"] = get_varint(body, 0)[0] - st["base"]
        elif t == 0x30:
            c.send(frame(0x31, b""))
        elif t == 0x7F:
            raise RuntimeError("frame: ERROR 0x%02x %r" % (body[0], body[1:]))
        else:
            raise RuntimeError("frame: unexpected type 0x%02x" % t)

    sent = 0
    while sent < count:
        if sent + batch - st["acked"] <= window:
            c.send(unit)
            sent += batch
        else:
            on_frame()
    while st["base"] is None or st["acked"] < sent:
        on_frame()
    c.send(frame(0x40, b""))  # BYE: the server acks what it has and closes
    c.until_eof()
    c.close()
    return c


# ---- frame protocol over UDP (docs/frame-protocol.md §6), the device side ----

class UdpCounted:
    """A connected UDP socket that counts the payload bytes of the datagrams
    the device sends and receives."""

    def __init__(self, port):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.connect(("127.0.0.1", port))
        self.port = self.s.getsockname()[1]
        self.server_port = port
        self.up = self.down = 0
        self.resends = 0

    def send(self, d):
        self.s.send(d)
        self.up += len(d)

    def recv(self, timeout):
        """The next datagram, or None after timeout seconds."""
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return None
        self.down += len(d)
        return d

    def close(self):
        self.s.close()


def udp_mac(key, direction, head, frames):
    return hmac.new(key, b"sluice udp v1" + bytes([direction]) + head + frames,
                    hashlib.sha256).digest()[:8]


def udp_run(port, token, count, batch, window):
    """One device: the stateless handshake, `count` readings in datagrams of
    SEQ + a READING (batch 1) or a BATCH, at most `window` unacknowledged
    (a datagram not acknowledged within 1 s goes again, go-back-N, counted in
    .resends), then BYE and the ACK it brings. Returns the UdpCounted socket."""
    k = frame_keys(token)
    c = UdpCounted(port)
    zero = bytes(8)
    hello = frame(0x01, b"\x01\x00" + k["id"] + os.urandom(16) + varint(0))
    challenge = None
    while challenge is None:  # step 1, again after a second unanswered
        c.send(zero + hello)
        d = c.recv(1.0)
        if d is not None and d[:8] == zero and d[8] == 0x02:
            challenge = d[8:]
        elif d is not None and d[8] == 0x7F:
            raise RuntimeError("udp: HELLO answered with ERROR 0x%02x" % d[10])
    sig = hmac.new(k["stored"], hello + challenge, hashlib.sha256).digest()
    proof = frame(0x03, bytes(a ^ b for a, b in zip(k["client"], sig)))
    auth = hello + challenge + proof
    welcome = None
    while welcome is None:  # step 3 is idempotent: again after a second
        c.send(zero + auth)
        d = c.recv(1.0)
        if d is not None and d[:8] == zero and d[8] == 0x04:
            welcome = d[8:]
        elif d is not None and d[:8] == zero and d[8] == 0x7F:
            raise RuntimeError("udp: PROOF answered with ERROR 0x%02x" % d[10])
    _, i = get_varint(welcome, 1)
    body = welcome[i:]
    if body[:32] != hmac.new(k["server"], auth, hashlib.sha256).digest():
        raise RuntimeError("udp: WELCOME's server signature is wrong")
    base = get_varint(body, 32)[0]
    key = hmac.new(k["client"], b"sluice session key v1" + auth, hashlib.sha256).digest()
    sid = hmac.new(key, b"sluice udp id v1", hashlib.sha256).digest()[:8]
    if batch == 1:
        unit = frame(0x10, PAYLOAD)
    else:
        unit = frame(0x12, varint(batch) + (varint(len(PAYLOAD)) + PAYLOAD) * batch)
    st = {"dseq": 0, "acked": 0}

    def send_frames(frames):
        st["dseq"] += 1
        head = sid + varint(st["dseq"])
        c.send(head + frames + udp_mac(key, 0, head, frames))

    def on_datagram(d):
        if d[:8] != sid:
            raise RuntimeError("udp: a datagram of another session")
        _, i = get_varint(d, 8)
        frames = d[i:-8]
        if udp_mac(key, 1, d[:i], frames) != d[-8:]:
            raise RuntimeError("udp: a server datagram whose MAC is wrong")
        j = 0
        while j < len(frames):
            t = frames[j]
            n, k2 = get_varint(frames, j + 1)
            fb = frames[k2:k2 + n]
            j = k2 + n
            if t == 0x20:
                st["acked"] = max(st["acked"], get_varint(fb, 0)[0] - base)
            elif t == 0x7F:
                raise RuntimeError("udp: ERROR 0x%02x %r" % (fb[0], fb[1:]))
            else:
                raise RuntimeError("udp: unexpected type 0x%02x" % t)

    sent = 0
    while st["acked"] < count:
        while sent < count and sent + batch - st["acked"] <= window:
            send_frames(frame(0x15, varint(base + sent + 1)) + unit)
            sent += batch
        d = c.recv(1.0)
        if d is None:  # go-back-N from the oldest not acknowledged
            c.resends += 1
            sent = st["acked"] - st["acked"] % batch
            continue
        on_datagram(d)
    send_frames(frame(0x40, b""))  # BYE: the server acks what it has and forgets the session
    d = c.recv(2.0)
    if d is None:
        raise RuntimeError("udp: no ACK after BYE")
    on_datagram(d)
    while True:  # anything more the server says is counted too
        d = c.recv(0.3)
        if d is None:
            break
        on_datagram(d)
    c.close()
    return c


# ---- MQTT 3.1.1 and HTTP/1.1, the device side ----

def mstr(b):
    return struct.pack(">H", len(b)) + b


def mqtt_run(port, token, count, qos, window):
    c = Counted(port)
    vh = mstr(b"MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 60)
    body = vh + mstr(b"device-0001") + mstr(b"dev") + mstr(token.encode())
    c.send(b"\x10" + varint(len(body)) + body)
    if c.take(4) != b"\x20\x02\x00\x00":
        raise RuntimeError("mqtt: CONNECT refused")
    topic = mstr(b"readings")
    unacked = 0

    def puback():
        pk = c.take(4)
        if pk[:2] != b"\x40\x02":
            raise RuntimeError("mqtt: expected PUBACK, got %r" % pk)

    for i in range(count):
        if qos == 0:
            c.send(b"\x30" + varint(len(topic) + len(PAYLOAD)) + topic + PAYLOAD)
            continue
        while unacked >= window:
            puback()
            unacked -= 1
        pid = struct.pack(">H", i % 65535 + 1)
        c.send(b"\x32" + varint(len(topic) + 2 + len(PAYLOAD)) + topic + pid + PAYLOAD)
        unacked += 1
    for _ in range(unacked):
        puback()
    c.send(b"\xe0\x00")  # DISCONNECT
    c.until_eof()
    c.close()
    return c


def http_run(port, token, count):
    c = Counted(port)
    req = (b"POST /v1/readings HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Auth-Token: %s\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
           % (port, token.encode(), len(PAYLOAD), PAYLOAD))
    for _ in range(count):
        c.send(req)
        while b"\r\n\r\n" not in c.buf:
            c.fill()
        head, _, rest = c.buf.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        n = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                n = int(value)
        c.buf = rest
        c.take(n)
        if status != b"202":
            raise RuntimeError("http: %s %r" % (status.decode(), head[:200]))
    c.close()  # the device closes; nothing more is said
    return c


# ---- the daemon ----

class Server:
    def __init__(self, sluiced, cli, work, only):
        self.cli = cli
        self.data = os.path.join(work, "data")
        self.run_cli("org", "add", "acme")
        self.token = self.run_cli("device", "add", "--org", "acme", "meter-1").strip()
        ports_file = os.path.join(work, "ports.json")
        self.log = open(os.path.join(work, "sluiced.log"), "wb")
        self.proc = subprocess.Popen(
            [sluiced, "--data-dir", self.data, "--threads", "1", "--http", "127.0.0.1:0",
             "--mqtt", "127.0.0.1:0", "--frame", "127.0.0.1:0", "--udp", "127.0.0.1:0",
             "--https", "off", "--mqtts",
             "off", "--admin", "127.0.0.1:0", "--auth-fail-rate", "0", "--ports-file",
             ports_file], stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(ports_file) or not open(ports_file).read().strip():
            if self.proc.poll() is not None:
                self.log.flush()
                with open(self.log.name, "rb") as f:
                    out = f.read().decode("utf-8", "replace")
                if ("frame" in out or "udp" in out) and ("not implemented" in out or
                                                         "unknown" in out):
                    die("this sluiced does not serve the frame protocol over TCP and UDP: %s"
                        % out.strip(), SKIP)
                die("sluiced exited at start: %s" % out.strip())
            if time.monotonic() > deadline:
                die("sluiced wrote no ports file in 10 s")
            time.sleep(0.05)
        time.sleep(0.2)
        with open(ports_file) as f:
            self.ports = json.load(f)
        for key in {"http"} | only:
            if not self.ports.get(key):
                die("sluiced has no %s listener: %r" % (key, self.ports), SKIP)
        self.wait_token()

    def run_cli(self, *args):
        p = subprocess.run([self.cli, "--data-dir", self.data] + list(args),
                           capture_output=True, timeout=30)
        if p.returncode:
            die("sluice %s: %s" % (" ".join(args), p.stderr.decode().strip()))
        return p.stdout.decode()

    def wait_token(self):
        """The daemon picks up a new device within about a second."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            s = socket.create_connection(("127.0.0.1", self.ports["http"]))
            s.sendall(b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nX-Auth-Token: %s\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                      b"Connection: close\r\n\r\n[]" % self.token.encode())
            answer = s.recv(100)
            s.close()
            if answer.startswith(b"HTTP/1.1 202"):
                return
            time.sleep(0.1)
        die("the new device's token is still refused after 10 s")

    def stored(self, proto):
        out = self.run_cli("log", "cat", "--org", "acme", "--format", "json")
        return sum(1 for line in out.splitlines() if json.loads(line).get("proto") == proto)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sluiced", default=os.environ.get("SLUICED",
                                                        os.path.join(ROOT, "build", "sluiced")))
    ap.add_argument("--cli", default=os.environ.get("SLUICE_CLI",
                                                    os.path.join(ROOT, "build", "sluice")))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--only", default="frame,udp,mqtt,http",
                    help="transports to measure, comma-separated (frame,udp,mqtt,http)")
    a = ap.parse_args()
    only = set(a.only.split(","))
    if not only or only - {"frame", "udp", "mqtt", "http"}:
        die("--only wants some of frame,udp,mqtt,http", 2)
    for what, path in (("sluiced", a.sluiced), ("the sluice CLI", a.cli)):
        if not os.access(path, os.X_OK):
            die("%s not found at %s (meson compile -C build, or --sluiced/--cli)" % (what, path),
                SKIP)
    try:
        cap = Capture()
    except (PermissionError, OSError):
        cap = None
    work = tempfile.mkdtemp(prefix="sluice-bytes-")
    srv = Server(a.sluiced, a.cli, work, only)
    n = a.count
    fp, mp, hp, tok = srv.ports.get("frame"), srv.ports.get("mqtt"), srv.ports["http"], srv.token
    up_ = srv.ports.get("udp")
    runs = [
        ("frame/TCP, READING, one at a time", "frame", lambda: frame_run(fp, tok, n, 1, 1)),
        ("frame/TCP, READING, window 64", "frame", lambda: frame_run(fp, tok, n, 1, 64)),
        ("frame/TCP, BATCH of 10, one at a time", "frame", lambda: frame_run(fp, tok, n, 10, 10)),
        ("frame/TCP, BATCH of 10, window 64", "frame", lambda: frame_run(fp, tok, n, 10, 64)),
        ("frame/UDP, READING per datagram, one at a time", "udp",
         lambda: udp_run(up_, tok, n, 1, 1)),
        ("frame/UDP, READING per datagram, window 64", "udp",
         lambda: udp_run(up_, tok, n, 1, 64)),
        ("frame/UDP, BATCH of 10 per datagram, one at a time", "udp",
         lambda: udp_run(up_, tok, n, 10, 10)),
        ("frame/UDP, BATCH of 10 per datagram, window 64", "udp",
         lambda: udp_run(up_, tok, n, 10, 64)),
        ("MQTT 3.1.1 QoS 0", "mqtt", lambda: mqtt_run(mp, tok, n, 0, 0)),
        ("MQTT 3.1.1 QoS 1, one at a time", "mqtt", lambda: mqtt_run(mp, tok, n, 1, 1)),
        ("MQTT 3.1.1 QoS 1, window 64", "mqtt", lambda: mqtt_run(mp, tok, n, 1, 64)),
        ("HTTP/1.1 keep-alive, one at a time", "http", lambda: http_run(hp, tok, n)),
    ]
    runs = [r for r in runs if r[1] in only]
    ref = os.path.join(ROOT, "clients", "python", "sluice_frame.py")
    if os.path.exists(ref) and "frame" in only and cap:
        def reference(batch):
            """The reference client as a device runs it; the capture finds its
            one connection (a new client port to the frame port)."""
            before = set(s[1] for s in cap.segments if s[0] == 6)
            p = subprocess.run([sys.executable, ref, "--host", "127.0.0.1", "--port", str(fp),
                                "--token", tok, "--count", str(n), "--batch", str(batch),
                                "--payload", PAYLOAD.decode()], capture_output=True, timeout=60)
            if p.returncode:
                raise RuntimeError("sluice_frame.py exit %d: %s" % (p.returncode,
                                                                    p.stderr[-300:]))
            time.sleep(0.3)
            ports = set(s[1] for s in cap.segments if s[0] == 6 and s[2] == fp) - before
            if len(ports) != 1:
                raise RuntimeError("sluice_frame.py used %d connections" % len(ports))
            return ports.pop()
        for batch, what in ((1, "READING"), (10, "BATCH of 10")):
            runs.append(("frame/TCP, %s, clients/python/sluice_frame.py" % what, "frame",
                         lambda batch=batch: reference(batch)))
    rows = []
    failed = False
    for name, proto, run in runs:
        before = srv.stored(proto)
        try:
            c = run()
        except Exception as e:  # noqa: BLE001 — reported, and the exit says so
            print("bytes-per-reading: %s failed: %s" % (name, e), file=sys.stderr)
            failed = True
            continue
        time.sleep(0.3)  # the last segments (FIN, the final ACKs) are captured
        grown = srv.stored(proto) - before
        if grown != n:
            print("bytes-per-reading: %s: %d readings stored, %d sent" % (name, grown, n),
                  file=sys.stderr)
            failed = True
        if getattr(c, "resends", 0):
            print("bytes-per-reading: %s: %d resends on loopback (a datagram or an ACK lost)"
                  % (name, c.resends), file=sys.stderr)
            failed = True
        if isinstance(c, int):  # the reference client: the capture alone counts
            up, up_ip, down, down_ip, segs = cap.flow(c, fp)
        elif cap:
            up, up_ip, down, down_ip, segs = cap.flow(c.port, c.server_port,
                                                      17 if proto == "udp" else 6)
            if (up, down) != (c.up, c.down):
                print("bytes-per-reading: %s: the capture saw %d/%d payload bytes, the client "
                      "%d/%d" % (name, up, down, c.up, c.down), file=sys.stderr)
                failed = True
        else:
            up, down, up_ip, down_ip, segs = c.up, c.down, None, None, None
        rows.append((name, up, down, up_ip, down_ip, segs))
    srv.stop()
    if cap:
        cap.close()
    if not os.environ.get("SLUICE_KEEP_TMP"):
        shutil.rmtree(work, True)

    how = ("TCP (UDP) payload bytes captured on lo (AF_PACKET); IPv4+TCP (IPv4+UDP) header "
           "bytes from the same capture" if cap else
           "payload bytes counted in the client's socket calls (no CAP_NET_RAW: no capture, "
           "no header bytes)")
    print("Bytes per reading, %d readings of a %d-byte payload (%s) over one connection (UDP: "
          "one socket) each, "
          "against sluiced on loopback; both directions; the handshake, acknowledgements and "
          "close amortised. Counted: %s." % (n, len(PAYLOAD), PAYLOAD.decode(), how))
    print()
    head = "| transport | up (device→server) | down | total | overhead over %d B |" % len(PAYLOAD)
    if cap:
        head += " total with IP+TCP (UDP) headers | segments (datagrams) |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, up, down, up_ip, down_ip, segs in rows:
        tot = (up + down) / n
        line = "| %s | %.2f | %.2f | %.2f | +%.2f B (%.2f×) |" % (
            name, up / n, down / n, tot, tot - len(PAYLOAD), tot / len(PAYLOAD))
        if cap:
            line += " %.1f | %d |" % ((up_ip + down_ip) / n, segs)
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
