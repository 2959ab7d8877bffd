#!/usr/bin/env python3
"""The reference client of the sluice frame protocol, version 1, over TCP and
UDP (docs/frame-protocol.md). Standard library only; a library and a CLI.

Library:
    c = FrameClient("127.0.0.1", 7000, "slk_...", batch=50)
    c.connect()                # HELLO/CHALLENGE/PROOF/WELCOME; checks the server
    for p in payloads:
        c.send(p)              # numbered implicitly (§4), kept until acknowledged
    c.flush(timeout=30)        # True once an ACK covers every reading
    c.close()                  # BYE

The client keeps every reading until an ACK covers it. When the connection
breaks it reconnects (with backoff, a bounded number of attempts) and sends the
readings it holds again with their numbers: HELLO's next_seq is the oldest one
not acknowledged, or 0 when it holds none (the server then numbers after its
high-water mark, WELCOME's durable_seq). It never has more readings
unacknowledged than WELCOME's window, and never sends a frame above max_frame.

Over UDP (§6), UdpFrameClient has the same shape (connect, send, flush, close,
the same counters): readings numbered explicitly, resent from the oldest not
acknowledged when no ACK comes, a new handshake when the server lost the
session; rebind() moves it to a new source port, as a NAT may. With
tcp_handshake=(host, port) its handshakes go over TCP instead (§6, "Handshake
over TCP"; the CLI's --udp-via-tcp), and only the readings in datagrams.

CLI:
    sluice_frame.py --host H --port P --token T --count N --payload TEXT
                    [--batch B] [--timeout S] [--udp [--udp-via-tcp [HOST:]PORT]]
    sluice_frame.py --selftest
Exit status: 0 when every reading is acknowledged as durable, 1 on failure
(one line on stderr saying why), 2 on bad usage.
"""
import argparse
import hashlib
import hmac
import select
import socket
import secrets
import sys
import time

VERSION = 1

HELLO, CHALLENGE, PROOF, WELCOME = 0x01, 0x02, 0x03, 0x04
READING, READING_TIMED, BATCH, BATCH_TIMED, TIME, SEQ = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
ACK, PING, PONG, BYE, ERROR = 0x20, 0x30, 0x31, 0x40, 0x7F

TOKEN_ID_LEN, NONCE_LEN, MAC_LEN = 8, 16, 32

# What the server may send us, and how large it may be: WELCOME with the
# largest ticket (96 bytes) and ERROR with the longest message (200 bytes) are
# far below this. A frame claiming more is a broken or hostile server.
SERVER_FRAME_MAX = 1024

ERROR_NAMES = {
    0x01: "unsupported version",
    0x02: "authentication failed",
    0x03: "quota exceeded",
    0x04: "too large",
    0x05: "storage unavailable",
    0x06: "taken over by a newer connection",
    0x07: "protocol error",
    0x08: "server shutting down",
    0x09: "timeout",
}

# Errors after which a new connection may succeed: the server restarts, its
# storage comes back, we were idle. The others say something about us (our
# token, our frames) that a reconnect does not change, or (0x06) that another
# connection of our token is live and must not be fought over.
RETRYABLE_ERRORS = {0x03, 0x05, 0x08, 0x09}


# ---- encoding (§1) ----

def varint(n):
    """n as unsigned LEB128."""
    if n < 0 or n >= 1 << 64:
        raise ValueError("varint out of range: %r" % n)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, off):
    """(value, offset after it) of the minimal varint at buf[off:], or None when
    buf ends before it does. Raises ProtocolError when it is overlong, not
    minimal or past 64 bits."""
    v = 0
    for i in range(10):
        if off + i >= len(buf):
            return None
        b = buf[off + i]
        if i == 9 and b > 1:
            raise ProtocolError("varint past 64 bits")
        v |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if i > 0 and b == 0:
                raise ProtocolError("varint not minimal")
            return v, off + i + 1
    raise ProtocolError("varint longer than 10 bytes")


def frame(ftype, body=b""):
    """One TCP frame: type, length, body."""
    return bytes([ftype]) + varint(len(body)) + body


def split_frame(buf, limit=SERVER_FRAME_MAX):
    """(type, body, bytes taken) of the first frame in buf, or None while it is
    incomplete. The length is checked against limit from the header alone."""
    if not buf:
        return None
    got = read_varint(buf, 1)
    if got is None:
        return None
    length, off = got
    if length > limit:
        raise ProtocolError("frame type 0x%02x claims %d bytes (limit %d)" % (buf[0], length,
                                                                             limit))
    if len(buf) < off + length:
        return None
    return buf[0], bytes(buf[off:off + length]), off + length


# HELLO's flags (§2): a ticket follows (§5); over TCP, make a UDP session (§6)
HELLO_TICKET, HELLO_UDP = 0x01, 0x02


def hello_frame(token_id, client_nonce, next_seq, ticket=None, flags=0):
    flags = (flags & ~HELLO_TICKET) | (HELLO_TICKET if ticket else 0)
    body = bytes([VERSION, flags]) + token_id + client_nonce + varint(next_seq)
    if ticket:
        body += varint(len(ticket)) + ticket
    return frame(HELLO, body)


def challenge_frame(server_nonce, durable_seq):
    return frame(CHALLENGE, server_nonce + varint(durable_seq))


def proof_frame(client_proof):
    return frame(PROOF, client_proof)


def welcome_frame(signature, durable_seq, max_frame, window, ticket=b""):
    return frame(WELCOME, signature + varint(durable_seq) + varint(max_frame) + varint(window) +
                 varint(len(ticket)) + ticket)


def reading_frame(payload):
    return frame(READING, payload)


def timed_reading_frame(dt_ms, payload):
    return frame(READING_TIMED, varint(dt_ms) + payload)


def batch_body(payloads):
    return varint(len(payloads)) + b"".join(varint(len(p)) + p for p in payloads)


def batch_frame(payloads):
    return frame(BATCH, batch_body(payloads))


def ack_frame(durable_seq):
    return frame(ACK, varint(durable_seq))


def error_frame(code, seq, message):
    return frame(ERROR, bytes([code]) + varint(seq) + message.encode("utf-8"))


def parse_challenge(body):
    """(server_nonce, durable_seq) of a CHALLENGE body."""
    if len(body) < NONCE_LEN + 1:
        raise ProtocolError("CHALLENGE of %d bytes" % len(body))
    got = read_varint(body, NONCE_LEN)
    if got is None or got[1] != len(body):
        raise ProtocolError("CHALLENGE body does not parse")
    return body[:NONCE_LEN], got[0]


def parse_welcome(body):
    """(server_signature, durable_seq, max_frame, window, ticket) of a WELCOME body."""
    if len(body) < MAC_LEN + 4:
        raise ProtocolError("WELCOME of %d bytes" % len(body))
    off = MAC_LEN
    vals = []
    for _ in range(4):
        got = read_varint(body, off)
        if got is None:
            raise ProtocolError("WELCOME body ends inside a number")
        vals.append(got[0])
        off = got[1]
    durable, max_frame, window, tlen = vals
    if tlen > 96 or off + tlen != len(body):
        raise ProtocolError("WELCOME ticket of %d bytes in a body of %d" % (tlen, len(body)))
    return body[:MAC_LEN], durable, max_frame, window, body[off:]


def parse_num(body, what):
    got = read_varint(body, 0)
    if got is None or got[1] != len(body):
        raise ProtocolError("%s body does not parse" % what)
    return got[0]


def parse_error(body):
    """(code, seq, message) of an ERROR body."""
    if not body:
        raise ProtocolError("empty ERROR")
    got = read_varint(body, 1)
    if got is None:
        raise ProtocolError("ERROR body ends inside its seq")
    return body[0], got[0], body[got[1]:].decode("utf-8", "replace")


# ---- keys (§3) ----

class Keys:
    """Everything derived from a token T (bytes or str). Only T, K and
    ClientKey are secret to the device; the server keeps StoredKey and
    ServerKey."""

    def __init__(self, token):
        t = token.encode("utf-8") if isinstance(token, str) else bytes(token)
        self.token_id = hashlib.sha256(t).digest()[:TOKEN_ID_LEN]
        self.k = hmac.new(t, b"sluice frame key v1", hashlib.sha256).digest()
        self.client_key = hmac.new(self.k, b"Client Key", hashlib.sha256).digest()
        self.stored_key = hashlib.sha256(self.client_key).digest()
        self.server_key = hmac.new(self.k, b"Server Key", hashlib.sha256).digest()


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def client_signature(stored_key, auth_message):
    return hmac.new(stored_key, auth_message, hashlib.sha256).digest()


def client_proof(client_key, stored_key, auth_message):
    """ClientKey XOR HMAC(StoredKey, AuthMessage), AuthMessage = HELLO || CHALLENGE."""
    return xor(client_key, client_signature(stored_key, auth_message))


def server_signature(server_key, auth_message, proof):
    """HMAC(ServerKey, AuthMessage || the PROOF frame): what WELCOME must carry."""
    return hmac.new(server_key, auth_message + proof, hashlib.sha256).digest()


def session_key(client_key, auth_message, proof):
    """The UDP session key (§6); not used over TCP, checked by the self-test."""
    return hmac.new(client_key, b"sluice session key v1" + auth_message + proof,
                    hashlib.sha256).digest()


def udp_session_id(skey):
    """The UDP session id (§6), from the session key."""
    return hmac.new(skey, b"sluice udp id v1", hashlib.sha256).digest()[:8]


def udp_mac(key, direction, session_id, dgram_seq, frames):
    msg = b"sluice udp v1" + bytes([direction]) + session_id + varint(dgram_seq) + frames
    return hmac.new(key, msg, hashlib.sha256).digest()[:8]


# ---- errors ----

class ProtocolError(Exception):
    """The server sent bytes that are not the protocol."""


class ServerNotAuthenticated(Exception):
    """WELCOME's server_signature does not verify: the peer does not know the
    token's ServerKey, so it is not the server that token belongs to."""


class FrameError(Exception):
    """The server sent ERROR: code, seq (the first reading not stored, 0: none), message."""

    def __init__(self, code, seq, message):
        self.code, self.seq, self.message = code, seq, message
        self.sent_upto = self.acked = None  # set by FrameClient
        name = ERROR_NAMES.get(code, "error")
        text = "%s (ERROR 0x%02x)" % (name, code)
        if message and message != name:
            text += ": %s" % message
        super().__init__(text)

    @property
    def retryable(self):
        return self.code in RETRYABLE_ERRORS


class ConnectionLost(Exception):
    """The connection ended: EOF, reset, a timeout; a reconnect may help."""


# ---- the client ----

class _Holding:
    """What both clients share: the readings held until an ACK covers them
    (self._held, oldest first), and self._run(done, deadline, partial), each
    transport's loop of sending, reading and reconnecting."""

    def flush(self, timeout=30.0):
        """Sends everything held and waits until an ACK covers it. True when
        it did within timeout, False otherwise (the readings stay held).
        Reconnects (over UDP: shakes hands again) as needed; raises like
        connect()."""
        deadline = time.monotonic() + timeout
        return self._run(lambda: not self._held, deadline, partial=True)

    def held(self):
        """How many readings are waiting for an ACK."""
        return len(self._held)


class FrameClient(_Holding):
    """A device's connection to sluiced, kept across reconnects.

    token: the device token (`sluice device add`). batch: readings per BATCH
    frame (1: one READING frame each). attempts: connection attempts in a row
    before giving up (ConnectionError); each failure waits backoff seconds,
    doubling up to backoff_max. timeout: the socket timeout of one connection
    attempt and of one blocking read.

    Counters: bytes_sent, bytes_received (every byte on the wire, resends
    included), acked_seq (the highest number an ACK or WELCOME covered),
    connections (handshakes completed), errors (every ERROR frame heard, as
    FrameError). on_ack(seq), when set, is called with every new acked_seq.

    After a reconnect the readings held are sent again from the oldest, even
    those WELCOME's durable_seq covers: the server numbers the connection's
    readings from HELLO's next_seq, so they keep the numbers of those after
    them (the server acknowledges them and does not store them again).

    Errors: FrameError for an ERROR the server sent that a reconnect does not
    cure (0x02 authentication, 0x06 taken over, 0x07 protocol, 0x01
    version). 0x04 (a reading over the server's limit) drops that reading
    (FrameError.dropped): the ones after it are numbered anew, the error is
    raised, and the client goes on with the next send() or flush(). Not thread-safe: one thread
    drives a client."""

    def __init__(self, host, port, token, batch=1, attempts=8, backoff=0.05, backoff_max=2.0,
                 timeout=10.0, on_ack=None):
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.host, self.port = host, port
        self.keys = Keys(token)
        self.batch = batch
        self.attempts = attempts
        self.backoff, self.backoff_max = backoff, backoff_max
        self.timeout = timeout
        self.on_ack = on_ack
        self.bytes_sent = self.bytes_received = 0
        self.acked_seq = 0
        self.first_seq = None  # the number of the first reading this client sent
        self.last_seq = 0  # the highest number given to a reading
        self.connections = 0
        self.errors = []
        # Readings not yet acknowledged, oldest first: [seq, payload], seq None
        # until the reading is numbered (first sent). Numbered ones come first
        # and their numbers are consecutive, since only a cumulative ACK removes any.
        self._held = []
        self._sock = None
        self._rbuf = bytearray()
        self._out = []  # this connection's readings still to send: [seq, payload]
        self._conn_next = 0  # the number the server gives the next reading we send
        self._conn_high = 0  # WELCOME's durable_seq on this connection
        self._breaks = 0  # connections broken in a row without an ACK
        self.window = self.max_frame = None

    # -- public --

    def connect(self):
        """Connects and authenticates, retrying as configured. Raises
        FrameError (the server refused: bad token, ...), ServerNotAuthenticated,
        ProtocolError, or ConnectionError when every attempt failed."""
        self._close_sock()
        delay = self.backoff
        last = None
        for attempt in range(max(1, self.attempts)):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
            try:
                self._handshake()
                return
            except (ServerNotAuthenticated, ProtocolError):
                self._close_sock()
                raise
            except FrameError as e:
                self._close_sock()
                if not e.retryable:
                    raise
                last = e
            except ConnectionLost as e:
                self._close_sock()
                last = e
            except OSError as e:
                self._close_sock()
                last = e
        raise ConnectionError("no connection to %s:%d after %d attempts: %s" %
                              (self.host, self.port, max(1, self.attempts), last))

    def send(self, payload):
        """Queues one reading (bytes or str) and sends what the batch size and
        the window allow. Blocks (reading ACKs) while the window is full.
        Returns how many readings are held unacknowledged. The reading is
        queued even when this raises (for an earlier reading's error, too)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if self.max_frame is not None and len(reading_frame(payload)) > self.max_frame:
            raise ValueError("a reading of %d bytes is over the server's max_frame %d" %
                             (len(payload), self.max_frame))
        item = [None, bytes(payload)]
        self._held.append(item)
        if self._sock is not None:
            self._out.append(item)
        self._run(lambda: len(self._out) < self.batch, None)
        return len(self._held)

    def ping(self):
        """Sends PING (the server answers PONG); any frame resets the server's
        idle deadline."""
        if self._sock is None:
            self.connect()
        self._write(frame(PING))

    def close(self, linger=1.0):
        """Says BYE (the server acks what it has, then closes), reads what
        comes back within linger seconds, and closes. Readings not acknowledged
        stay held: a later connect() or flush() sends them again."""
        if self._sock is None:
            return
        try:
            self._write(frame(BYE))
            deadline = time.monotonic() + linger
            while time.monotonic() < deadline:
                self._read_some(deadline)
        except (ConnectionLost, OSError, FrameError, ProtocolError):
            pass
        self._close_sock()

    # -- the handshake --

    def _handshake(self):
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._rbuf = bytearray()
        self._conn_next = 0  # nothing sent on this connection yet
        # §4: the oldest reading held goes first, with its number; none held (or
        # none numbered yet): 0, the server numbers after its high-water mark.
        next_seq = self._held[0][0] if self._held and self._held[0][0] else 0
        hello = hello_frame(self.keys.token_id, secrets.token_bytes(NONCE_LEN), next_seq)
        self._write(hello)
        ftype, body = self._next_frame(time.monotonic() + self.timeout, handshake=True)
        if ftype != CHALLENGE:
            raise ProtocolError("expected CHALLENGE, got frame type 0x%02x" % ftype)
        parse_challenge(body)
        auth = hello + frame(CHALLENGE, body)
        proof = proof_frame(client_proof(self.keys.client_key, self.keys.stored_key, auth))
        self._write(proof)
        ftype, body = self._next_frame(time.monotonic() + self.timeout, handshake=True)
        if ftype != WELCOME:
            raise ProtocolError("expected WELCOME, got frame type 0x%02x" % ftype)
        sig, durable, max_frame, window, _ticket = parse_welcome(body)
        if not hmac.compare_digest(sig, server_signature(self.keys.server_key, auth, proof)):
            # not retryable: whoever answers does not know our ServerKey
            self._close_sock()
            raise ServerNotAuthenticated(
                "the server's signature does not verify: refusing %s:%d (not the server "
                "this token belongs to)" % (self.host, self.port))
        if window < 1 or max_frame < 3:
            raise ProtocolError("WELCOME with window %d, max_frame %d" % (window, max_frame))
        self.window, self.max_frame = window, max_frame
        self._sock.settimeout(self.timeout)  # the handshake left less on it
        self.connections += 1
        # this connection sends every held reading again, in order; numbered
        # from next_seq, or (next_seq 0) after the final durable_seq
        self._conn_next = next_seq if next_seq else durable + 1
        self._conn_high = durable
        self._out = list(self._held)
        self._acked(durable)

    # -- sending and receiving --

    def _in_flight(self):
        """Readings sent on this connection that no ACK covers yet."""
        return max(0, self._conn_next - 1 - self.acked_seq)

    def _run(self, done, deadline, partial=False):
        """Sends and reads until done() or deadline (None: no deadline),
        reconnecting when the connection breaks. partial: send a batch short of
        its size too (flushing). A connection that breaks attempts times in a
        row without an ACK in between makes it give up (ConnectionError)."""
        while True:
            if done():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._sock is None:
                if self._breaks:
                    time.sleep(min(self.backoff * (1 << min(self._breaks - 1, 16)),
                                   self.backoff_max))
                self.connect()  # raises once its own attempts are spent
                continue
            try:
                self._pump(partial)
                if done():
                    return True
                # nothing more may go out: wait for the server (ACKs)
                wait = self.timeout
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if not self._read_some(time.monotonic() + wait) and wait >= self.timeout \
                        and self._in_flight():
                    raise ConnectionLost("no ACK within %.1fs" % self.timeout)
            except (ConnectionLost, OSError) as e:
                self._broken(e)
            except FrameError as e:
                self._broken(e)
                if not e.retryable:
                    raise

    def _broken(self, why):
        self._close_sock()
        self._breaks += 1
        if self._breaks > self.attempts:
            raise ConnectionError("%d connections in a row ended before an ACK; last: %s" %
                                  (self._breaks, why))

    def _pump(self, partial):
        """Sends readings from _out as frames while the window has room."""
        while self._out:
            room = self.window - self._in_flight()
            if room <= 0:
                return
            n = min(room, self.batch, len(self._out))
            if n < self.batch and n == len(self._out) and not partial and room >= self.batch:
                return  # wait for a full batch
            items = self._out[:n]
            if n == 1:
                data = reading_frame(items[0][1])
                if len(data) > self.max_frame:
                    raise ValueError("a reading of %d bytes is over the server's max_frame %d"
                                     % (len(items[0][1]), self.max_frame))
            else:
                # fit the batch under max_frame, dropping readings off its end
                while True:
                    data = batch_frame([it[1] for it in items])
                    if len(data) <= self.max_frame or len(items) == 1:
                        break
                    items = items[:max(1, len(items) // 2)]
                if len(items) == 1:
                    data = reading_frame(items[0][1])
                n = len(items)
            for it in items:
                if it[0] is None:
                    it[0] = self._conn_next
                    if self.first_seq is None:
                        self.first_seq = it[0]
                elif it[0] != self._conn_next:
                    raise AssertionError("reading %d sent as %d" % (it[0], self._conn_next))
                self.last_seq = max(self.last_seq, it[0])
                self._conn_next += 1
            del self._out[:n]
            self._write(data)
            self._read_ready()

    def _write(self, data):
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            raise ConnectionLost("send: %s" % e)
        self.bytes_sent += len(data)

    def _read_ready(self):
        """Reads what has arrived already, without blocking."""
        while self._sock is not None:
            r, _, _ = select.select([self._sock], [], [], 0)
            if not r:
                return
            self._recv_into()
            self._dispatch()

    def _read_some(self, deadline):
        """Waits until deadline for bytes, then handles the frames they
        complete. False when nothing came."""
        left = deadline - time.monotonic()
        r, _, _ = select.select([self._sock], [], [], max(0.0, left))
        if r:
            self._recv_into()
            self._dispatch()
        return bool(r)

    def _recv_into(self):
        try:
            data = self._sock.recv(65536)
        except (ConnectionResetError, socket.timeout) as e:
            raise ConnectionLost("recv: %s" % e)
        if not data:
            raise ConnectionLost("the server closed the connection")
        self.bytes_received += len(data)
        self._rbuf += data

    def _next_frame(self, deadline, handshake=False):
        """The next frame during the handshake (type, body)."""
        while True:
            got = split_frame(self._rbuf)
            if got is not None:
                ftype, body, n = got
                del self._rbuf[:n]
                if ftype == ERROR:
                    self._error(body)
                if ftype == PING:
                    self._write(frame(PONG))
                    continue
                return ftype, body
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionLost("no answer to the handshake within %.1fs" % self.timeout)
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except (ConnectionResetError, socket.timeout) as e:
                raise ConnectionLost("recv: %s" % e)
            if not data:
                raise ConnectionLost("the server closed the connection during the handshake")
            self.bytes_received += len(data)
            self._rbuf += data

    def _dispatch(self):
        while True:
            got = split_frame(self._rbuf)
            if got is None:
                return
            ftype, body, n = got
            del self._rbuf[:n]
            if ftype == ACK:
                seq = parse_num(body, "ACK")
                if seq > self._conn_high and seq >= self._conn_next:
                    # an ACK for readings never sent would drop ones the
                    # server does not have: a broken server, not a reason to lose data
                    raise ProtocolError("ACK %d beyond the last reading sent (%d)" %
                                        (seq, self._conn_next - 1))
                self._acked(seq)
            elif ftype == ERROR:
                self._error(body)
            elif ftype == PING:
                self._write(frame(PONG))
            elif ftype == PONG:
                pass
            else:
                raise ProtocolError("unexpected frame type 0x%02x after WELCOME" % ftype)

    def _error(self, body):
        code, seq, message = parse_error(body)
        e = FrameError(code, seq, message)
        # what this connection had sent, and what was acknowledged, when it came
        e.sent_upto, e.acked = max(0, self._conn_next - 1), self.acked_seq
        e.dropped = None
        self.errors.append(e)
        if code == 0x04 and seq:
            e.dropped = self._drop_too_large(seq, e.sent_upto)
        raise e

    def _drop_too_large(self, first, upto):
        """ERROR 0x04: a reading over the server's limit was among first..upto
        (this connection's, none of them stored). seq names the first not
        stored, which need not be the large one (the readings of one input
        call go together), but the largest of them is over the limit if any
        is: forgets it and lets those after it be numbered again from its
        number on the next connection. Returns its payload (None: not held)."""
        best = None
        for i, it in enumerate(self._held):
            if it[0] is not None and first <= it[0] <= upto:
                if best is None or len(it[1]) > len(self._held[best][1]):
                    best = i
        if best is None:
            return None
        it = self._held.pop(best)
        for later in self._held[best:]:
            later[0] = None
        self.last_seq = it[0] - 1
        return it[1]

    def _acked(self, seq):
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        self._breaks = 0
        i = 0
        while i < len(self._held) and self._held[i][0] is not None and self._held[i][0] <= seq:
            i += 1
        del self._held[:i]
        if self.on_ack:
            self.on_ack(seq)

    def _close_sock(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._out = []
        self._rbuf = bytearray()


# ---- UDP (§6) ----

SID_LEN, UDP_MAC_LEN = 8, 8
HANDSHAKE_PREFIX = bytes(SID_LEN)  # session_id all zeros: a handshake datagram
FROM_DEVICE, FROM_SERVER = 0x00, 0x01
UDP_SAFE_DGRAM = 1200  # fits any path MTU (§6); the server takes up to WELCOME's max_frame
UDP_REPLAY = 1024  # server datagrams older than this many before its newest are ignored
UDP_RESEND_MIN, UDP_RESEND_MAX = 0.2, 5.0  # §6: 2 RTTs, at least 200 ms, doubling up to 5 s
UDP_UNANSWERED = 3  # resends without any answer before shaking hands again (§6)
UDP_CHALLENGE_TTL = 30.0  # the server takes a CHALLENGE for 32..48 s (16 s clock steps)
# a datagram's fixed cost around its readings: session id, dgram_seq, SEQ, a
# BATCH header, the MAC (each varint at its largest)
UDP_OVERHEAD = SID_LEN + 10 + 2 + 10 + 1 + 10 + 10 + UDP_MAC_LEN


def split_frames(data, limit=SERVER_FRAME_MAX):
    """Every frame of a datagram's frames, as (type, body, the frame's bytes).
    A datagram holds whole frames only: one cut short, or bytes after the
    last, is a ProtocolError."""
    out = []
    off = 0
    while off < len(data):
        got = split_frame(data[off:], limit)
        if got is None:
            raise ProtocolError("a datagram ends inside a frame")
        ftype, body, n = got
        out.append((ftype, body, bytes(data[off:off + n])))
        off += n
    return out


def udp_readings_frames(first_seq, payloads):
    """SEQ naming the first reading's number, then the readings: one READING
    frame for one, a BATCH for more (1 byte less a reading)."""
    f = frame(SEQ, varint(first_seq))
    if len(payloads) == 1:
        return f + reading_frame(payloads[0])
    return f + batch_frame(payloads)


def udp_session_dgram(key, session_id, direction, dgram_seq, frames):
    """session_id | dgram_seq | frames | mac8 (§6)."""
    return session_id + varint(dgram_seq) + frames + udp_mac(key, direction, session_id,
                                                               dgram_seq, frames)


def udp_open_dgram(key, session_id, direction, data):
    """(dgram_seq, frames) of a session datagram of session_id whose MAC
    verifies for direction, or None: anything else is forged, or another
    session's, and is dropped without a word (§6)."""
    if len(data) < SID_LEN + 1 + UDP_MAC_LEN or data[:SID_LEN] != session_id:
        return None
    try:
        got = read_varint(data[:-UDP_MAC_LEN], SID_LEN)
    except ProtocolError:
        return None
    if got is None or got[0] == 0:
        return None
    dgram_seq, off = got
    frames = bytes(data[off:-UDP_MAC_LEN])
    if not hmac.compare_digest(udp_mac(key, direction, session_id, dgram_seq, frames),
                               bytes(data[-UDP_MAC_LEN:])):
        return None
    return dgram_seq, frames


class ReplayWindow:
    """The datagram numbers seen of one peer: a number seen already, 0, or
    more than `size` before the newest is refused."""

    def __init__(self, size=UDP_REPLAY):
        self.size, self.newest, self.seen = size, 0, set()

    def fresh(self, n):
        if n == 0 or n in self.seen or n + self.size <= self.newest:
            return False
        self.seen.add(n)
        if n > self.newest:
            self.newest = n
            if len(self.seen) > 2 * self.size:
                self.seen = {x for x in self.seen if x + self.size > n}
        return True


class UdpFrameClient(_Holding):
    """A device's session with sluiced over UDP (§6), kept across lost
    sessions; the same public shape as FrameClient.

    c = UdpFrameClient("127.0.0.1", 7000, "slk_...")
    c.connect(); c.send(p) ...; c.flush(30); c.close()

    batch: readings per datagram at most (None: as many as fit in dgram_max
    bytes, 1,200 by default, which any path carries; a single reading larger
    than that goes alone, up to WELCOME's max_frame). inflight: readings sent
    and not acknowledged at most (never more than WELCOME's window).
    attempts: handshakes in a row that may fail (no answer within timeout
    seconds, a retryable ERROR), and sessions in a row that may end before an
    ACK, before it gives up (ConnectionError).

    The handshake: HELLO, then HELLO|CHALLENGE|PROOF, each repeated after 1 s,
    doubling, when no answer comes (a server ending our older connection stays
    silent); a CHALLENGE older than 30 s is not used (the server takes it for
    32 s at least), a new HELLO is. A WELCOME whose signature does not verify
    is ignored over UDP (anyone can send one): when only such came within
    timeout, ServerNotAuthenticated.

    Readings are numbered explicitly, each datagram's first by a SEQ frame.
    The server stores them strictly in order, so a lost datagram makes it drop
    the ones after it: the client resends from the oldest reading not
    acknowledged (go-back-N) when no ACK has covered it within 2 RTTs (at
    least 200 ms, doubling up to 5 s), or sooner when an ACK that does not
    move comes back for readings sent over an RTT ago (the server's answer to
    datagrams past a gap). After 3 resends without any answer the session is
    taken as lost (the server restarted: it keeps sessions in memory) and the
    client shakes hands again, HELLO's next_seq its oldest reading not
    acknowledged (0 when it holds none; its readings are then numbered after
    WELCOME's durable_seq).

    tcp_handshake=(host, port): shake hands over TCP instead (§6, "over TCP":
    HELLO with flags bit 1 to sluiced --frame), where nothing is lost or
    repeated; WELCOME there says the session is live, the server closes the
    connection, and the readings go in datagrams to host:port as after a UDP
    handshake. Each new handshake (a lost session) goes over TCP again. An
    ERROR there is handled as a handshake's (0x07 "no udp listener": the
    server serves no UDP, raised as FrameError).

    Counters as FrameClient's (bytes_sent and bytes_received count every
    datagram's bytes, and the TCP handshakes' too), and dgrams_sent, dgrams_received, resends (go-back-N
    passes), lost_sessions (sessions given up for silence), dropped (datagrams
    that were not a valid answer: forged, replayed, another session's).
    connections counts handshakes completed. ERRORs as FrameClient: 0x02,
    0x06, 0x07, 0x01 are raised as FrameError; 0x05, 0x08 (and 0x03, 0x09)
    end the session and the client shakes hands again. Not thread-safe: one
    thread drives a client."""

    def __init__(self, host, port, token, batch=None, attempts=8, timeout=10.0,
                 dgram_max=UDP_SAFE_DGRAM, inflight=512, on_ack=None, tcp_handshake=None):
        if batch is not None and batch < 1:
            raise ValueError("batch must be at least 1")
        if dgram_max < UDP_OVERHEAD + 3:
            raise ValueError("dgram_max %d is too small for a reading" % dgram_max)
        self.host, self.port = host, port
        self.tcp_handshake = tcp_handshake
        self.keys = Keys(token)
        self.batch = batch
        self.attempts = attempts
        self.timeout = timeout
        self.dgram_max = dgram_max
        self.inflight = max(1, inflight)
        self.on_ack = on_ack
        self.bytes_sent = self.bytes_received = 0
        self.dgrams_sent = self.dgrams_received = 0
        self.acked_seq = 0
        self.first_seq = None
        self.last_seq = 0
        self.connections = 0
        self.resends = self.lost_sessions = self.dropped = 0
        self.errors = []
        # readings not yet acknowledged, oldest first: [seq, payload, sent_at,
        # resent]. seq None until a session numbers it; the numbered ones
        # come first, consecutive.
        self._held = []
        self._sock = None
        self.window = self.max_frame = None
        self.session_id = self._skey = None
        self._end_session()
        self._breaks = 0
        self._srtt = None
        self._refused = False

    # -- public --

    def connect(self):
        """Shakes hands, retrying as configured. Raises FrameError (0x01,
        0x02: refused), ServerNotAuthenticated, ProtocolError, or
        ConnectionError when every attempt failed."""
        self._end_session()
        last = None
        for attempt in range(max(1, self.attempts)):
            if attempt:
                time.sleep(min(0.05 * (1 << min(attempt - 1, 6)), 2.0))
            try:
                self._handshake()
                return
            except FrameError as e:
                if not e.retryable:
                    raise
                last = e
            except ConnectionLost as e:
                last = e
            except OSError as e:
                self._close_sock()
                last = e
        n = max(1, self.attempts)
        raise ConnectionError("no UDP session with %s:%d after %d handshake%s: %s" %
                              (self.host, self.port, n, "" if n == 1 else "s", last))

    def send(self, payload):
        """Queues one reading (bytes or str), sends the datagrams it fills, and
        returns how many readings are held unacknowledged. Blocks (reading
        ACKs, resending) while the readings in flight are at the limit. The
        reading is queued even when this raises."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        limit = self._max_single()
        if len(payload) + UDP_OVERHEAD > limit:
            raise ValueError("a reading of %d bytes does not fit a datagram of %d" %
                             (len(payload), limit))
        item = [None, bytes(payload), None, False]
        self._held.append(item)
        if self.session_id is not None:
            self._number()
        self._run(lambda: not self._full_dgram_waiting(), None)
        return len(self._held)

    def ping(self):
        """PING in a session datagram (the server answers PONG)."""
        if self.session_id is None:
            self.connect()
        self._send_dgram(self._encode(frame(PING)))

    def poll(self, timeout):
        """Reads and handles what the server sends for timeout seconds (its
        ACKs, ERROR); raises as flush() does for an ERROR."""
        deadline = time.monotonic() + timeout
        while self.session_id is not None:
            data = self._recv(deadline)
            if data is None:
                return
            self._on_dgram(data)

    def rebind(self):
        """Moves to a new source port (as a NAT mapping that changed): the
        session goes on, the MAC names it (§6); the server answers the newest
        verified address."""
        self._close_sock()
        self._open_sock()

    def close(self, linger=1.0):
        """Says BYE (the server acks what it has and ends the session), waits
        up to linger seconds for its answer, and closes. Readings not
        acknowledged stay held: a later connect() or flush() sends them again."""
        if self.session_id is not None and self._sock is not None:
            try:
                self._send_dgram(self._encode(frame(BYE)))
                deadline = time.monotonic() + linger
                while True:
                    data = self._recv(deadline)
                    if data is None or self._on_dgram(data):
                        break
            except (FrameError, ProtocolError, OSError):
                pass
        self._end_session()
        self._close_sock()

    # -- sockets --

    def _open_sock(self):
        fam, typ, proto, _, addr = socket.getaddrinfo(self.host, self.port, 0,
                                                      socket.SOCK_DGRAM)[0]
        s = socket.socket(fam, typ, proto)
        try:
            s.connect(addr)  # only the server's datagrams come in
        except OSError:
            s.close()
            raise
        self._sock = s

    def _close_sock(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None

    def _send_dgram(self, data):
        if self._sock is None:
            self._open_sock()
        try:
            self._sock.send(data)
        except ConnectionRefusedError:
            return  # an ICMP port unreachable of an earlier datagram: nobody listens now
        self.bytes_sent += len(data)
        self.dgrams_sent += 1

    def _recv(self, deadline):
        """The next datagram that arrives before deadline, or None."""
        while True:
            left = deadline - time.monotonic()
            r, _, _ = select.select([self._sock], [], [], max(0.0, left))
            if not r:
                return None
            try:
                data = self._sock.recv(65536)
            except ConnectionRefusedError:
                self._refused = True  # ICMP: nobody listens there (yet); its silence says the rest
                continue
            except (BlockingIOError, InterruptedError):
                continue
            self.bytes_received += len(data)
            self.dgrams_received += 1
            return data

    # -- the handshake --

    def _handshake(self):
        """One handshake within self.timeout: HELLO and HELLO|CHALLENGE|PROOF,
        each repeated after 1 s, doubling; or over TCP (tcp_handshake)."""
        if self.tcp_handshake is not None:
            return self._handshake_tcp()
        self._end_session()
        # a socket of its own for each session: host and port may have been
        # changed, and datagrams of the session before must not be read as this one's
        self._close_sock()
        self._open_sock()
        self._refused = False
        next_seq = self._held[0][0] if self._held and self._held[0][0] else 0
        deadline = time.monotonic() + self.timeout
        hello = chal = proof = auth = None
        chal_at = sent_at = interval = 0.0
        bad_signatures = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                if bad_signatures:
                    raise ServerNotAuthenticated(
                        "the server's signature does not verify: refusing %s:%d (not the "
                        "server this token belongs to)" % (self.host, self.port))
                raise ConnectionLost("no answer to the UDP handshake within %.1fs%s" % (
                    self.timeout, " (ICMP port unreachable: nothing listens there)"
                    if self._refused else ""))
            if chal is not None and now - chal_at > UDP_CHALLENGE_TTL:
                chal = hello = None  # about to be refused as stale: from HELLO again
            if chal is None and hello is None:
                hello = hello_frame(self.keys.token_id, secrets.token_bytes(NONCE_LEN), next_seq)
                interval = 1.0
            # the RTT from the newest HELLO: from the first, a lost one would
            # count its 1 s of silence into every resend timer of the session
            sent_at = now
            self._send_dgram(HANDSHAKE_PREFIX + (hello if chal is None else hello + chal + proof))
            wait_until = min(now + interval, deadline)
            interval *= 2
            while True:
                data = self._recv(wait_until)
                if data is None:
                    break
                if data[:SID_LEN] != HANDSHAKE_PREFIX:
                    self.dropped += 1  # an older session's datagram
                    continue
                try:
                    frames = split_frames(data[SID_LEN:])
                except ProtocolError:
                    self.dropped += 1
                    continue
                if len(frames) != 1:
                    self.dropped += 1
                    continue
                ftype, body, raw = frames[0]
                if ftype == ERROR:
                    self._error(body)  # raises
                if ftype == CHALLENGE and chal is None:
                    try:
                        parse_challenge(body)
                    except ProtocolError:
                        self.dropped += 1
                        continue
                    chal, chal_at = raw, time.monotonic()
                    self._srtt = self._srtt or max(0.0005, chal_at - sent_at)
                    auth = hello + chal
                    proof = proof_frame(client_proof(self.keys.client_key, self.keys.stored_key,
                                                     auth))
                    interval = 1.0
                    break  # step 3 at once
                if ftype == WELCOME and chal is not None:
                    try:
                        sig, durable, max_frame, window, _ticket = parse_welcome(body)
                    except ProtocolError:
                        self.dropped += 1
                        continue
                    if not hmac.compare_digest(sig, server_signature(self.keys.server_key,
                                                                     auth, proof)):
                        bad_signatures += 1  # forged, or not our server
                        continue
                    if window < 1 or max_frame < UDP_OVERHEAD + 3:
                        raise ProtocolError("WELCOME with window %d, max_frame %d" %
                                            (window, max_frame))
                    self._start_session(auth, proof, durable, max_frame, window)
                    return
                self.dropped += 1  # a repeated CHALLENGE, a late WELCOME, ...

    def _handshake_tcp(self):
        """§6 over TCP: HELLO (flags bit 1), CHALLENGE, PROOF, WELCOME on a TCP
        connection that the server then closes; the session's datagrams go on
        a fresh UDP socket, as after a UDP handshake."""
        self._end_session()
        self._close_sock()
        next_seq = self._held[0][0] if self._held and self._held[0][0] else 0
        deadline = time.monotonic() + self.timeout
        host, port = self.tcp_handshake
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as e:
            raise ConnectionLost("TCP handshake with %s:%d: %s" % (host, port, e))
        rbuf = bytearray()

        def next_frame():
            while True:
                got = split_frame(rbuf)
                if got is not None:
                    ftype, body, n = got
                    del rbuf[:n]
                    if ftype == ERROR:
                        self._error(body)  # raises
                    return ftype, body, bytes(frame(ftype, body))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionLost("no answer to the TCP handshake within %.1fs" %
                                         self.timeout)
                sock.settimeout(left)
                try:
                    data = sock.recv(4096)
                except (ConnectionResetError, socket.timeout) as e:
                    raise ConnectionLost("recv: %s" % e)
                if not data:
                    raise ConnectionLost("the server closed the connection during the handshake")
                self.bytes_received += len(data)
                rbuf.extend(data)

        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = hello_frame(self.keys.token_id, secrets.token_bytes(NONCE_LEN), next_seq,
                                flags=HELLO_UDP)
            sent_at = time.monotonic()
            sock.sendall(hello)
            self.bytes_sent += len(hello)
            ftype, body, chal = next_frame()
            if ftype != CHALLENGE:
                raise ProtocolError("expected CHALLENGE, got frame type 0x%02x" % ftype)
            parse_challenge(body)
            self._srtt = self._srtt or max(0.0005, time.monotonic() - sent_at)
            auth = hello + chal
            proof = proof_frame(client_proof(self.keys.client_key, self.keys.stored_key, auth))
            # nothing follows PROOF on this connection (§6): the server would refuse it
            sock.sendall(proof)
            self.bytes_sent += len(proof)
            ftype, body, _ = next_frame()
            if ftype != WELCOME:
                raise ProtocolError("expected WELCOME, got frame type 0x%02x" % ftype)
            sig, durable, max_frame, window, _ticket = parse_welcome(body)
        except OSError as e:
            raise ConnectionLost("TCP handshake: %s" % e)
        finally:
            sock.close()  # the server closes its side after WELCOME
        if not hmac.compare_digest(sig, server_signature(self.keys.server_key, auth, proof)):
            raise ServerNotAuthenticated(
                "the server's signature does not verify: refusing %s:%d (not the server this "
                "token belongs to)" % (host, port))
        if window < 1 or max_frame < UDP_OVERHEAD + 3:
            raise ProtocolError("WELCOME with window %d, max_frame %d" % (window, max_frame))
        self._open_sock()
        self._start_session(auth, proof, durable, max_frame, window)

    def _start_session(self, auth, proof, durable=0, max_frame=UDP_SAFE_DGRAM, window=4096):
        """The session of a verified WELCOME: its key and id (§6), numbering
        from HELLO's next_seq, or after durable_seq."""
        self._skey = session_key(self.keys.client_key, auth, proof)
        self.session_id = udp_session_id(self._skey)
        self.max_frame, self.window = max_frame, window
        self._out_seq = 0
        self._rx = ReplayWindow()
        self._durable0 = durable
        self.connections += 1
        self._acked(durable)
        self._number()
        self._send_upto = self.acked_seq  # everything held goes (again)
        self._timer = None
        self._rto_n = 0
        self._unanswered = 0

    def _end_session(self):
        self.session_id = self._skey = None
        self._send_upto = self._durable0 = 0
        self._timer = None
        self._rto_n = self._unanswered = 0

    def _number(self):
        """Numbers the readings not numbered yet, after the last numbered one
        or after the server's mark, whichever is higher."""
        nxt = max(self.acked_seq, self._durable0) + 1
        i = len(self._held)
        while i and self._held[i - 1][0] is None:  # the unnumbered ones are last
            i -= 1
        if i:
            nxt = self._held[i - 1][0] + 1
        for it in self._held[i:]:
            if it[0] is None:
                it[0] = nxt
                if self.first_seq is None:
                    self.first_seq = nxt
                self.last_seq = max(self.last_seq, nxt)
            nxt = it[0] + 1

    # -- datagrams --

    def _encode(self, frames):
        """The session's next datagram of frames: numbered and MACed."""
        self._out_seq += 1
        return udp_session_dgram(self._skey, self.session_id, FROM_DEVICE, self._out_seq, frames)

    def _open(self, data):
        """(dgram_seq, frames) of a valid, fresh datagram of the server's in
        this session, or None."""
        if self._skey is None:
            return None
        got = udp_open_dgram(self._skey, self.session_id, FROM_SERVER, data)
        if got is None or not self._rx.fresh(got[0]):
            return None
        return got

    def _max_single(self):
        return min(self.max_frame or 8192, 8192)

    def _unsent(self):
        """Index in _held of the first reading this pass has not sent."""
        if not self._held or self._held[0][0] is None:
            return 0
        return max(0, self._send_upto + 1 - self._held[0][0])

    def _take(self, start):
        """How many readings from _held[start] one datagram carries, and
        whether that datagram is full (by size or by batch)."""
        budget = self.dgram_max - UDP_OVERHEAD
        n = size = 0
        for j in range(start, len(self._held)):  # not a slice: _held may be long
            it = self._held[j]
            if it[0] is None:
                break
            cost = len(varint(len(it[1]))) + len(it[1])
            if n and size + cost > budget:
                return n, True
            n += 1
            size += cost
            if self.batch and n >= self.batch:
                return n, True
        return n, size >= budget

    def _full_dgram_waiting(self):
        """A datagram's worth of readings not sent yet (send() waits, reading
        ACKs, while the flight limit keeps it back)."""
        if self.session_id is None:
            return True
        i = self._unsent()
        return i < len(self._held) and self._take(i)[1]

    def _in_flight(self):
        return max(0, self._send_upto - self.acked_seq)

    def _flight_limit(self):
        return min(self.inflight, self.window or 4096)

    def _rto(self):
        base = max(UDP_RESEND_MIN, 2 * (self._srtt or 0.1))
        return min(base * (1 << min(self._rto_n, 8)), UDP_RESEND_MAX)

    def _pump(self, partial):
        """Sends datagrams of readings this pass has not sent, while the
        flight limit has room; a datagram short of full only when partial."""
        while True:
            i = self._unsent()
            room = self._flight_limit() - self._in_flight()
            if i >= len(self._held) or room <= 0:
                return
            n, full = self._take(i)
            if n == 0 or not (full or partial):
                return
            n = min(n, room)
            items = self._held[i:i + n]
            data = self._encode(udp_readings_frames(items[0][0], [it[1] for it in items]))
            now = time.monotonic()
            for it in items:
                it[3] = it[2] is not None
                it[2] = now
            self._send_upto = items[-1][0]
            self._send_dgram(data)
            if self._timer is None:
                self._timer = now + self._rto()

    def _go_back(self):
        """Resends from the oldest reading not acknowledged (go-back-N)."""
        self._send_upto = self.acked_seq
        self.resends += 1

    def _on_timer(self):
        if self._unanswered >= UDP_UNANSWERED:
            # nothing heard through 3 resends: the server lost the session
            self.lost_sessions += 1
            self._end_session()
            self._breaks += 1
            if self._breaks > self.attempts:
                raise ConnectionError("%d UDP sessions in a row ended before an ACK (the "
                                      "server is silent)" % self._breaks)
            return
        self._unanswered += 1
        self._rto_n += 1
        self._go_back()
        self._timer = time.monotonic() + self._rto()

    def _on_dgram(self, data):
        """Handles one datagram from the server; True when it was a valid
        answer of this session."""
        if data[:SID_LEN] == HANDSHAKE_PREFIX:
            self.dropped += 1  # a late or repeated handshake answer
            return False
        got = self._open(data)
        if got is None:
            self.dropped += 1
            return False
        self._unanswered = 0
        for ftype, body, _ in split_frames(got[1]):
            if ftype == ACK:
                seq = parse_num(body, "ACK")
                if seq > max(self.last_seq, self._durable0):
                    raise ProtocolError("ACK %d beyond the last reading sent (%d)" %
                                        (seq, self.last_seq))
                if seq > self.acked_seq:
                    self._sample_rtt(seq)
                    self._acked(seq)
                    self._rto_n = 0
                    self._timer = (time.monotonic() + self._rto()) if self._in_flight() else None
                elif self._in_flight():
                    # the server dropped what came after its mark: a gap. Go
                    # back now if the oldest went out over an RTT ago
                    first = self._held[0] if self._held else None
                    if first and first[2] is not None and \
                            time.monotonic() - first[2] > max(0.005, self._srtt or 0.05):
                        self._go_back()
            elif ftype == ERROR:
                self._end_session()
                self._error(body)
            elif ftype in (PONG, PING):
                pass
            else:
                raise ProtocolError("unexpected frame type 0x%02x in a session datagram" % ftype)
        return True

    def _sample_rtt(self, seq):
        """RTT from the newest reading this ACK covers, from its latest
        sending. Not only from readings sent once (Karn): through heavy loss
        nearly every reading is resent, and an RTT never sampled again would
        keep a handshake's estimate for good. An ACK of an earlier sending
        makes it short, which the 200 ms floor bounds."""
        if not self._held or self._held[0][0] is None:
            return
        i = min(seq - self._held[0][0], len(self._held) - 1)
        it = self._held[i]
        if it[2] is None:
            return
        rtt = max(0.0005, time.monotonic() - it[2])
        self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt

    def _acked(self, seq):
        if seq <= self.acked_seq:
            return
        self.acked_seq = seq
        self._breaks = 0
        i = 0
        while i < len(self._held) and self._held[i][0] is not None and self._held[i][0] <= seq:
            i += 1
        del self._held[:i]
        if self._send_upto < seq:
            self._send_upto = seq
        if self.on_ack:
            self.on_ack(seq)

    def _error(self, body):
        code, seq, message = parse_error(body)
        e = FrameError(code, seq, message)
        e.sent_upto, e.acked = self.last_seq, self.acked_seq
        e.dropped = None
        self.errors.append(e)
        if code == 0x04 and seq:
            e.dropped = self._drop_too_large(seq)
        raise e

    def _drop_too_large(self, first):
        """ERROR 0x04: the largest held reading from first on is over the
        server's limit; forgets it and numbers the ones after it anew."""
        best = None
        for i, it in enumerate(self._held):
            if it[0] is not None and it[0] >= first and it[2] is not None:
                if best is None or len(it[1]) > len(self._held[best][1]):
                    best = i
        if best is None:
            return None
        it = self._held.pop(best)
        for later in self._held[best:]:
            later[0] = None
        self.last_seq = it[0] - 1
        return it[1]

    def _run(self, done, deadline, partial=False):
        """Sends, reads and resends until done() or deadline (None: none),
        shaking hands again when the session is lost or ended."""
        while True:
            if done():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            try:
                if self.session_id is None:
                    if self._breaks:
                        time.sleep(min(0.05 * (1 << min(self._breaks - 1, 6)), 2.0))
                    self.connect()
                    continue
                self._pump(partial)
                if done():
                    return True
                wake = self._timer if self._timer is not None else now + self.timeout
                if deadline is not None:
                    wake = min(wake, deadline)
                data = self._recv(wake)
                if data is not None:
                    self._on_dgram(data)
                elif self._timer is not None and time.monotonic() >= self._timer:
                    self._on_timer()
            except FrameError as e:
                self._end_session()
                if not e.retryable:
                    raise
                self._breaks += 1
                if self._breaks > self.attempts:
                    raise ConnectionError("%d UDP sessions in a row ended before an ACK; "
                                          "last: %s" % (self._breaks, e))


# ---- self-test against §9 ----

VECTOR_TOKEN = "slk_0123456789abcdef0123456789abcdef01234567"


def selftest(out=sys.stdout):
    """Checks every §9 vector (TCP frames, keys, and the UDP MACs); returns
    the number of failures, printing one line per check."""
    h = bytes.fromhex
    fails = []

    def eq(name, got, want):
        ok = got == want
        print("%s - %s" % ("ok" if ok else "FAIL", name), file=out)
        if not ok:
            print("#   want %s\n#   got  %s" % (want.hex(), got.hex()), file=out)
            fails.append(name)

    k = Keys(VECTOR_TOKEN)
    eq("token_id", k.token_id, h("4347b7175225e316"))
    eq("K", k.k, h("ff250fe3d21205e8f2cde9fa70b005cbe119713d256a593c68251226540e52c6"))
    eq("ClientKey", k.client_key,
       h("eda570aeba05268ad32dc3af7a776060ec2e2b10f074320b22a076a87cd956d3"))
    eq("StoredKey", k.stored_key,
       h("c88f34110c48bb78cbc7e3457ed95ce15bd752f7dafcc81ae5e590ce43ae82db"))
    eq("ServerKey", k.server_key,
       h("fb352130c3a759f4557162dcf695893ab69e1bcd8603cc2609d93efa70ac9322"))
    hello = hello_frame(k.token_id, bytes(range(16)), 1)
    eq("HELLO", hello, h("011b0100" "4347b7175225e316" "000102030405060708090a0b0c0d0e0f" "01"))
    chal = challenge_frame(bytes(range(0x10, 0x20)), 0)
    eq("CHALLENGE", chal, h("0211" "101112131415161718191a1b1c1d1e1f" "00"))
    eq("CHALLENGE parses", repr(parse_challenge(chal[2:])).encode(),
       repr((bytes(range(0x10, 0x20)), 0)).encode())
    auth = hello + chal
    eq("ClientSignature", client_signature(k.stored_key, auth),
       h("560daccc25c3b65accc5fb23249d17f7294f2fde8319a4d77e7c6bef6756e90f"))
    proof = proof_frame(client_proof(k.client_key, k.stored_key, auth))
    eq("PROOF", proof, h("0320" "bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc"))
    sig = server_signature(k.server_key, auth, proof)
    eq("server_signature", sig,
       h("1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f"))
    eq("session_key", session_key(k.client_key, auth, proof),
       h("4e2df11b0a8f6ee1a9dc1f4e52adccd91af2a553c7edb4bf1b661b2ce054a555"))
    welcome = welcome_frame(sig, 0, 65536, 4096)
    eq("WELCOME", welcome,
       h("0427" "1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f" "00"
         "808004" "8020" "00"))
    eq("WELCOME parses", repr(parse_welcome(welcome[2:])).encode(),
       repr((sig, 0, 65536, 4096, b"")).encode())
    reading = reading_frame(b'{"t":21.5}')
    eq("READING", reading, h("100a" "7b2274223a32312e357d"))
    eq("READING is 12 bytes", bytes([len(reading)]), bytes([12]))
    eq("READING, timed", timed_reading_frame(250, b'{"t":21.5}'),
       h("110c" "fa01" "7b2274223a32312e357d"))
    eq("BATCH", batch_frame([b'{"t":21.5}', b'{"t":21.6}', b'{"t":21.4}']),
       h("1222" "03" "0a7b2274223a32312e357d" "0a7b2274223a32312e367d" "0a7b2274223a32312e347d"))
    ack = ack_frame(1000)
    eq("ACK", ack, h("2002" "e807"))
    eq("ACK parses", varint(parse_num(ack[2:], "ACK")), varint(1000))
    err = error_frame(0x02, 0, "token not recognised")
    eq("ERROR", err, h("7f16" "0200" "746f6b656e206e6f74207265636f676e69736564"))
    eq("ERROR parses", repr(parse_error(err[2:])).encode(),
       repr((2, 0, "token not recognised")).encode())
    # §6 (UDP), through the UDP client's own session: its key and id from the
    # handshake above, its encoder for the device's datagram 7, its decoder
    # (MAC check and replay window) for the server's datagram 3
    u = UdpFrameClient("127.0.0.1", 9, VECTOR_TOKEN)
    u._start_session(auth, proof)
    eq("UDP session_key", u._skey,
       h("4e2df11b0a8f6ee1a9dc1f4e52adccd91af2a553c7edb4bf1b661b2ce054a555"))
    eq("UDP session_id", u.session_id, h("025dd5f8edec9bdd"))
    u._out_seq = 6
    dgram = h("025dd5f8edec9bdd" "07" "150101" "100a7b2274223a32312e357d" "761523fa5d457607")
    eq("UDP READING datagram (the client's encoder)",
       u._encode(udp_readings_frames(1, [b'{"t":21.5}'])), dgram)
    eq("UDP READING datagram is 32 bytes", bytes([len(dgram)]), bytes([32]))
    eq("UDP READING datagram opens as the device's",
       repr(udp_open_dgram(u._skey, u.session_id, FROM_DEVICE, dgram)).encode(),
       repr((7, h("150101" "100a7b2274223a32312e357d"))).encode())
    ackd = h("025dd5f8edec9bdd" "03" "200101" "1065dc9b2b819444")
    eq("UDP ACK datagram", udp_session_dgram(u._skey, u.session_id, FROM_SERVER, 3,
                                             ack_frame(1)), ackd)
    eq("UDP ACK datagram (the client's decoder)", repr(u._open(ackd)).encode(),
       repr((3, h("200101"))).encode())
    eq("UDP ACK datagram again: a replay, dropped", repr(u._open(ackd)).encode(), b"None")
    u2 = UdpFrameClient("127.0.0.1", 9, VECTOR_TOKEN)
    u2._start_session(auth, proof)
    eq("UDP ACK datagram, a MAC byte flipped: dropped",
       repr(u2._open(ackd[:-1] + bytes([ackd[-1] ^ 1]))).encode(), b"None")
    eq("UDP ACK datagram, from the device's direction: dropped",
       repr(u2._open(dgram)).encode(), b"None")
    u2._held.append([None, b'{"t":21.5}', None, False])
    u2._number()
    eq("UDP reading numbered after the mark", bytes([u2._held[0][0]]), bytes([1]))
    u2._on_dgram(ackd)
    eq("UDP ACK datagram handled: acked_seq 1, nothing held",
       bytes([u2.acked_seq, u2.held()]), bytes([1, 0]))
    # §6 over TCP: HELLO flags bit 1 is part of AuthMessage, so the session differs
    hello_u = hello_frame(k.token_id, bytes(range(16)), 1, flags=HELLO_UDP)
    eq("HELLO, UDP session over TCP", hello_u,
       h("011b0102" "4347b7175225e316" "000102030405060708090a0b0c0d0e0f" "01"))
    auth_u = hello_u + chal
    proof_u = proof_frame(client_proof(k.client_key, k.stored_key, auth_u))
    eq("PROOF, UDP session over TCP", proof_u,
       h("0320" "066019ede37c28ac888c3b168569fee711302e319ce2b10c7efcf6b513ea2025"))
    sig_u = server_signature(k.server_key, auth_u, proof_u)
    eq("server_signature, UDP session over TCP", sig_u,
       h("d7d9b16122fc15efe704426a60bae75f7e038e43d7d3424111997213d81422a4"))
    eq("WELCOME, UDP session over TCP", welcome_frame(sig_u, 0, 8192, 4096),
       h("0426" "d7d9b16122fc15efe704426a60bae75f7e038e43d7d3424111997213d81422a4" "00" "8040"
         "8020" "00"))
    u3 = UdpFrameClient("127.0.0.1", 9, VECTOR_TOKEN)
    u3._start_session(auth_u, proof_u)
    eq("session_key, UDP session over TCP", u3._skey,
       h("aaba4ac7fa268bf79a989de2f647abb458743e53861d6495401f0b80f065e6a2"))
    eq("session_id, UDP session over TCP", u3.session_id, h("283bf90bd84365b6"))
    eq("first datagram, UDP session over TCP", u3._encode(udp_readings_frames(1, [b'{"t":21.5}'])),
       h("283bf90bd84365b6" "01" "150101" "100a7b2274223a32312e357d" "026f3fbd041e369d"))
    # §1: minimal varints only
    for bad, why in ((b"\x80\x00", "a trailing 0x80 0x00"), (b"\xff" * 10 + b"\x01", "11 bytes"),
                     (b"\xff" * 9 + b"\x02", "past 64 bits")):
        try:
            read_varint(bad, 0)
            got = b"accepted"
        except ProtocolError:
            got = b"refused"
        eq("varint %s refused" % why, got, b"refused")
    eq("varint 2^64-1 round trip", repr(read_varint(varint((1 << 64) - 1), 0)).encode(),
       repr(((1 << 64) - 1, 10)).encode())
    print("%d checks failed" % len(fails) if fails else "all vectors ok", file=out)
    return len(fails)


# ---- CLI ----

def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="sluice_frame.py",
        description="Send readings to sluiced over the frame protocol (TCP, or UDP with --udp) "
                    "and wait until every "
                    "one is acknowledged as durable. Exit 0 only then; 1 on failure (one line "
                    "on stderr: why); 2 on bad usage.",
        epilog="On success it prints one line: readings sent (and their seq range), "
               "acknowledged, bytes out and in, connections made (a broken connection is "
               "made again and the unacknowledged readings resent).")
    ap.add_argument("--host", metavar="H", help="server address")
    ap.add_argument("--port", type=int, metavar="P",
                    help="the server's frame port (sluiced --frame; --udp: its UDP port)")
    ap.add_argument("--token", metavar="T", help="the device token (slk_..., from `sluice device add`)")
    ap.add_argument("--count", type=int, default=1, metavar="N", help="readings to send (default 1)")
    ap.add_argument("--payload", default='{"t":21.5}', metavar="TEXT",
                    help="the payload of every reading: TEXT, sent as its UTF-8 bytes, the "
                         "same for each reading (stored as JSON when it is JSON; "
                         "default %(default)s)")
    ap.add_argument("--batch", type=int, default=None, metavar="B",
                    help="readings per BATCH frame (default 1: one READING frame each); with "
                         "--udp, readings per datagram at most (default: as many as fit in "
                         "1,200 bytes)")
    ap.add_argument("--timeout", type=float, default=30.0, metavar="S",
                    help="seconds to wait for all acknowledgements (default 30)")
    ap.add_argument("--udp", action="store_true",
                    help="frames over UDP (§6; sluiced --udp): resends what is not acknowledged, "
                         "shakes hands again when the server lost the session")
    ap.add_argument("--udp-via-tcp", metavar="[HOST:]PORT", default=None,
                    help="with --udp: shake hands over TCP on this frame port (sluiced --frame; "
                         "HOST defaults to --host), then send the readings in datagrams to "
                         "--host:--port (§6, the handshake over TCP)")
    ap.add_argument("--selftest", action="store_true",
                    help="check the spec's test vectors (docs/frame-protocol.md §9) and exit")
    a = ap.parse_args(argv)
    if a.selftest:
        return 1 if selftest() else 0
    missing = [n for n in ("host", "port", "token") if getattr(a, n) is None]
    if missing:
        ap.print_usage(sys.stderr)
        print("sluice_frame: missing --%s" % ", --".join(missing), file=sys.stderr)
        return 2
    if a.count < 0 or (a.batch is not None and a.batch < 1) or a.timeout <= 0 or \
            not 0 < a.port < 65536:
        ap.print_usage(sys.stderr)
        print("sluice_frame: --count >= 0, --batch >= 1, --timeout > 0, --port 1..65535",
              file=sys.stderr)
        return 2
    tcp_hs = None
    if a.udp_via_tcp is not None:
        hs_host, _, hs_port = a.udp_via_tcp.rpartition(":")
        try:
            tcp_hs = (hs_host.strip("[]") or a.host, int(hs_port))  # [::1]:7000 too
        except ValueError:
            tcp_hs = None
        if not a.udp or tcp_hs is None or not 0 < tcp_hs[1] < 65536:
            ap.print_usage(sys.stderr)
            print("sluice_frame: --udp-via-tcp [HOST:]PORT goes with --udp", file=sys.stderr)
            return 2
    payload = a.payload.encode("utf-8")
    if a.udp:
        # handshakes of up to 10 s each, as many as --timeout holds
        hs = min(10.0, a.timeout)
        c = UdpFrameClient(a.host, a.port, a.token, batch=a.batch, timeout=hs,
                           attempts=max(1, int(a.timeout // hs)), tcp_handshake=tcp_hs)
    else:
        c = FrameClient(a.host, a.port, a.token, batch=a.batch or 1,
                        timeout=min(10.0, a.timeout))
    deadline = time.monotonic() + a.timeout
    try:
        c.connect()
        for _ in range(a.count):
            c.send(payload)
        ok = c.flush(max(0.0, deadline - time.monotonic()))
        c.close()
    except FrameError as e:
        print("sluice_frame: %s" % e, file=sys.stderr)
        return 1
    except (ServerNotAuthenticated, ProtocolError, ConnectionError, ValueError) as e:
        print("sluice_frame: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("sluice_frame: %s:%d: %s" % (a.host, a.port, e.strerror or e), file=sys.stderr)
        return 1
    acked = a.count - c.held()
    seqs = "seq %d..%d" % (c.first_seq, c.last_seq) if c.first_seq else "no seq"
    print("sent %d readings (%s), %d acknowledged, %d bytes out, %d bytes in, %d connection%s" % (
        a.count, seqs, acked, c.bytes_sent, c.bytes_received, c.connections,
        "" if c.connections == 1 else "s"))
    if not ok:
        print("sluice_frame: %d of %d readings not acknowledged within %gs" % (
            c.held(), a.count, a.timeout), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
