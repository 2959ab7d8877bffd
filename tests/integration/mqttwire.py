"""MQTT packets built by hand, and a raw-socket client, for the MQTT tests: what
stock clients never send (DUP resends on cue, a PUBREL after a restart, bad
bytes) needs the wire itself. Shared by test_mqtt*.py."""
import socket
import struct

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT = 2, 3, 4, 5, 6, 7, 14


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def mstr(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def props(*items):
    """v5 properties from (id, bytes) pairs, with their length in front."""
    body = b"".join(bytes([i]) + v for i, v in items)
    return varint(len(body)) + body


def session_expiry(seconds):
    return (0x11, struct.pack(">I", seconds))


def connect_packet(token, version=4, client_id="raw", keepalive=30, clean=True, prop=()):
    flags = 0xC0 | (0x02 if clean else 0)  # username + password
    vh = mstr("MQTT") + bytes([version, flags]) + struct.pack(">H", keepalive)
    if version == 5:
        vh += props(*prop)
    body = vh + mstr(client_id) + mstr("dev") + mstr(token)
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic, payload, qos=0, pid=1, version=4, dup=False):
    vh = mstr(topic) + (struct.pack(">H", pid) if qos else b"")
    if version == 5:
        vh += b"\x00"
    body = vh + payload
    return bytes([0x30 | (qos << 1) | (0x08 if dup else 0)]) + varint(len(body)) + body


def ack_packet(kind, pid):
    """PUBACK/PUBREC/PUBREL/PUBCOMP with no reason code (success in both versions)."""
    return bytes([kind << 4 | (2 if kind == PUBREL else 0), 2]) + struct.pack(">H", pid)


def disconnect_packet(version=4, reason=0, prop=()):
    if version != 5:
        return b"\xe0\x00"
    body = bytes([reason]) + props(*prop)
    return b"\xe0" + varint(len(body)) + body


def closed_within(sock, seconds):
    """True when the peer closes sock within seconds (whatever it sent before)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


class Raw:
    def __init__(self, port, timeout=5):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, b):
        self.s.sendall(b)

    def packet(self):
        """The next packet (type<<4|flags, body), or None at EOF."""
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + n:
                            pk = (self.buf[0], self.buf[i:i + n])
                            self.buf = self.buf[i + n:]
                            return pk
                        break
            d = self.s.recv(65536)
            if not d:
                return None
            self.buf += d

    def expect(self, kind, what):
        """The next packet, which must be of type kind; returns its body."""
        pk = self.packet()
        if pk is None:
            raise AssertionError("%s: the server closed the connection" % what)
        if pk[0] >> 4 != kind:
            raise AssertionError("%s: packet type %d %r, want %d" % (what, pk[0] >> 4, pk[1], kind))
        return pk[1]

    def eof_within(self, seconds):
        """True when the server closes within seconds (whatever it sent before)."""
        self.buf = b""
        return closed_within(self.s, seconds)

    def close(self):
        self.s.close()
