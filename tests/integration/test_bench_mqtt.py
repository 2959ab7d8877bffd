#!/usr/bin/env python3
"""sluice-bench in MQTT mode (INTERFACE.md, "sluice-bench"), against a real
Mosquitto this file starts on a loopback port of its own with a generated
config (the system's mosquitto service, if any, is left alone), and against
tiny stdlib servers that send what a broker must not. Checks the exit status,
the --json line, acknowledged == sent at QoS 1/2, that a mosquitto_sub
subscriber receives payloads of exactly --payload bytes, and that a refused
CONNECT is named by its return code.

Exits 77 when $SLUICE_BENCH, mosquitto or mosquitto_sub is missing
(apt-get install mosquitto mosquitto-clients; `make deps` does).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import SKIP, CaseFailed, Suite, check, check_eq, tmpdir  # noqa: E402

BENCH = os.environ.get("SLUICE_BENCH")
if not BENCH or not os.access(BENCH, os.X_OK):
    print("# skip: $SLUICE_BENCH is not set or not executable (%r)" % BENCH)
    sys.exit(SKIP)
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
if not MOSQUITTO or not MOSQUITTO_SUB:
    print("# skip: mosquitto / mosquitto_sub not installed "
          "(apt-get install mosquitto mosquitto-clients)")
    sys.exit(SKIP)
suite = Suite(limit=120)
S = {"brokers": []}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_broker(anonymous=True):
    """A Mosquitto of our own on a free loopback port; returns the port."""
    work = tmpdir("sluice-bench-mqtt-")
    for _ in range(3):
        port = free_port()
        conf = os.path.join(work, "mosquitto-%d.conf" % port)
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous %s\npersistence false\n"
                    "log_dest stderr\n" % (port, "true" if anonymous else "false"))
        log = open(os.path.join(work, "mosquitto-%d.log" % port), "w")
        p = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=log, stderr=log)
        S["brokers"].append(p)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                time.sleep(0.05)
        p.kill()
        p.wait()
    raise CaseFailed("mosquitto would not start (see %s)" % work)


def setup():
    S["port"] = start_broker()
    S["target"] = "127.0.0.1:%d" % S["port"]


def teardown():
    for p in S["brokers"]:  # only the brokers this file started
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def bench(*args, timeout=20):
    p = subprocess.run([BENCH] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def last_json(out, err):
    lines = out.strip().splitlines()
    check(lines, "no stdout; stderr %r" % err[-300:])
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise CaseFailed("last stdout line is not JSON: %r" % lines[-1])


def mqtt_json(*args, target=None, want_rc=0):
    rc, out, err = bench("mqtt", "--target", target or S["target"], "--token", "t", "--json",
                         *args)
    check_eq(rc, want_rc, "exit status of %r (stderr %r)" % (args, err[-300:]))
    r = last_json(out, err)
    for key in ("readings_per_sec", "mb_per_sec", "latency_us", "errors", "sent", "qos"):
        check(key in r, "report has no %r: %r" % (key, r))
    for key in ("p50", "p90", "p99", "p999", "max"):
        check(key in r["latency_us"], "latency_us has no %r: %r" % (key, r))
    return r, err


def check_clean(r, qos):
    check_eq(r["errors"], {}, "errors")
    check(r["readings_per_sec"] > 0, "readings_per_sec %r" % r["readings_per_sec"])
    check(r["sent"] > 0, "sent %r" % r["sent"])
    lat = r["latency_us"]
    if qos:
        check_eq(r["acknowledged"], r["sent"], "acknowledged (sent %d)" % r["sent"])
        check(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
              "percentiles out of order: %r" % lat)
    else:
        check_eq(r["confirmed_by_ping"], r["sent"], "publishes confirmed by a PINGRESP")
        check_eq(lat, {k: None for k in ("p50", "p90", "p99", "p999", "max")},
                 "QoS 0 latency (n/a)")
        check(r["ping_rtt_us"]["n"] > 0, "no PINGREQ round trip at QoS 0: %r" % r)


for _qos in (0, 1, 2):
    @suite.case("mqtt 3.1.1 QoS %d: 4 connections for 2 s against Mosquitto, no errors" % _qos)
    def _(qos=_qos):
        r, _ = mqtt_json("--qos", str(qos), "--connections", "4", "--pipeline", "4",
                         "--duration", "2")
        check_clean(r, qos)
        check_eq(r["mqtt_version"], 4, "mqtt_version")


@suite.case("mqtt 5.0 QoS 1 and 2: --pipeline 64 is capped by Mosquitto's Receive Maximum")
def _():
    for qos in (1, 2):
        r, _ = mqtt_json("--qos", str(qos), "--mqtt-version", "5", "--connections", "2",
                         "--pipeline", "64", "--duration", "1")
        check_clean(r, qos)
        rm = r.get("server_receive_maximum")
        check(rm is not None and 0 < rm < 64, "server_receive_maximum %r" % rm)


def subscribe(count):
    """mosquitto_sub for `count` messages on `readings`, started and subscribed."""
    # line-buffered, so that the SUBACK line arrives before the messages do
    p = subprocess.Popen(["stdbuf", "-oL", MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(S["port"]), "-t",
                          "readings", "-C", str(count), "-W", "15", "-d", "-F", "==%l|%p"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # -d prints the SUBACK before any message
        line = p.stdout.readline().decode("utf-8", "replace")
        if not line:
            break
        if "SUBACK" in line:
            return p
    p.kill()
    raise CaseFailed("mosquitto_sub did not subscribe: %r" % p.stderr.read()[-300:])


@suite.case("mqtt: a subscriber receives JSON payloads of exactly --payload bytes")
def _():
    for size, qos in ((100, 1), (18, 2), (17, 0), (5, 1), (2, 0)):
        sub = subscribe(5)
        r, _ = mqtt_json("--qos", str(qos), "--payload", str(size), "--duration", "0.3")
        check(r["sent"] >= 5, "only %d sent" % r["sent"])
        out, _ = sub.communicate(timeout=15)
        msgs = [ln[2:] for ln in out.decode("utf-8", "replace").splitlines()
                if ln.startswith("==")]
        check_eq(len(msgs), 5, "messages received at --payload %d" % size)
        for m in msgs:
            n, payload = m.split("|", 1)
            check_eq(int(n), size, "payload length at --payload %d" % size)
            check_eq(len(payload), size, "payload bytes at --payload %d" % size)
            try:
                json.loads(payload)
            except ValueError:
                raise CaseFailed("payload is not JSON: %r" % payload)


@suite.case("mqtt --rate: an open loop at QoS 1, everything sent acknowledged")
def _():
    r, _ = mqtt_json("--qos", "1", "--connections", "2", "--duration", "1", "--rate", "300/s")
    check_clean(r, 1)
    check_eq(r["offered_per_sec"], 300.0, "offered_per_sec")


@suite.case("mqtt: a refused CONNECT (allow_anonymous false) exits non-zero naming connack_0x05")
def _():
    port = start_broker(anonymous=False)
    for version, kind in (("4", "connack_0x05"), ("5", "connack_0x87")):
        r, err = mqtt_json("--connections", "3", "--duration", "2", "--mqtt-version", version,
                           target="127.0.0.1:%d" % port, want_rc=3)
        check_eq(r["errors"], {kind: 3}, "errors")
        check_eq(r["sent"], 0, "sent")
        check(kind in err, "stderr does not name %s: %r" % (kind, err))


def fake_broker(answer):
    """A listener whose connections get `answer(first bytes read)` and are then
    held open; returns (port, stop)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    ls.settimeout(0.2)
    stop = threading.Event()

    def serve(c):
        c.settimeout(0.2)
        try:
            data = b""
            while not stop.is_set() and not data:
                try:
                    data = c.recv(4096)
                except socket.timeout:
                    continue
            reply = answer(data)
            if reply is None:
                return  # close at once
            c.sendall(reply)
            while not stop.is_set():
                try:
                    if not c.recv(65536):
                        return
                except socket.timeout:
                    continue
        except OSError:
            return
        finally:
            c.close()

    def accept_loop():
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
        ls.close()

    threading.Thread(target=accept_loop, daemon=True).start()
    return ls.getsockname()[1], stop


@suite.case("mqtt: hostile servers: no CONNACK, an ack for nothing sent, an overlong length")
def _():
    cases = (
        (lambda d: None, "no_connack"),                              # closes before CONNACK
        (lambda d: b"HTTP/1.1 400 Bad Request\r\n\r\n", "no_connack"),  # not MQTT: an unfinished "packet"
        (lambda d: b"\x20\x02\x00\x00\x40\x02\x03\xe7", "malformed"),  # PUBACK for id 999
        (lambda d: b"\x20\x02\x00\x00\x40\x80\x00", "malformed"),      # MQTT-1.5.5: overlong
    )
    for answer, kind in cases:
        port, stop = fake_broker(answer)
        try:
            r, err = mqtt_json("--duration", "0.5", target="127.0.0.1:%d" % port, want_rc=3)
        finally:
            stop.set()
        check(r["errors"].get(kind, 0) > 0, "want %s in errors: %r" % (kind, r["errors"]))
        check(kind in err, "stderr does not name %s: %r" % (kind, err))


@suite.case("mqtt usage: bad --qos, wildcard topic, HTTP-only options: exit 2, one line")
def _():
    t = ["--target", S["target"], "--token", "t"]
    for args in (["mqtt"] + t + ["--qos", "3"],
                 ["mqtt"] + t + ["--qos", "x"],
                 ["mqtt"] + t + ["--mqtt-version", "3"],
                 ["mqtt"] + t + ["--topic", "readings/#"],
                 ["mqtt"] + t + ["--topic", ""],
                 ["mqtt"] + t + ["--payload", "1"],
                 ["mqtt"] + t + ["--path", "/x"],
                 ["mqtt"] + t + ["--readings", "2"],
                 ["http"] + t + ["--qos", "1"],
                 ["http"] + t + ["--topic", "x"]):
        rc, out, err = bench(*args)
        check_eq(rc, 2, "exit status of %r (stderr %r)" % (args, err))
        check_eq(len(err.splitlines()), 1, "stderr lines of %r: %r" % (args, err))
        check(err.startswith("sluice-bench: "), "stderr of %r: %r" % (args, err))


@suite.case("mqtt: nothing listening: exit 1, cannot connect")
def _():
    rc, out, err = bench("mqtt", "--target", "127.0.0.1:%d" % free_port(), "--token", "t",
                         "--json")
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check_eq(out, "", "stdout")
    check("cannot connect" in err, "stderr %r" % err)


if __name__ == "__main__":
    suite.run(setup=setup, teardown=teardown)
