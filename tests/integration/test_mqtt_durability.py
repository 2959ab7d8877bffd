#!/usr/bin/env python3
"""MQTT acknowledgements mean durable, through kill -9.

sluiced runs with --fsync batch; 8 raw-socket publishers each keep about 20
QoS 1 (or QoS 2) PUBLISHes unacknowledged, payload {"c":<client>,"i":<n>} on
topic kill/<client>, and record which n got their PUBACK (QoS 2: PUBREC; a
PUBREL follows each). After about 2 s the daemon is killed with SIGKILL and
started again on the same data directory; `sluice log cat` must then hold every
acknowledged (c, i) exactly once, and no (c, i) twice (an unacknowledged one
may be there or not). Three cycles per QoS; ids carry on across cycles and
nothing is resent, so any copy beyond the first is the server's.
"""
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqttwire  # noqa: E402
from mqttwire import publish_packet  # noqa: E402
from sluicetest import Cli, Daemon, Suite, binaries, check, tmpdir  # noqa: E402

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=85)

CLIENTS = 8
WINDOW = 20
CYCLES = 3
LOAD_S = 2.0


def connect_packet(token, client_id, version):
    return mqttwire.connect_packet(token, version=version, client_id=client_id, keepalive=60)


class Publisher(threading.Thread):
    """One connection: keeps WINDOW exchanges open until stop or the server
    goes away. acked: the n whose PUBACK / PUBREC arrived."""

    def __init__(self, port, token, c, qos, version, first_n, acked, stop):
        super().__init__(daemon=True)
        self.port, self.token, self.c, self.qos, self.version = port, token, c, qos, version
        self.n = first_n
        self.acked = acked
        self.stop = stop
        self.error = None
        self.sent = 0

    def run(self):
        try:
            self._run()
        except (OSError, EOFError):
            pass  # the kill: the connection ends, what was acked stays recorded
        except Exception as e:  # a protocol surprise is reported by the case
            self.error = "%s: %s" % (type(e).__name__, e)

    def _run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = s
        buf = b""

        def packet():
            nonlocal buf
            while True:
                if len(buf) >= 2:
                    n, mult, i = 0, 1, 1
                    while i < len(buf):
                        b = buf[i]
                        n += (b & 0x7F) * mult
                        mult *= 128
                        i += 1
                        if not b & 0x80:
                            break
                    else:
                        i = None
                    if i is not None and len(buf) >= i + n:
                        pk = (buf[0], buf[i:i + n])
                        buf = buf[i + n:]
                        return pk
                d = s.recv(65536)
                if not d:
                    raise EOFError
                buf += d

        s.sendall(connect_packet(self.token, "kill-%d-%d" % (self.c, self.n), self.version))
        t, body = packet()
        if t != 0x20 or body[1] != 0:
            raise RuntimeError("CONNACK %02x %s" % (t, body.hex()))
        open_ids = {}  # packet id -> n, until PUBACK (QoS 1) / PUBCOMP (QoS 2)
        topic = "kill/%d" % self.c
        while True:
            out = b""
            while len(open_ids) < WINDOW and not self.stop.is_set():
                pid = self.n % 65535 + 1
                open_ids[pid] = self.n
                out += publish_packet(topic, b'{"c":%d,"i":%d}' % (self.c, self.n), self.qos,
                                      pid, self.version)
                self.n += 1
                self.sent += 1
            if out:
                s.sendall(out)
            if not open_ids:
                return
            t, body = packet()
            pid = struct.unpack(">H", body[:2])[0]
            reason = body[2] if self.version == 5 and len(body) > 2 else 0
            kind = t >> 4
            if kind == 4 and self.qos == 1:
                if reason < 0x80:
                    self.acked.add((self.c, open_ids[pid]))
                del open_ids[pid]
            elif kind == 5 and self.qos == 2:
                if reason < 0x80:
                    self.acked.add((self.c, open_ids[pid]))
                    s.sendall(b"\x62\x02" + body[:2])
                else:
                    del open_ids[pid]
            elif kind == 7 and self.qos == 2:
                del open_ids[pid]
            elif kind == 14:
                raise EOFError  # DISCONNECT
            else:
                raise RuntimeError("unexpected packet %02x %s" % (t, body.hex()))


def run_cycles(qos, version):
    base = tmpdir("sluice-mqttkill-")
    data = os.path.join(base, "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    token = cli.add_device("acme", "pump-%d" % qos)
    acked = set()
    next_n = [0] * CLIENTS
    total_sent = 0
    for cycle in range(CYCLES):
        d = Daemon(SLUICED, data, ["--mqtt", "127.0.0.1:0", "--fsync", "batch"],
                   name="q%d-c%d" % (qos, cycle))
        d.start()
        check(d.mqtt, "ports file has no mqtt port")
        stop = threading.Event()
        pubs = [Publisher(d.mqtt, token, c, qos, version, next_n[c], acked, stop)
                for c in range(CLIENTS)]
        for p in pubs:
            p.start()
        time.sleep(LOAD_S)
        d.proc.kill()  # SIGKILL, mid-stream
        d.proc.wait(5)
        stop.set()
        for p in pubs:
            p.join(10)
            check(not p.is_alive(), "publisher %d still running after the kill" % p.c)
            check(p.error is None, "publisher %d: %s" % (p.c, p.error))
            next_n[p.c] = p.n
            total_sent += p.sent
        d.kill()
        check(len(acked) > 0 or cycle == 0, "nothing acknowledged in cycle %d" % cycle)
    # the last start: recovery of what the last kill left, then read back
    d = Daemon(SLUICED, data, ["--mqtt", "127.0.0.1:0", "--fsync", "batch"],
               name="q%d-final" % qos)
    d.start()
    d.terminate()
    rc, out, err = cli.run("log", "verify", "--org", "acme", timeout=60)
    check(rc == 0, "log verify after the kills: exit %d, %r" % (rc, (out + err)[-300:]))
    rows = cli.log_cat("acme")
    seen = {}
    for r in rows:
        p = r.get("payload")
        if isinstance(p, dict) and "c" in p and "i" in p:
            check(r.get("topic") == "kill/%d" % p["c"], "topic %r for %r" % (r.get("topic"), p))
            seen[(p["c"], p["i"])] = seen.get((p["c"], p["i"]), 0) + 1
    twice = sorted(k for k, v in seen.items() if v > 1)
    lost = sorted(acked - set(seen))
    print("# QoS %d: %d sent, %d acknowledged, %d stored (%d distinct), %d lost, %d stored twice"
          % (qos, total_sent, len(acked), sum(seen.values()), len(seen), len(lost), len(twice)),
          flush=True)
    check(acked, "no message was ever acknowledged")
    check(not lost, "%d acknowledged messages lost, e.g. %r" % (len(lost), lost[:10]))
    check(not twice, "%d messages stored more than once, e.g. %r" % (len(twice), twice[:10]))


@suite.case("kill -9 under QoS 1 load (3.1.1, 8 clients x 20 in flight), 3 cycles: every "
            "PUBACKed message stored, none twice")
def _():
    run_cycles(1, 4)


@suite.case("kill -9 under QoS 2 load (5.0, 8 clients x 20 in flight), 3 cycles: every "
            "PUBRECed message stored, none twice")
def _():
    run_cycles(2, 5)


if __name__ == "__main__":
    suite.run()
