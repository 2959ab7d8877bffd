#!/usr/bin/env python3
"""UDP sessions made by the handshake over TCP (docs/frame-protocol.md §6,
"Handshake over TCP"; §10) against a real sluiced with --frame and --udp:
HELLO with flags bit 1 on the TCP port, WELCOME there, then MACed session
datagrams to the UDP port.

The reference client (clients/python/sluice_frame.py --udp --udp-via-tcp, and
UdpFrameClient(tcp_handshake=...)) and handshakes by hand, for what a
well-behaved device never sends: readings on the TCP connection, forged and
replayed datagrams. One owner per device across TCP connections, UDP
sessions of either making, and the server without --udp.

Every stored reading is checked with `sluice log cat`: proto "udp" (or
"frame" for plain TCP), its device_seq, exactly once, its own payload. Each
case uses a device of its own. Loopback only.
"""
import json
import os
import socket
import ssl
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
import sluice_frame as sf  # noqa: E402
from sluicetest import (  # noqa: E402
    CaseFailed, Daemon, Cli, Suite, binaries, check, check_eq, skip, tmpdir, wait_token_live)
from test_udp import (  # noqa: E402
    S, Raw, RawSession, Tcp, check_rows, client, device, no_answer, rows_of, run_client,
    summary, tcp_acked)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=170)
IDLE_S = 3  # the daemon's --idle-timeout: short, so that a case can outlast it


def setup():
    base = tmpdir("sluice-udp-tcp-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    S.update(base=base, data=data, cli=cli, tokens={}, runs=0)
    d = Daemon(SLUICED, data, ["--udp", "127.0.0.1:0", "--frame", "127.0.0.1:0", "--frames",
                               "127.0.0.1:0", "--idle-timeout", "%ds" % IDLE_S], name="udptcp")
    S["d"] = d
    d.start()
    with open(d.ports_file) as f:
        ports = json.load(f)
    S["udp"], S["frame"], S["frames"] = ports.get("udp"), ports.get("frame"), ports.get("frames")
    check(all(isinstance(S[k], int) and S[k] > 0 for k in ("udp", "frame", "frames")),
          "ports file: %r" % ports)


def tcp_client(tok, **kw):
    """A UdpFrameClient that shakes hands over TCP (S["frame"])."""
    return client(tok, tcp_handshake=("127.0.0.1", S["frame"]), **kw)


class TcpMade:
    """A UDP session made by hand over TCP: the handshake on a Tcp (HELLO
    flags bit 1), then datagrams built here on a Raw socket, with any
    dgram_seq. sock: a TCP socket to use instead (TLS)."""

    def __init__(self, keys, next_seq=0, tcp=None):
        self.t = tcp or Tcp()
        h = sf.hello_frame(keys.token_id, os.urandom(16), next_seq, flags=sf.HELLO_UDP)
        self.t.send(h)
        auth = h + sf.frame(sf.CHALLENGE, self.t.expect(sf.CHALLENGE, "CHALLENGE over TCP"))
        self.proof = sf.proof_frame(sf.client_proof(keys.client_key, keys.stored_key, auth))
        self.auth = auth
        self.keys = keys

    def finish(self, what="WELCOME over TCP"):
        """Sends PROOF, reads WELCOME and the server's close; the session."""
        self.t.send(self.proof)
        self.welcome = sf.parse_welcome(self.t.expect(sf.WELCOME, what, timeout=15))
        check(self.welcome[0] == sf.server_signature(self.keys.server_key, self.auth, self.proof),
              "%s: the server's signature" % what)
        check(self.t.frame(5) is None, "%s: the server did not close after WELCOME" % what)
        self.t.close()
        self.key = sf.session_key(self.keys.client_key, self.auth, self.proof)
        self.sid = sf.udp_session_id(self.key)
        self.r = Raw()
        self.rx = sf.ReplayWindow()
        return self

    send = RawSession.send
    recv = RawSession.recv
    expect = RawSession.expect
    close = RawSession.close


@suite.case("CLI --udp --udp-via-tcp: the handshake over TCP, 500 readings in datagrams, exit 0, "
            "each stored once with proto udp and device_seq 1..500; a second run continues at "
            "501..600")
def _():
    tok = device("cli-1")
    args = ["--udp", "--host", "127.0.0.1", "--port", str(S["udp"]), "--udp-via-tcp",
            str(S["frame"]), "--token", tok, "--payload", '{"v":1}']
    rc, out, err = run_client(*(args + ["--count", "500", "--batch", "25"]))
    check_eq(rc, 0, "exit (stdout %r, stderr %r)" % (out, err))
    m = summary(out)
    check_eq((m["sent"], m["first"], m["last"], m["acked"]), (500, 1, 500, 500), "summary")
    rc, out, err = run_client(*(args + ["--count", "100"]))
    check_eq(rc, 0, "second exit (stdout %r, stderr %r)" % (out, err))
    m = summary(out)
    check_eq((m["first"], m["last"], m["acked"]), (501, 600, 100), "second summary")
    check_rows(rows_of("cli-1"), range(1, 601), "two runs", lambda s: '{"v":1}')


@suite.case("by hand: WELCOME over TCP (max_frame 8192, window 4096, durable_seq final), then the "
            "server closes; the first datagram (dgram_seq 1, SEQ durable_seq + 1) is ACKed; a "
            "wrong MAC and a replayed dgram_seq get no answer and store nothing; the next "
            "datagram goes on")
def _():
    tok = device("raw-1")
    keys = sf.Keys(tok)
    c = tcp_client(tok, batch=5)
    c.connect()
    for i in range(1, 11):
        c.send(b'{"r":%d}' % i)
    check(c.flush(10), "the first session's readings not acknowledged")
    c.close()
    s = TcpMade(keys).finish()
    _, durable, max_frame, window, ticket = s.welcome
    check_eq((durable, max_frame, window, ticket), (10, 8192, 4096, b""), "WELCOME fields")
    d1 = sf.udp_readings_frames(11, [b'{"r":11}', b'{"r":12}'])
    s.send(1, d1)
    check_eq(sf.parse_num(s.expect(sf.ACK, "ACK of datagram 1"), "ACK"), 12, "ACK")
    # a MAC byte flipped: forged, dropped silently
    good = sf.udp_session_dgram(s.key, s.sid, sf.FROM_DEVICE, 2,
                                sf.udp_readings_frames(13, [b'{"r":"forged"}']))
    s.r.send(good[:-1] + bytes([good[-1] ^ 1]))
    no_answer(s.r.recv, 1.0, "a datagram with a wrong MAC")
    # datagram 1 again: a replay, dropped silently (its readings are not stored twice)
    s.send(1, d1)
    no_answer(s.r.recv, 1.0, "dgram_seq 1 again")
    # a datagram with the server's direction: not the device's
    s.r.send(sf.udp_session_dgram(s.key, s.sid, sf.FROM_SERVER, 3,
                                  sf.udp_readings_frames(13, [b'{"r":"dir"}'])))
    no_answer(s.r.recv, 1.0, "a datagram MACed as the server's")
    s.send(4, sf.udp_readings_frames(13, [b'{"r":13}']))
    check_eq(sf.parse_num(s.expect(sf.ACK, "ACK of datagram 4"), "ACK"), 13, "ACK")
    s.send(5, sf.frame(sf.BYE))
    check_eq(sf.parse_num(s.expect(sf.ACK, "the ACK after BYE"), "ACK"), 13, "last ACK")
    s.close()
    check_rows(rows_of("raw-1"), range(1, 14), "TCP-made sessions",
               lambda q: '{"r":%d}' % q)


@suite.case("frames after PROOF on the TCP connection: ERROR 0x07 instead of WELCOME, no "
            "session (its datagrams get no answer), nothing stored")
def _():
    tok = device("after-1")
    keys = sf.Keys(tok)
    s = TcpMade(keys)
    s.t.send(s.proof + sf.reading_frame(b'{"a":1}'))
    f = s.t.frame(5)
    check(f is not None and f[0] == sf.ERROR, "answer to a READING after PROOF: %r" % (f,))
    code, _, msg = sf.parse_error(f[1])
    check_eq(code, 0x07, "ERROR code (%r)" % msg)
    check("udp" in msg, "ERROR message %r" % msg)
    check(s.t.frame(5) is None, "the connection stays open after ERROR 0x07")
    s.t.close()
    key = sf.session_key(keys.client_key, s.auth, s.proof)
    r = Raw()
    r.send(sf.udp_session_dgram(key, sf.udp_session_id(key), sf.FROM_DEVICE, 1,
                                sf.udp_readings_frames(1, [b'{"a":2}'])))
    no_answer(r.recv, 1.0, "a datagram of the session that was refused")
    r.close()
    time.sleep(0.3)
    check_eq(rows_of("after-1"), [], "readings stored")
    # the device is free: a proper handshake over TCP goes through
    c = tcp_client(tok)
    c.connect()
    c.send(b'{"a":3}')
    check(c.flush(10), "reading after the refused attempt not acknowledged")
    c.close()
    check_rows(rows_of("after-1"), [1], "after the refused attempt", lambda q: '{"a":3}')


@suite.case("one owner: a TCP-made session takes over a UDP-handshake session (ERROR 0x06 in a "
            "session datagram), a UDP handshake takes over the TCP-made one, a TCP-made one "
            "takes over a TCP-made one, and a plain TCP connection takes over the last; "
            "numbering continuous, each reading stored once")
def _():
    tok = device("own-1")
    keys = sf.Keys(tok)
    seq = 0

    def put(c, n, tag):
        nonlocal seq
        for _ in range(n):
            seq += 1
            c.send(b'{"o":%d}' % seq)
        check(c.flush(10), "%s: readings not acknowledged" % tag)

    def taken(c, tag):
        try:
            c.poll(3)
            raise CaseFailed("%s: no ERROR 0x06 within 3 s (errors %r)" % (tag, c.errors))
        except sf.FrameError as e:
            check_eq(e.code, 0x06, "%s: the ERROR (%s)" % (tag, e))

    u = client(tok, batch=5)  # a UDP handshake
    u.connect()
    put(u, 10, "UDP")
    t1 = tcp_client(tok, batch=5)
    t1.connect()
    check_eq(t1.acked_seq, 10, "WELCOME's durable_seq over TCP after 10 UDP readings")
    taken(u, "the UDP-handshake session")
    put(t1, 10, "TCP-made")
    u2 = client(tok, batch=5)
    u2.connect()
    check_eq(u2.acked_seq, 20, "the UDP WELCOME's durable_seq")
    taken(t1, "the TCP-made session, by a UDP handshake")
    put(u2, 10, "UDP again")
    t2 = tcp_client(tok, batch=5)
    t2.connect()
    taken(u2, "the UDP session, by a TCP-made one")
    t3 = tcp_client(tok, batch=5)
    t3.connect()
    check_eq(t3.acked_seq, 30, "the second TCP-made WELCOME's durable_seq")
    # t2 sent no datagram: it has no address, the server has nowhere to say 0x06;
    # its first datagram meets no session (dropped, unanswered)
    t2._sock.send(t2._encode(sf.udp_readings_frames(31, [b'{"o":"stale"}'])))
    no_answer(lambda to: t2._recv(time.monotonic() + to), 1.0,
              "a datagram of the taken-over session without an address")
    put(t3, 10, "TCP-made, second")
    p = Tcp()
    w = p.login(keys)
    check_eq(w[1], 40, "plain TCP WELCOME's durable_seq")
    taken(t3, "the TCP-made session, by plain TCP")
    p.send(b"".join(sf.reading_frame(b'{"o":%d}' % i) for i in range(41, 46)) + sf.frame(sf.BYE))
    acks = []
    while True:
        f = p.frame()
        if f is None:
            break
        if f[0] == sf.ACK:
            acks.append(sf.parse_num(f[1], "ACK"))
    p.close()
    check_eq(acks[-1:], [45], "plain TCP's last ACK")
    check_rows(rows_of("own-1"), range(1, 46), "across six owners",
               lambda q: '{"o":%d}' % q, lambda q: "frame" if q > 40 else "udp")


@suite.case("a plain TCP connection live, then a TCP-made session of the same token: the TCP "
            "connection gets ERROR 0x06 after the ACKs due, WELCOME's durable_seq counts its "
            "readings, the session goes on from there")
def _():
    tok = device("own-2")
    keys = sf.Keys(tok)
    p = tcp_acked(keys, 20, b'{"q":%d}')
    c = tcp_client(tok, batch=10)
    c.connect()
    check_eq(c.acked_seq, 20, "WELCOME's durable_seq")
    code, _, msg = p.error("the plain TCP connection")
    check_eq(code, 0x06, "its ERROR (%r)" % msg)
    p.close()
    for i in range(21, 41):
        c.send(b'{"q":%d}' % i)
    check(c.flush(10), "TCP-made readings not acknowledged")
    c.close()
    check_rows(rows_of("own-2"), range(1, 41), "TCP then TCP-made", lambda q: '{"q":%d}' % q,
               lambda q: "frame" if q <= 20 else "udp")


@suite.case("the handshake over TLS (--frames) makes the UDP session the same way")
def _():
    tok = device("tls-1")
    keys = sf.Keys(tok)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the daemon's self-signed certificate
    raw = socket.create_connection(("127.0.0.1", S["frames"]), timeout=5)
    t = Tcp.__new__(Tcp)
    t.s = ctx.wrap_socket(raw, server_hostname="localhost")
    t.buf = bytearray()
    s = TcpMade(keys, tcp=t).finish("WELCOME over TLS")
    s.send(1, sf.udp_readings_frames(s.welcome[1] + 1, [b'{"t":1}', b'{"t":2}']))
    check_eq(sf.parse_num(s.expect(sf.ACK, "ACK"), "ACK"), 2, "ACK")
    s.close()
    check_rows(rows_of("tls-1"), [1, 2], "over TLS", lambda q: '{"t":%d}' % q)


@suite.case("the idle timeout applies from the making: a TCP-made session with no datagram for "
            "longer than --idle-timeout is gone (its datagram gets no answer); the client "
            "shakes hands again over TCP and every reading is stored once")
def _():
    tok = device("idle-1")
    s = TcpMade(sf.Keys(tok)).finish()
    time.sleep(IDLE_S + 1.5)  # the sweep runs once a second
    s.send(1, sf.udp_readings_frames(1, [b'{"i":1}']))
    no_answer(s.r.recv, 1.0, "a datagram after the idle timeout")
    s.close()
    c = tcp_client(tok, batch=5)
    c.connect()
    c.send(b'{"i":1}')
    check(c.flush(10), "not acknowledged after the idle session")
    time.sleep(IDLE_S + 1.5)
    c.send(b'{"i":2}')
    check(c.flush(15), "not acknowledged after the client's session idled out")
    check(c.connections >= 2, "the client did not shake hands again (%d)" % c.connections)
    c.close()
    check_rows(rows_of("idle-1"), [1, 2], "around the idle timeouts", lambda q: '{"i":%d}' % q)


@suite.case("revocation reaches a TCP-made session at its next datagram (ERROR 0x02)")
def _():
    tok = device("revoke-1")
    c = tcp_client(tok, batch=10)
    c.connect()
    for i in range(1, 11):
        c.send(b'{"rv":%d}' % i)
    check(c.flush(10), "readings before the revocation not acknowledged")
    rc, _, err = S["cli"].run("token", "revoke", "--org", "acme", "revoke-1")
    if rc == 2 and "not implemented" in err:
        c.close()
        skip("the CLI cannot revoke a token yet (%s)" % err.strip())
    check_eq(rc, 0, "sluice token revoke exit (%r)" % err)
    time.sleep(1.5)
    c.send(b'{"rv":11}')
    try:
        c.flush(5)
        raise CaseFailed("flush after the revocation raised nothing")
    except sf.FrameError as e:
        check_eq(e.code, 0x02, "the error after the revocation (%s)" % e)
    check_rows(rows_of("revoke-1"), range(1, 11), "around the revocation",
               lambda q: '{"rv":%d}' % q)


@suite.case("a wrong token over TCP: ERROR 0x02 at PROOF, the CLI exits 1 saying so")
def _():
    tok = device("auth-1")
    rc, out, err = run_client("--udp", "--host", "127.0.0.1", "--port", str(S["udp"]),
                              "--udp-via-tcp", "127.0.0.1:%d" % S["frame"], "--token",
                              tok[:-4] + "zzzz", "--count", "3")
    check_eq(rc, 1, "exit (stdout %r, stderr %r)" % (out, err))
    check("authentication failed (ERROR 0x02)" in err, "stderr %r" % err)
    check_eq(rows_of("auth-1"), [], "readings stored")


@suite.case("a server without --udp answers HELLO flags bit 1 with ERROR 0x07 'no udp listener' "
            "(no CHALLENGE) and closes; the CLI exits 1 saying so; plain TCP still works there")
def _():
    # a data directory of its own: two daemons must not share one
    data = os.path.join(S["base"], "noudp", "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    tok = cli.add_device("acme", "noudp-1")
    d = Daemon(SLUICED, data, ["--frame", "127.0.0.1:0"], name="noudp")
    d.start()
    try:
        wait_token_live(d.http, tok)
        with open(d.ports_file) as f:
            port = json.load(f)["frame"]
        keys = sf.Keys(tok)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(sf.hello_frame(keys.token_id, os.urandom(16), 0, flags=sf.HELLO_UDP))
        buf = b""
        s.settimeout(5)
        while True:
            data = s.recv(4096)
            if not data:
                break
            buf += data
        s.close()
        got = sf.split_frame(buf)
        check(got is not None, "no frame before the close (%r)" % buf)
        check_eq(got[0], sf.ERROR, "the answer's type (%r)" % buf)
        code, _, msg = sf.parse_error(got[1])
        check_eq((code, msg), (0x07, "no udp listener"), "the ERROR")
        check_eq(len(buf), got[2], "bytes after the ERROR")
        rc, out, err = run_client("--udp", "--host", "127.0.0.1", "--port", "9", "--udp-via-tcp",
                                  str(port), "--token", tok, "--count", "1", "--timeout", "5")
        check_eq(rc, 1, "CLI exit (stdout %r, stderr %r)" % (out, err))
        check("no udp listener" in err, "stderr %r" % err)
        rc, out, err = run_client("--host", "127.0.0.1", "--port", str(port), "--token", tok,
                                  "--count", "2")
        check_eq(rc, 0, "plain TCP exit (stdout %r, stderr %r)" % (out, err))
        check_rows([r for r in cli.log_cat("acme") if r.get("device") == "noudp-1"], [1, 2],
                   "plain TCP", lambda q: '{"t":21.5}', lambda q: "frame")
    finally:
        d.kill()


if __name__ == "__main__":
    suite.run(setup)
