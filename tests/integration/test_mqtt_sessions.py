#!/usr/bin/env python3
"""Kept MQTT sessions (3.1.1 clean session 0, 5.0 session expiry > 0): the QoS 2
state of an interrupted exchange survives a reconnect, a restart of sluiced and
kill -9, so a PUBLISH sent again is not stored twice and a PUBREL after the
reconnect completes. Raw sockets (tests/integration/mqttwire.py) decide exactly
when the connection drops; paho shows a stock client resuming by itself.
Every stored reading is counted with `sluice log cat`.
"""
import os
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
