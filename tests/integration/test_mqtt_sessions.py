#!/usr/bin/env python3
"""Kept MQTT sessions (3.1.1 clean session 0, 5.0 session expiry > 0): the QoS 2
state of an interrupted exchange survives a reconnect, a restart of sluiced and
kill -9, so a PUBLISH sent again is not stored twice and a PUBREL after the
reconnect completes. Raw sockets (tests/integration/mqttwire.py) decide exactly
when the connection drops; paho shows a stock client resuming by itself.
Every stored reading is counted with `sluice log cat`.
"""
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mqttwire import (  # noqa: E402
    CONNACK, DISCONNECT, PUBCOMP, PUBREC, PUBREL, Raw, ack_packet, connect_packet,
    disconnect_packet, publish_packet, session_expiry)
from sluicetest import (  # noqa: E402
    Cli, Daemon, Suite, binaries, check, check_eq, metrics, skip, tmpdir)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=150)
S = {}


def setup():
    base = tmpdir("sluice-mqtt-sessions-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    S["tok"] = cli.add_device("acme", "pump-7")
    S["tok2"] = cli.add_device("acme", "pump-8")
    for name in ("rst", "race", "cycler"):  # cases that keep many sessions of one device
        S["tok_" + name] = cli.add_device("acme", name)
    S["cli"] = cli
    S["data"] = data
    start()


def start(port=0):
    d = Daemon(SLUICED, S["data"], ["--mqtt", "127.0.0.1:%d" % port], name="mqtt-sessions")
    d.start()
    S["d"] = d


def restart(kill=False, same_port=False):
    port = S["d"].mqtt if same_port else 0
    if kill:
        S["d"].kill()
    else:
        check_eq(S["d"].terminate(), 0, "sluiced exit status after SIGTERM")
        S["d"].kill()  # closes its output files
    start(port)


def stored(topic):
    return [r for r in S["cli"].log_cat("acme") if r.get("topic") == topic]


def connect(client_id, version=4, clean=False, expiry=None, tok=None):
    """A raw connection after its CONNACK; returns (raw, session_present, connack body)."""
    r = Raw(S["d"].mqtt)
    prop = (session_expiry(expiry),) if expiry is not None else ()
    r.send(connect_packet(tok or S["tok"], version=version, client_id=client_id, clean=clean,
                          prop=prop))
    body = r.expect(CONNACK, "CONNACK of %s" % client_id)
    check_eq(body[1], 0, "CONNACK code of %s" % client_id)
    return r, body[0] & 1, body


def pubcomp_reason(body):
    return body[2] if len(body) > 2 else 0


@suite.case("3.1.1 clean session 0: PUBREC, connection dropped; reconnect: session present, the "
            "DUP resend is answered and not stored, PUBREL completes; stored once")
def _():
    r, sp, _ = connect("keep-311")
    check_eq(sp, 0, "session present on the first CONNECT")
    r.send(publish_packet("s/311", b'{"n":1}', qos=2, pid=7))
    r.expect(PUBREC, "PUBREC")
    r.close()  # dropped before PUBREL: the client resends on its next connection
    r, sp, _ = connect("keep-311")
    check_eq(sp, 1, "session present after the reconnect")
    r.send(publish_packet("s/311", b'{"n":1}', qos=2, pid=7, dup=True))
    r.expect(PUBREC, "PUBREC of the DUP resend")
    r.send(ack_packet(PUBREL, 7))
    r.expect(PUBCOMP, "PUBCOMP")
    r.send(disconnect_packet())
    r.close()
    check_eq(len(stored("s/311")), 1, "stored copies")
    # the exchange ended: a PUBREL sent again still gets its PUBCOMP (3.1.1 has no 'not found')
    r, sp, _ = connect("keep-311")
    check_eq(sp, 1, "session present")
    r.send(ack_packet(PUBREL, 7))
    r.expect(PUBCOMP, "PUBCOMP of a repeated PUBREL")
    r.close()


@suite.case("5.0 session expiry 300: PUBREC, then sluiced restarts (SIGTERM); the resumed "
            "session completes the exchange with PUBCOMP 0x00, and a resend is not stored")
def _():
    r, sp, _ = connect("keep-5", version=5, clean=True, expiry=300)
    check_eq(sp, 0, "session present with clean start")
    for pid in (9, 10):
        r.send(publish_packet("s/5", b'{"n":%d}' % pid, qos=2, pid=pid, version=5))
        r.expect(PUBREC, "PUBREC %d" % pid)
    r.close()
    restart()
    r, sp, _ = connect("keep-5", version=5, expiry=300)
    check_eq(sp, 1, "session present after the restart")
    r.send(publish_packet("s/5", b'{"n":10}', qos=2, pid=10, version=5, dup=True))
    r.expect(PUBREC, "PUBREC of the DUP resend")
    for pid in (9, 10):
        r.send(ack_packet(PUBREL, pid))
        body = r.expect(PUBCOMP, "PUBCOMP %d" % pid)
        check_eq(pubcomp_reason(body), 0, "PUBCOMP %d reason (0x92: the server forgot it)" % pid)
    r.close()
    got = sorted(x["payload"]["n"] for x in stored("s/5"))
    check_eq(got, [9, 10], "stored readings")


@suite.case("kill -9 after 20 PUBRECs: every exchange is still held; DUP resends are answered "
            "without storing, 20 PUBRELs get PUBCOMP; each reading stored once (3.1.1 and 5.0)")
def _():
    for version, cid in ((4, "kill-311"), (5, "kill-5")):
        topic = "s/kill/%d" % version
        expiry = 600 if version == 5 else None
        r, _, _ = connect(cid, version=version, clean=True, expiry=expiry)
        if version == 4:  # clean session 1 first, to start empty; then kept
            r.close()
            r, _, _ = connect(cid, version=version)
        for pid in range(1, 21):
            r.send(publish_packet(topic, b'{"n":%d}' % pid, qos=2, pid=pid, version=version))
        for pid in range(1, 21):
            body = r.expect(PUBREC, "PUBREC %d" % pid)
            check_eq(struct.unpack(">H", body[:2])[0], pid, "PUBREC order")
        restart(kill=True)
        r.close()
        r, sp, _ = connect(cid, version=version, expiry=expiry)
        check_eq(sp, 1, "session present after kill -9 (v%d)" % version)
        for pid in range(1, 21):
            r.send(publish_packet(topic, b'{"n":%d}' % pid, qos=2, pid=pid, version=version,
                                  dup=True))
        for pid in range(1, 21):
            r.expect(PUBREC, "PUBREC of resend %d" % pid)
        for pid in range(1, 21):
            r.send(ack_packet(PUBREL, pid))
        for pid in range(1, 21):
            body = r.expect(PUBCOMP, "PUBCOMP %d" % pid)
            check_eq(pubcomp_reason(body), 0, "PUBCOMP %d reason" % pid)
        r.close()
        got = sorted(x["payload"]["n"] for x in stored(topic))
        check_eq(got, list(range(1, 21)), "v%d stored readings" % version)


@suite.case("clean start discards the kept session: session present 0, PUBREL -> 0x92, the "
            "same packet id is a new message and stored")
def _():
    r, _, _ = connect("wipe", version=5, clean=True, expiry=300)
    r.send(publish_packet("s/wipe", b'{"n":1}', qos=2, pid=3, version=5))
    r.expect(PUBREC, "PUBREC")
    r.close()
    r, sp, _ = connect("wipe", version=5, clean=True, expiry=300)
    check_eq(sp, 0, "session present after clean start")
    r.send(ack_packet(PUBREL, 3))
    check_eq(pubcomp_reason(r.expect(PUBCOMP, "PUBCOMP")), 0x92, "PUBCOMP reason")
    r.send(publish_packet("s/wipe", b'{"n":2}', qos=2, pid=3, version=5))
    r.expect(PUBREC, "PUBREC of the new message")
    r.send(ack_packet(PUBREL, 3))
    check_eq(pubcomp_reason(r.expect(PUBCOMP, "PUBCOMP")), 0, "PUBCOMP reason")
    r.close()
    check_eq(sorted(x["payload"]["n"] for x in stored("s/wipe")), [1, 2], "stored readings")


@suite.case("sessions are not kept without asking (5.0 expiry 0, 3.1.1 clean session 1), nor "
            "past their expiry, nor for another device with the same client id")
def _():
    for version, kw in ((5, {"clean": True}), (4, {"clean": True})):
        r, _, _ = connect("nokeep-%d" % version, version=version, **kw)
        r.send(publish_packet("s/nokeep", b"{}", qos=2, pid=1, version=version))
        r.expect(PUBREC, "PUBREC")
        r.close()
        r, sp, _ = connect("nokeep-%d" % version, version=version)
        check_eq(sp, 0, "session present (v%d, not kept)" % version)
        r.close()
    r, _, _ = connect("short", version=5, clean=True, expiry=1)
    r.close()
    r, sp, _ = connect("other-dev", version=5, clean=True, expiry=300)
    r.close()
    r, sp, _ = connect("other-dev", version=5, expiry=300, tok=S["tok2"])
    check_eq(sp, 0, "session present for another device's client id")
    r.close()
    time.sleep(2.5)
    r, sp, _ = connect("short", version=5, expiry=1)
    check_eq(sp, 0, "session present after its 1 s expiry")
    r.close()


@suite.case("5.0: an expiry above 7 days is capped and CONNACK says so; DISCONNECT may not set "
            "an expiry when CONNECT had none (0x82), and may end a kept session (expiry 0)")
def _():
    _, _, body = connect("capped", version=5, clean=True, expiry=0xFFFFFFFF)
    check(b"\x11\x00\x09\x3a\x80" in body[2:], "CONNACK Session Expiry Interval 604800: %r" % body)
    r, _, _ = connect("disc", version=5, clean=True)
    r.send(disconnect_packet(5, 0, (session_expiry(60),)))
    check_eq(r.expect(DISCONNECT, "server DISCONNECT")[0], 0x82, "DISCONNECT reason")
    r.close()
    r, _, _ = connect("ends", version=5, clean=True, expiry=300)
    r.send(disconnect_packet(5, 0, (session_expiry(0),)))
    check(r.eof_within(2), "connection open after DISCONNECT")
    r, sp, _ = connect("ends", version=5, expiry=300)
    check_eq(sp, 0, "session present after DISCONNECT with expiry 0")
    r.close()


@suite.case("a connection reset before its PUBREC (the reading still committing): the resend on "
            "the next connection is answered, not stored again")
def _():
    for i in range(10):
        cid, topic = "rst-%d" % i, "s/rst/%d" % i
        r, _, _ = connect(cid, tok=S["tok_rst"])
        r.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        r.send(publish_packet(topic, b'{"n":1}', qos=2, pid=7))
        r.close()  # RST at once: the server closes while the commit is in flight
        time.sleep(0.2)
        r, sp, _ = connect(cid, tok=S["tok_rst"])
        check_eq(sp, 1, "session present")
        r.send(publish_packet(topic, b'{"n":1}', qos=2, pid=7, dup=True))
        r.expect(PUBREC, "PUBREC of the resend")
        r.send(ack_packet(PUBREL, 7))
        r.expect(PUBCOMP, "PUBCOMP")
        r.close()
        check_eq(len(stored(topic)), 1, "stored copies of %s" % topic)


@suite.case("takeover while a QoS 2 reading commits: the newer connection completes it, and a new "
            "message reusing the packet id is stored (never swallowed)")
def _():
    for i in range(10):
        cid = "race-%d" % i
        a, _, _ = connect(cid, version=5, expiry=3600, tok=S["tok_race"])
        b = Raw(S["d"].mqtt)
        a.send(publish_packet("s/race-old/%d" % i, b'{"n":1}', qos=2, pid=7, version=5))
        b.send(connect_packet(S["tok_race"], version=5, client_id=cid, clean=False,
                              prop=(session_expiry(3600),)) +
               publish_packet("s/race-old/%d" % i, b'{"n":1}', qos=2, pid=7, version=5, dup=True))
        b.expect(CONNACK, "CONNACK of the takeover")
        b.expect(PUBREC, "PUBREC")
        b.send(ack_packet(PUBREL, 7))
        b.expect(PUBCOMP, "PUBCOMP")
        b.send(publish_packet("s/race-new/%d" % i, b'{"n":2}', qos=2, pid=7, version=5))
        b.expect(PUBREC, "PUBREC of the new message")
        b.send(ack_packet(PUBREL, 7))
        b.expect(PUBCOMP, "PUBCOMP of the new message")
        b.close()
        a.close()
        check_eq(len(stored("s/race-new/%d" % i)), 1, "new message stored")
        old = len(stored("s/race-old/%d" % i))
        check(old in (1, 2), "old message stored %d times" % old)  # 2: the documented window


@suite.case("a session that ended stays ended across restarts: resumed with expiry 0 then "
            "SIGTERM; or replaced by clean session 1 then kill -9 (no stale id swallows a reading)")
def _():
    r, _, _ = connect("ended-5", version=5, clean=True, expiry=3600)
    r.send(publish_packet("s/ended/old", b"1", qos=2, pid=9, version=5))
    r.expect(PUBREC, "PUBREC")
    r.close()
    r, sp, _ = connect("ended-5", version=5)  # resumes, not kept after
    check_eq(sp, 1, "session present")
    r.send(disconnect_packet(5))
    r.close()
    restart()
    r, sp, _ = connect("ended-5", version=5, expiry=3600)
    check_eq(sp, 0, "session present after the ended session and a restart")
    r.send(publish_packet("s/ended/new", b"2", qos=2, pid=9, version=5))
    r.expect(PUBREC, "PUBREC")
    r.close()
    for i in range(3):
        cid = "ended-311-%d" % i
        r, _, _ = connect(cid)
        r.send(publish_packet("s/ended311/old%d" % i, b"1", qos=2, pid=5))
        r.expect(PUBREC, "PUBREC")
        r.close()
        time.sleep(1.2)  # past the control thread's write of the detached session
        r, _, _ = connect(cid, clean=True)
        r.send(publish_packet("s/ended311/mid%d" % i, b"2", qos=2, pid=5))
        r.expect(PUBREC, "PUBREC")
        r.send(ack_packet(PUBREL, 5))
        r.expect(PUBCOMP, "PUBCOMP")
        r.send(disconnect_packet())
        r.close()
        restart(kill=True)
        r, sp, _ = connect(cid)
        check_eq(sp, 0, "session present after clean session 1 and kill -9")
        r.send(publish_packet("s/ended311/new%d" % i, b"3", qos=2, pid=5))
        r.expect(PUBREC, "PUBREC")
        r.close()
    time.sleep(0.3)
    topics = [x["topic"] for x in S["cli"].log_cat("acme") if x.get("topic", "").startswith(
        ("s/ended/", "s/ended311/"))]
    for t in ["s/ended/old", "s/ended/new"] + ["s/ended311/%s%d" % (k, i) for i in range(3)
                                                for k in ("old", "mid", "new")]:
        check_eq(topics.count(t), 1, "stored copies of %s" % t)


@suite.case("one device may keep 128 sessions: the 129th CONNECT asking for one is refused (5.0 "
            "0x97, 3.1.1 0x03); another device is not affected")
def _():
    tok = S["tok_cycler"]
    for i in range(128):
        r, _, _ = connect("cyc-%d" % i, version=5, clean=True, expiry=60, tok=tok)
        r.close()
    for version, code in ((5, 0x97), (4, 0x03)):
        r = Raw(S["d"].mqtt)
        prop = (session_expiry(60),) if version == 5 else ()
        r.send(connect_packet(tok, version=version, client_id="cyc-x", clean=version == 5,
                              prop=prop))
        body = r.expect(CONNACK, "CONNACK")
        check_eq(body[1], code, "CONNACK code v%d" % version)
        r.close()
    r, _, _ = connect("cyc-clean", version=5, clean=True, tok=tok)  # not kept: fine
    r.close()
    r, _, _ = connect("cyc-other", version=5, clean=True, expiry=60)  # another device
    r.close()


@suite.case("/metrics: sessions kept now (a gauge) and sessions resumed (a counter)")
def _():
    before = metrics(S["d"].admin)
    r, _, _ = connect("metered", version=5, clean=True, expiry=300)
    r.close()
    r, sp, _ = connect("metered", version=5, expiry=300)
    check_eq(sp, 1, "session present")
    r.close()
    m = metrics(S["d"].admin)
    check_eq(m["sluice_mqtt_sessions_resumed_total"] - before["sluice_mqtt_sessions_resumed_total"],
             1, "resumed")
    check(m["sluice_mqtt_sessions_kept"] >= 1, "kept gauge %r" % m["sluice_mqtt_sessions_kept"])


@suite.case("paho 3.1.1 clean_session=False: 300 QoS 2 messages while sluiced restarts twice; "
            "paho resumes by itself, every message stored exactly once")
def _():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            skip("python paho is not installed (apt-get install python3-paho-mqtt)")
    done = threading.Event()
    c = mqtt.Client(client_id="paho-keep", clean_session=True, protocol=mqtt.MQTTv311)
    c.username_pw_set("dev", S["tok"])
    c.max_inflight_messages_set(20)
    c.reconnect_delay_set(0.1, 0.5)
    completed = set()
    c.on_publish = lambda cl, u, mid: (completed.add(mid), len(completed) >= 300 and done.set())
    c.connect("127.0.0.1", S["d"].mqtt, keepalive=30)  # clean first, then kept
    c.disconnect()
    c = mqtt.Client(client_id="paho-keep", clean_session=False, protocol=mqtt.MQTTv311)
    c.username_pw_set("dev", S["tok"])
    c.max_inflight_messages_set(20)
    c.reconnect_delay_set(0.1, 0.5)
    c.on_publish = lambda cl, u, mid: (completed.add(mid), len(completed) >= 300 and done.set())
    c.connect("127.0.0.1", S["d"].mqtt, keepalive=30)
    c.loop_start()
    try:
        for i in range(300):
            c.publish("s/paho", b'{"i":%d}' % i, qos=2)
            if i in (100, 200):
                time.sleep(0.05)
                restart(same_port=True)  # paho reconnects to the port it knows
        check(done.wait(60), "paho completed %d of 300" % len(completed))
    finally:
        c.loop_stop()
        c.disconnect()
    got = sorted(x["payload"]["i"] for x in stored("s/paho"))
    check_eq(len(got), 300, "stored readings (distinct %d)" % len(set(got)))
    check(got == list(range(300)), "each of 300 once")


if __name__ == "__main__":
    suite.run(setup=setup)
