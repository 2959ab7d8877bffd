#!/usr/bin/env python3
"""MQTT ingest against a real sluiced with real clients: mosquitto_pub (3.1.1
and 5, QoS 0/1/2, -l streams), python paho (3.1.1 and 5), and raw sockets for
what stock clients never send (a first packet that is not CONNECT, a packet
claiming 256 MB, malformed bytes, silence). Every stored reading is checked
with `sluice log cat`: exactly once, with its topic, under the token's device.

Needs mosquitto_pub (apt mosquitto-clients) and paho (apt python3-paho-mqtt);
a case whose client is missing is skipped, a file where nothing ran exits 77.
"""
import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqttwire  # noqa: E402
from mqttwire import connect_packet, mstr, publish_packet, varint  # noqa: E402,F401
from sluicetest import (  # noqa: E402
    Cli, Daemon, Suite, binaries, check, check_eq, need_tool, request, skip, tmpdir)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=240)
S = {}


def paho():
    try:
        import paho.mqtt.client as mqtt  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-paho-mqtt
        try:
            import paho.mqtt.client as mqtt  # noqa: F401,F811
        except ImportError:
            skip("python paho is not installed (apt-get install python3-paho-mqtt)")
    return mqtt


def setup():
    base = tmpdir("sluice-mqtt-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    cli.add_org("other")
    S["tok"] = cli.add_device("acme", "pump-7")
    S["tok2"] = cli.add_device("other", "meter-1")
    S["cli"] = cli
    d = Daemon(SLUICED, data, ["--mqtt", "127.0.0.1:0", "--header-timeout", "2s"], name="mqtt")
    d.start()
    check(d.mqtt, "ports file has no mqtt port")
    S["d"] = d


def readings(org="acme"):
    return S["cli"].log_cat(org)


def by_topic(org, topic):
    return [r for r in readings(org) if r.get("topic") == topic]


def pub(args, inp=None, timeout=30):
    exe = need_tool("mosquitto_pub")
    p = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(S["d"].mqtt)] + args, input=inp,
                       capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


# ---- raw packets, for what stock clients never send (tests/integration/mqttwire.py) ----

class Raw(mqttwire.Raw):
    """A raw connection to this file's sluiced."""

    def __init__(self, timeout=5):
        super().__init__(S["d"].mqtt, timeout)


# ---- stock clients ----

@suite.case("mosquitto_pub 3.1.1 and 5, QoS 0/1/2: each message stored once, with its topic, "
            "under the token's device and org")
def _():
    for v in ("mqttv311", "mqttv5"):
        for q in (0, 1, 2):
            topic = "devices/pump-7/%s-q%d" % (v, q)
            rc, out = pub(["-V", v, "-q", str(q), "-t", topic, "-u", "pump", "-P", S["tok"],
                           "-m", '{"t":%d}' % q])
            check_eq(rc, 0, "mosquitto_pub %s QoS %d exit (%s)" % (v, q, out.strip()))
    time.sleep(0.3)  # QoS 0 has no ack: its commit may trail the exit
    rows = readings()
    for v in ("mqttv311", "mqttv5"):
        for q in (0, 1, 2):
            got = [r for r in rows if r.get("topic") == "devices/pump-7/%s-q%d" % (v, q)]
            check_eq(len(got), 1, "stored copies of %s QoS %d" % (v, q))
            check_eq(got[0]["payload"], {"t": q}, "payload")
            check_eq((got[0]["device"], got[0]["proto"]), ("pump-7", "mqtt"), "device, proto")
    check(not by_topic("other", "devices/pump-7/mqttv5-q1"), "a reading landed in another org")


@suite.case("the username may carry the token with an empty password (ThingsBoard style)")
def _():
    rc, out = pub(["-q", "1", "-t", "tb/telemetry", "-u", S["tok"], "-m", '{"tb":1}'])
    check_eq(rc, 0, "exit (%s)" % out.strip())
    check_eq(len(by_topic("acme", "tb/telemetry")), 1, "stored")


@suite.case("mosquitto_pub -l: 10,000 lines at QoS 1 and at QoS 2 (v5), all stored exactly once")
def _():
    n = 10000
    for q, v in ((1, "mqttv311"), (2, "mqttv5")):
        lines = "".join('{"i":%d}\n' % i for i in range(n)).encode()
        rc, out = pub(["-V", v, "-q", str(q), "-t", "stream/q%d" % q, "-P", S["tok"], "-u", "x",
                       "-l"], inp=lines, timeout=120)
        check_eq(rc, 0, "exit (%s)" % out.strip()[-300:])
    rows = readings()
    for q in (1, 2):
        got = sorted(r["payload"]["i"] for r in rows if r.get("topic") == "stream/q%d" % q)
        check_eq(len(got), n, "QoS %d readings stored" % q)
        check(got == list(range(n)), "QoS %d: %d distinct of %d, want each line once" %
              (q, len(set(got)), len(got)))


@suite.case("a bad token: CONNACK refusal (3.1.1 0x05 / 5.0 0x86 or 0x87), nothing stored")
def _():
    for v in ("mqttv311", "mqttv5"):
        rc, out = pub(["-V", v, "-q", "1", "-t", "bad/%s" % v, "-P", "slk_nope", "-u", "x",
                       "-m", "{}"])
        check(rc != 0, "mosquitto_pub %s with a bad token exited 0" % v)
        check("not authori" in out.lower() or "bad user" in out.lower(),
              "%s refusal not named: %r" % (v, out))
    for version, want in ((4, (0x20, b"\x00\x05")), (5, None)):
        r = Raw()
        r.send(connect_packet("slk_nope", version=version))
        pk = r.packet()
        check(pk is not None, "no CONNACK for a bad token (v%d)" % version)
        if want:
            check_eq(pk, want, "v3.1.1 CONNACK")
        else:
            check_eq(pk[0], 0x20, "v5 CONNACK type")
            check(pk[1][1] in (0x86, 0x87), "v5 CONNACK reason 0x%02x" % pk[1][1])
        check(r.eof_within(3), "connection not closed after a refused CONNECT (v%d)" % version)
        r.close()
    check(not by_topic("acme", "bad/mqttv311") and not by_topic("acme", "bad/mqttv5"),
          "refused publishes stored")


@suite.case("paho 3.1.1 and 5: 2,000 QoS 1 and 2,000 QoS 2 messages acknowledged, each stored once")
def _():
    mqtt = paho()
    for proto, name in ((mqtt.MQTTv311, "v311"), (mqtt.MQTTv5, "v5")):
        cl = mqtt.Client(client_id="paho-" + name, protocol=proto)
        cl.username_pw_set("dev", S["tok"])
        cl.max_inflight_messages_set(20)
        cl.max_queued_messages_set(0)
        cl.connect("127.0.0.1", S["d"].mqtt, keepalive=30)
        cl.loop_start()
        try:
            infos = []
            for q in (1, 2):
                for i in range(2000):
                    infos.append(cl.publish("paho/%s/q%d" % (name, q), '{"i":%d}' % i, qos=q))
            deadline = time.monotonic() + 60
            for inf in infos:
                inf.wait_for_publish(max(0.1, deadline - time.monotonic()))
                check(inf.is_published(), "paho %s: message %d not acknowledged" % (name, inf.mid))
        finally:
            cl.disconnect()
            cl.loop_stop()
    rows = readings()
    for name in ("v311", "v5"):
        for q in (1, 2):
            got = sorted(r["payload"]["i"] for r in rows if r.get("topic") == "paho/%s/q%d" %
                         (name, q))
            check(got == list(range(2000)), "paho %s QoS %d: %d stored, %d distinct, want 0..1999 once"
                  % (name, q, len(got), len(set(got))))


@suite.case("3.1.1 QoS 2 backlog: 200 PUBLISHes then their 200 PUBRELs in one burst (a reconnecting "
            "Paho's backlog) all complete; reading stops only until PUBRECs leave, never for "
            "the PUBRELs queued behind")
def _():
    r = Raw(timeout=10)
    r.send(connect_packet(S["tok"], version=4, client_id="backlog"))
    check_eq(r.packet()[0] >> 4, 2, "CONNACK")
    n = 200
    r.send(b"".join(publish_packet("backlog/q2", b'{"i":%d}' % i, qos=2, pid=i + 1)
                    for i in range(n)))
    r.send(b"".join(mqttwire.ack_packet(mqttwire.PUBREL, i + 1) for i in range(n)))
    kinds = []
    while len(kinds) < 2 * n:
        pk = r.packet()
        check(pk is not None, "closed after %d answers" % len(kinds))
        kinds.append(pk[0] >> 4)
    check_eq((kinds.count(5), kinds.count(7)), (n, n), "PUBRECs, PUBCOMPs")
    r.close()
    got = sorted(x["payload"]["i"] for x in by_topic("acme", "backlog/q2"))
    check(got == list(range(n)), "stored: %d of %d distinct" % (len(set(got)), n))


@suite.case("QoS 2 resend with DUP before PUBREL: PUBREC again, stored once; PUBREL -> PUBCOMP")
def _():
    r = Raw()
    r.send(connect_packet(S["tok"], version=4, client_id="dup"))
    check_eq(r.packet(), (0x20, b"\x00\x00"), "CONNACK")
    r.send(publish_packet("dup/q2", b'{"d":1}', qos=2, pid=7))
    check_eq(r.packet(), (0x50, b"\x00\x07"), "PUBREC")
    r.send(publish_packet("dup/q2", b'{"d":1}', qos=2, pid=7, dup=True))
    check_eq(r.packet(), (0x50, b"\x00\x07"), "PUBREC for the DUP")
    r.send(b"\x62\x02\x00\x07")
    check_eq(r.packet(), (0x70, b"\x00\x07"), "PUBCOMP")
    r.send(b"\xe0\x00")
    r.close()
    check_eq(len(by_topic("acme", "dup/q2")), 1, "stored copies")


@suite.case("MQTT 5 topic aliases: set with a topic, used without one, recorded under the topic; "
            "alias 0 or above the maximum -> DISCONNECT 0x94, an unset one -> 0x82")
def _():
    def pub_alias(topic, alias, payload, pid):
        props = b"\x23" + struct.pack(">H", alias)
        vh = mstr(topic) + struct.pack(">H", pid) + varint(len(props)) + props
        body = vh + payload
        return b"\x32" + varint(len(body)) + body

    r = Raw()
    r.send(connect_packet(S["tok"], version=5, client_id="alias"))
    pk = r.packet()
    check_eq(pk[1][:2], b"\x00\x00", "CONNACK")
    check(b"\x22\x00\x0a" in pk[1], "CONNACK does not announce Topic Alias Maximum 10: %r" % pk[1])
    r.send(pub_alias("alias/long/topic/name", 3, b'{"a":1}', 1))
    r.send(pub_alias("", 3, b'{"a":2}', 2))
    check_eq([r.packet()[0], r.packet()[0]], [0x40, 0x40], "PUBACKs")
    r.close()
    got = sorted(x["payload"]["a"] for x in by_topic("acme", "alias/long/topic/name"))
    check_eq(got, [1, 2], "readings recorded under the aliased topic")
    for alias, topic, want in ((0, "t", 0x94), (11, "t", 0x94), (5, "", 0x82)):
        r = Raw()
        r.send(connect_packet(S["tok"], version=5, client_id="alias-bad"))
        r.packet()
        r.send(pub_alias(topic, alias, b"{}", 1))
        pk = r.packet()
        check(pk is not None and pk[0] == 0xE0 and pk[1][:1] == bytes([want]),
              "alias %d topic %r: want DISCONNECT 0x%02x, got %r" % (alias, topic, want, pk))
        r.close()


@suite.case("PUBACKs leave in the order of the PUBLISHes (20 QoS 1 sent back to back)")
def _():
    r = Raw()
    r.send(connect_packet(S["tok"], version=5, client_id="order"))
    pk = r.packet()
    check_eq((pk[0], pk[1][:2]), (0x20, b"\x00\x00"), "CONNACK")
    r.send(b"".join(publish_packet("order/q1", b'{"n":%d}' % i, qos=1, pid=i + 1, version=5)
                    for i in range(20)))
    ids = []
    for _ in range(20):
        pk = r.packet()
        check(pk is not None and pk[0] == 0x40, "expected PUBACK, got %r" % (pk,))
        ids.append(struct.unpack(">H", pk[1][:2])[0])
    check_eq(ids, list(range(1, 21)), "PUBACK order")
    r.close()


@suite.case("a first packet that is not CONNECT, and a second CONNECT, close the connection")
def _():
    r = Raw()
    r.send(publish_packet("early", b"{}", qos=1))
    check(r.eof_within(3), "PUBLISH before CONNECT left open")
    r.close()
    r = Raw()
    r.send(connect_packet(S["tok"], client_id="twice"))
    check_eq(r.packet(), (0x20, b"\x00\x00"), "CONNACK")
    r.send(connect_packet(S["tok"], client_id="twice"))
    check(r.eof_within(3), "a second CONNECT left open")
    r.close()
    check(not by_topic("acme", "early"), "PUBLISH before CONNECT stored")


@suite.case("a packet claiming 256 MB is refused from its header (v5: DISCONNECT 0x95), "
            "14 such first packets leave RSS within a few MB")
def _():
    pid = S["d"].proc.pid

    def rss():
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    before = rss()
    socks = []
    for _ in range(14):
        r = Raw()
        r.send(b"\x10" + varint(256 * 1024 * 1024 - 8) + b"\x00\x04MQTT\x04" + b"x" * 60000)
        socks.append(r)
    for r in socks:
        check(r.eof_within(3), "a first packet claiming 256 MB was not refused")
        r.close()
    check(rss() - before < 8 << 20, "RSS grew by %d bytes" % (rss() - before))
    r = Raw()
    r.send(connect_packet(S["tok"], version=5, client_id="big"))
    r.packet()
    r.send(b"\x30" + varint(256 * 1024 * 1024 - 8) + b"\x00\x01t")
    pk = r.packet()
    check(pk is not None and pk[0] == 0xE0 and pk[1][:1] == b"\x95",
          "v5 oversize PUBLISH: expected DISCONNECT 0x95, got %r" % (pk,))
    check(r.eof_within(3), "not closed after DISCONNECT 0x95")
    r.close()


@suite.case("malformed input closes: bad remaining length, reserved flags, wildcard topic, "
            "bad UTF-8 (v5: DISCONNECT with a reason first)")
def _():
    bad = [b"\xff\xff\xff\xff\xff\x01",                        # 5-byte remaining length
           b"\x31" + b"\x04\x00\x01#" + b"x",                   # wildcard in a topic name (QoS 0)
           b"\x36\x05\x00\x01t\x00\x01",                        # QoS 3
           b"\x30\x05\x00\x03\xc0\xaf" + b"x",                  # overlong UTF-8 in the topic
           b"\xc1\x00"]                                          # PINGREQ with flags set
    for version in (4, 5):
        for b in bad:
            r = Raw()
            r.send(connect_packet(S["tok"], version=version, client_id="mal"))
            r.packet()
            r.send(b)
            check(r.eof_within(3), "v%d: %r left the connection open" % (version, b))
            r.close()


@suite.case("SUBSCRIBE is answered with failure codes; PINGREQ with PINGRESP")
def _():
    r = Raw()
    r.send(connect_packet(S["tok"], version=4, client_id="sub"))
    r.packet()
    r.send(b"\x82" + varint(2 + 2 + 3 + 1) + b"\x00\x05" + mstr("a/#") + b"\x01")
    check_eq(r.packet(), (0x90, b"\x00\x05\x80"), "v3.1.1 SUBACK")
    r.send(b"\xc0\x00")
    check_eq(r.packet(), (0xd0, b""), "PINGRESP")
    r.close()


@suite.case("keepalive is enforced at 1.5x; a connection that never sends CONNECT is closed "
            "at the header deadline")
def _():
    r = Raw(timeout=10)
    r.send(connect_packet(S["tok"], version=4, client_id="ka", keepalive=1))
    r.packet()
    t0 = time.monotonic()
    check(r.eof_within(5), "a client silent past 1.5 x keepalive 1 s was not closed")
    took = time.monotonic() - t0
    check(took >= 1.2, "closed after %.2f s, before 1.5 x keepalive" % took)
    r.close()
    r = Raw(timeout=10)
    check(r.eof_within(5), "a connection without CONNECT outlived --header-timeout 2s")
    r.close()


@suite.case("a will is stored (flagged) when the connection drops without DISCONNECT, not after one")
def _():
    def will_connect(cid, topic):
        flags = 0xC0 | 0x02 | 0x04 | 0x08  # user, password, clean, will QoS 1
        vh = mstr("MQTT") + bytes([4, flags]) + struct.pack(">H", 30)
        body = vh + mstr(cid) + mstr(topic) + mstr('{"will":"%s"}' % cid) + mstr("d") + \
            mstr(S["tok"])
        return b"\x10" + varint(len(body)) + body
    r = Raw()
    r.send(will_connect("w1", "will/dropped"))
    check_eq(r.packet(), (0x20, b"\x00\x00"), "CONNACK")
    r.s.shutdown(socket.SHUT_RDWR)
    r.close()
    r = Raw()
    r.send(will_connect("w2", "will/clean"))
    r.packet()
    r.send(b"\xe0\x00")
    check(r.eof_within(3), "not closed after DISCONNECT")
    r.close()
    time.sleep(0.5)
    got = by_topic("acme", "will/dropped")
    check_eq(len(got), 1, "will of a dropped connection stored")
    check(got[0].get("will") is True, "will not flagged: %r" % got[0])
    check(not by_topic("acme", "will/clean"), "will stored after a clean DISCONNECT")


@suite.case("a client id connected again for the same device takes over (v5: DISCONNECT 0x8E "
            "to the old one); the same id of another device is another client")
def _():
    for version in (4, 5):
        cid = "take-%d" % version
        olds = [Raw() for _ in range(4)]  # 2 workers: some land on the other one
        for o in olds[:1]:
            o.send(connect_packet(S["tok"], version=version, client_id=cid))
            check_eq(o.packet()[0], 0x20, "first CONNACK")
        other = Raw()
        other.send(connect_packet(S["tok2"], version=version, client_id=cid))
        check_eq(other.packet()[1][:2], b"\x00\x00", "another device's CONNACK")
        prev = olds[0]
        for nxt in olds[1:]:
            nxt.send(connect_packet(S["tok"], version=version, client_id=cid))
            check_eq(nxt.packet()[1][:2], b"\x00\x00", "taking-over CONNACK")
            prev.s.settimeout(3)
            pk = prev.packet()
            if version == 5:
                check(pk is not None and pk[0] == 0xE0 and pk[1][:1] == b"\x8e",
                      "v5: the old connection got %r, want DISCONNECT 0x8E" % (pk,))
            check(prev.eof_within(3), "v%d: the old connection was not closed" % version)
            prev.close()
            prev = nxt
        other.send(b"\xc0\x00")
        check_eq(other.packet(), (0xd0, b""), "the other device's connection still serves")
        prev.send(b"\xc0\x00")
        check_eq(prev.packet(), (0xd0, b""), "the newest connection serves")
        other.close()
        prev.close()


@suite.case("retain is recorded with the reading (mosquitto_pub -r)")
def _():
    rc, out = pub(["-q", "1", "-r", "-t", "retained/t", "-P", S["tok"], "-u", "x", "-m", '{"r":1}'])
    check_eq(rc, 0, "exit (%s)" % out.strip())
    got = by_topic("acme", "retained/t")
    check_eq(len(got), 1, "stored")
    check(got[0].get("retain") is True, "retain not recorded: %r" % got[0])


@suite.case("a failed commit: MQTT 5 PUBACK 0x80; 3.1.1 closes without the PUBACK; nothing stored")
def _():
    base = tmpdir("sluice-mqtt-fault-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("f")
    tok = cli.add_device("f", "d")
    old = os.environ.get("SLUICE_FAULT_INJECT")
    os.environ["SLUICE_FAULT_INJECT"] = "sync:EIO"
    try:
        d = Daemon(SLUICED, data, ["--mqtt", "127.0.0.1:0"], name="fault").start()
    finally:
        if old is None:
            del os.environ["SLUICE_FAULT_INJECT"]
        else:
            os.environ["SLUICE_FAULT_INJECT"] = old
    try:
        saved = S["d"]
        S["d"] = d  # Raw() connects to S["d"].mqtt
        try:
            r = Raw()
            r.send(connect_packet(tok, version=5, client_id="f5"))
            check_eq(r.packet()[1][:2], b"\x00\x00", "v5 CONNACK")
            r.send(publish_packet("fault/v5", b'{"f":5}', qos=1, pid=9, version=5))
            pk = r.packet()
            check(pk is not None and pk[0] == 0x40 and pk[1][:3] == b"\x00\x09\x80",
                  "v5: want PUBACK 9 with reason 0x80, got %r" % (pk,))
            r.close()
            r = Raw()
            r.send(connect_packet(tok, version=4, client_id="f4"))
            check_eq(r.packet(), (0x20, b"\x00\x00"), "v3.1.1 CONNACK")
            r.send(publish_packet("fault/v4", b'{"f":4}', qos=1, pid=3))
            r.s.settimeout(10)
            pk = r.packet()
            check(pk is None, "v3.1.1: want the connection closed without a PUBACK, got %r" % (pk,))
            r.close()
        finally:
            S["d"] = saved
    finally:
        d.kill()
    check_eq([x for x in cli.log_cat("f") if x.get("topic", "").startswith("fault/")], [],
             "readings stored although their commit failed")


@suite.case("/metrics counts MQTT: connects, refusals, publishes, wills")
def _():
    r = request(S["d"].admin, "GET", "/metrics")
    check_eq(r.status, 200, "/metrics status")
    vals = {}
    for line in r.body.decode().splitlines():
        if line.startswith("sluice_mqtt_") and " " in line:
            k, v = line.rsplit(" ", 1)
            vals[k] = int(v)
    for k in ("sluice_mqtt_connects_total", "sluice_mqtt_connect_refused_total",
              "sluice_mqtt_publishes_total", "sluice_mqtt_wills_total"):
        check(vals.get(k, 0) > 0, "%s missing or 0 after the cases above: %r" % (k, vals))
    check(vals["sluice_mqtt_publishes_total"] >= 24000, "publishes counted: %r" % vals)


if __name__ == "__main__":
    suite.run(setup=setup)
