#!/usr/bin/env python3
"""The C device client (sluice-frame-send, client/frame_client.c) against a real sluiced.

Every acknowledged reading is in the log exactly once with its device_seq, a
second run goes on after the first, a kill -9 of the server mid-run is
survived by resending what was not acknowledged, and the command line keeps
its promises (exit 0 / 1 with one line / 2). The same over UDP (--udp, §6, the
handshake over UDP or, with --udp-via-tcp, over TCP),
plus a seeded lossy relay between client and server. Exits 77 when the
binaries are not built.
"""
import heapq
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import SKIP, Cli, Daemon, Suite, binaries, check, check_eq, tmpdir  # noqa: E402

SLUICED, SLUICE_CLI = binaries()
SEND = os.environ.get("SLUICE_FRAME_SEND")
if not SEND or not os.path.exists(SEND):
    print("skip: $SLUICE_FRAME_SEND (build/examples/sluice-frame-send) is not built")
    sys.exit(SKIP)

suite = Suite(limit=120)
SUMMARY = re.compile(r"^sent (\d+) readings \((\d+) resent\), (\d+) acknowledged durable, "
                     r"(\d+) bytes out, (\d+) bytes in, seq (\d+)\.\.(\d+)$")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """sluiced with its frame listener on a fixed port, so it can come back on
    it, and its UDP listener on the port --udp 127.0.0.1:0 gave the first
    start. Each UDP case has an org and device of its own, so that its
    device_seq count from 1."""

    def __init__(self):
        self.base = tmpdir("sluice-cclient-")
        self.data = os.path.join(self.base, "data")
        self.port = free_port()
        self.udp_port = 0
        self.cli = Cli(SLUICE_CLI, self.data)
        os.makedirs(self.data)
        self.org = "o"
        self.cli.add_org(self.org)
        self.token = self.cli.add_device(self.org, "d")
        self.udp_tokens = {}
        for org in ("u", "lossy", "ukill", "uvt"):
            self.cli.add_org(org)
            self.udp_tokens[org] = self.cli.add_device(org, "dev-" + org)
        self.daemon = None

    def start(self):
        self.daemon = Daemon(SLUICED, self.data, extra=["--frame", "127.0.0.1:%d" % self.port,
                                                        "--udp", "127.0.0.1:%d" % self.udp_port])
        self.daemon.start()
        with open(self.daemon.ports_file) as f:
            ports = json.load(f)
        check_eq(ports.get("frame"), self.port, "ports file frame")
        udp = ports.get("udp")
        check(isinstance(udp, int) and udp > 0, "ports file has no udp: %r" % ports)
        if self.udp_port:
            check_eq(udp, self.udp_port, "ports file udp after a restart")
        self.udp_port = udp
        return self

    def seqs(self, org=None, proto="frame"):
        rows = [r for r in self.cli.log_cat(org or self.org) if r.get("proto") == proto]
        return [r["device_seq"] for r in rows], rows


def send(port, token, count, payload, *extra, timeout=60):
    argv = [SEND, "--host", "127.0.0.1", "--port", str(port), "--token", token, "--count",
            str(count), "--payload", payload] + list(extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def summary(p):
    check(p.returncode == 0, "exit %d, stderr %r" % (p.returncode, p.stderr))
    lines = p.stdout.splitlines()
    check(len(lines) == 1, "want one summary line, got %r" % p.stdout)
    m = SUMMARY.match(lines[0])
    check(m, "summary line %r" % lines[0])
    return [int(x) for x in m.groups()]


srv = None


def setup():
    global srv
    srv = Server().start()


@suite.case("1000 readings: exit 0, all durable, device_seq 1..1000")
def thousand():
    p = send(srv.port, srv.token, 1000, '{"t":21.5}')
    sent, resent, acked, out, _, lo, hi = summary(p)
    check_eq((sent, resent, acked, lo, hi), (1000, 0, 1000, 1, 1000), "summary")
    # 12 bytes a READING plus the handshake and the BYE (S6: <= 14 a reading)
    check(out <= 1000 * 12 + 29 + 34 + 2, "bytes out %d" % out)
    seqs, rows = srv.seqs()
    check_eq(sorted(seqs), list(range(1, 1001)), "device_seq")
    check(all(r["payload"] == {"t": 21.5} for r in rows), "payloads as sent")


@suite.case("a second run goes on at 1001 (next_seq 0: after the server's mark)")
def second_run():
    sent, _, acked, _, _, lo, hi = summary(send(srv.port, srv.token, 1000, '{"t":21.6}'))
    check_eq((sent, acked, lo, hi), (1000, 1000, 1001, 2000), "summary")
    seqs, _ = srv.seqs()
    check_eq(sorted(seqs), list(range(1, 2001)), "device_seq")


@suite.case("--batch 50: BATCH frames, fewer bytes a reading")
def batch():
    sent, _, acked, out, _, lo, hi = summary(
        send(srv.port, srv.token, 1000, '{"t":21.7}', "--batch", "50"))
    check_eq((acked, lo, hi), (1000, 2001, 3000), "summary")
    check(out < 1000 * 12, "a BATCH costs less than READINGs: %d bytes out" % out)
    seqs, _ = srv.seqs()
    check_eq(sorted(seqs), list(range(1, 3001)), "device_seq")


@suite.case("kill -9 mid-run: the client resends what was not acknowledged, each stored once")
def kill_resume():
    proc = subprocess.Popen(
        [SEND, "--host", "127.0.0.1", "--port", str(srv.port), "--token", srv.token, "--count",
         "200000", "--payload", '{"k":1}', "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    srv.daemon.proc.send_signal(signal.SIGKILL)
    srv.daemon.proc.wait(5)
    srv.daemon.kill()
    time.sleep(0.5)
    srv.start()
    out, err = proc.communicate(timeout=60)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    sent, resent, acked, _, _, lo, hi = summary(p)
    check_eq((sent, acked, lo, hi), (200000, 200000, 3001, 203000), "summary")
    # the run takes about 1.5 s here: the kill met readings in flight
    check(resent > 0, "nothing was resent: did the kill land mid-run? %r" % p.stdout)
    seqs, _ = srv.seqs()
    check_eq(len(seqs), len(set(seqs)), "readings stored once")
    check_eq(sorted(seqs), list(range(1, 203001)), "device_seq")


@suite.case("an unknown token: exit 1, one line naming ERROR 0x02")
def bad_token():
    p = send(srv.port, "slk_" + "0" * 40, 3, "x")
    check_eq(p.returncode, 1, "exit")
    lines = p.stderr.splitlines()
    check(len(lines) == 1 and "authentication failed (ERROR 0x02)" in lines[0],
          "stderr %r" % p.stderr)


@suite.case("bad usage exits 2, --udp included")
def usage():
    p = subprocess.run([SEND, "--udp", "--host", "127.0.0.1"], capture_output=True, text=True)
    check_eq(p.returncode, 2, "--udp without --port ... exit")
    check("are required" in p.stderr, "stderr %r" % p.stderr)
    p = subprocess.run([SEND, "--host", "127.0.0.1"], capture_output=True, text=True)
    check_eq(p.returncode, 2, "missing options exit")
    p = send(srv.port, srv.token, 3, "x", "--batch", "0")
    check_eq(p.returncode, 2, "--batch 0 exit")


# ---- UDP (§6) ----


@suite.case("--udp: 1000 readings, exit 0, proto udp, device_seq 1..1000 once each")
def udp_thousand():
    p = send(srv.udp_port, srv.udp_tokens["u"], 1000, '{"t":21.5}', "--udp")
    sent, resent, acked, out, _, lo, hi = summary(p)
    check_eq((sent, resent, acked, lo, hi), (1000, 0, 1000, 1, 1000), "summary")
    seqs, rows = srv.seqs("u", "udp")
    check_eq(len(rows), len(srv.cli.log_cat("u")), "every record says proto udp")
    check_eq(sorted(seqs), list(range(1, 1001)), "device_seq")
    check(all(r["payload"] == {"t": 21.5} for r in rows), "payloads as sent")
    # a READING a datagram: 8 (session id) + 2 (dgram_seq) + 4 (SEQ) + 12 + 8 (MAC),
    # the varints a byte shorter below 128; plus the handshake and the BYE
    check(out <= 1000 * 34 + 200, "bytes out %d" % out)


@suite.case("--udp: a second run goes on at 1001; --batch 50 packs datagrams")
def udp_second_run():
    sent, _, acked, _, _, lo, hi = summary(
        send(srv.udp_port, srv.udp_tokens["u"], 1000, '{"t":21.6}', "--udp"))
    check_eq((sent, acked, lo, hi), (1000, 1000, 1001, 2000), "summary")
    sent, _, acked, out, _, lo, hi = summary(
        send(srv.udp_port, srv.udp_tokens["u"], 1000, '{"t":21.7}', "--udp", "--batch", "50"))
    check_eq((acked, lo, hi), (1000, 2001, 3000), "batched summary")
    check(out < 1000 * 12, "a datagram of 50 costs less than READINGs: %d bytes out" % out)
    seqs, _ = srv.seqs("u", "udp")
    check_eq(sorted(seqs), list(range(1, 3001)), "device_seq")


@suite.case("--udp --udp-via-tcp: the handshake over TCP (§6), 1000 readings in datagrams, "
            "exit 0, proto udp, device_seq 1..1000 once each; a second run (--batch 50) goes "
            "on at 1001; --udp-via-tcp without --udp exits 2")
def udp_via_tcp():
    tok = srv.udp_tokens["uvt"]
    via = ("--udp", "--udp-via-tcp", str(srv.port))
    sent, resent, acked, out, _, lo, hi = summary(send(srv.udp_port, tok, 1000, '{"v":1}', *via))
    check_eq((sent, resent, acked, lo, hi), (1000, 0, 1000, 1, 1000), "summary")
    sent, _, acked, _, _, lo, hi = summary(
        send(srv.udp_port, tok, 1000, '{"v":1}', *(via + ("--batch", "50"))))
    check_eq((sent, acked, lo, hi), (1000, 1000, 1001, 2000), "second summary")
    seqs, rows = srv.seqs("uvt", "udp")
    check_eq(len(rows), len(srv.cli.log_cat("uvt")), "every record says proto udp")
    check_eq(sorted(seqs), list(range(1, 2001)), "device_seq")
    check(all(r["payload"] == {"v": 1} for r in rows), "payloads as sent")
    p = send(srv.port, tok, 3, "x", "--udp-via-tcp", str(srv.port))
    check_eq(p.returncode, 2, "--udp-via-tcp without --udp exit")


class LossyRelay:
    """A UDP relay between one client and the server: drops, duplicates and
    delays (so reorders) datagrams both ways, from a seeded random source."""

    def __init__(self, server_port, seed, drop=0.2, dup=0.1, delay=0.2, max_delay=0.02):
        self.rng = random.Random(seed)
        self.drop, self.dup, self.delay, self.max_delay = drop, dup, delay, max_delay
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(("127.0.0.1", server_port))
        self.client = None
        self.queue = []  # (when, n, to_server, data)
        self.n = 0
        self.counts = {"in": 0, "dropped": 0, "duplicated": 0, "delayed": 0}
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def take(self, data, to_server):
        self.counts["in"] += 1
        if self.rng.random() < self.drop:
            self.counts["dropped"] += 1
            return
        copies = 2 if self.rng.random() < self.dup else 1
        self.counts["duplicated"] += copies - 1
        for _ in range(copies):
            when = time.monotonic()
            if self.rng.random() < self.delay:
                when += self.rng.random() * self.max_delay
                self.counts["delayed"] += 1
            self.n += 1
            heapq.heappush(self.queue, (when, self.n, to_server, data))

    def run(self):
        while not self.stop:
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, to_server, data = heapq.heappop(self.queue)
                try:
                    if to_server:
                        self.back.send(data)
                    elif self.client:
                        self.front.sendto(data, self.client)
                except OSError:
                    pass
            wait = max(0.0, self.queue[0][0] - now) if self.queue else 0.05
            r, _, _ = select.select([self.front, self.back], [], [], wait)
            for s in r:
                try:
                    if s is self.front:
                        data, addr = s.recvfrom(65536)
                        self.client = addr
                        self.take(data, True)
                    else:
                        self.take(s.recv(65536), False)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.front.close()
        self.back.close()


@suite.case("--udp through a lossy relay (seeded: 20% dropped both ways, duplicates, "
            "reordering): every reading stored exactly once")
def udp_lossy():
    relay = LossyRelay(srv.udp_port, seed=20261203)
    try:
        p = send(relay.port, srv.udp_tokens["lossy"], 3000, '{"l":1}', "--udp", "--batch", "10",
                 "--timeout", "30")
    finally:
        relay.close()
    sent, resent, acked, _, _, lo, hi = summary(p)
    check_eq((acked, lo, hi), (3000, 1, 3000), "summary (relay %r)" % relay.counts)
    check(resent > 0, "nothing resent through a lossy relay: %r" % relay.counts)
    check(relay.counts["dropped"] > 0 and relay.counts["duplicated"] > 0 and
          relay.counts["delayed"] > 0, "the relay did its job: %r" % relay.counts)
    seqs, _ = srv.seqs("lossy", "udp")
    check_eq(len(seqs), len(set(seqs)), "readings stored once")
    check_eq(sorted(seqs), list(range(1, 3001)), "device_seq")


@suite.case("--udp, kill -9 mid-run and a restart: the client shakes hands again and "
            "finishes; each reading stored once")
def udp_kill_resume():
    proc = subprocess.Popen(
        [SEND, "--udp", "--host", "127.0.0.1", "--port", str(srv.udp_port), "--token",
         srv.udp_tokens["ukill"], "--count", "200000", "--batch", "10", "--payload", '{"k":1}',
         "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    srv.daemon.proc.send_signal(signal.SIGKILL)
    srv.daemon.proc.wait(5)
    srv.daemon.kill()
    time.sleep(0.5)
    srv.start()
    out, err = proc.communicate(timeout=60)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    sent, resent, acked, _, _, lo, hi = summary(p)
    check_eq((sent, acked, lo, hi), (200000, 200000, 1, 200000), "summary")
    check(resent > 0, "nothing was resent: did the kill land mid-run? %r" % p.stdout)
    seqs, _ = srv.seqs("ukill", "udp")
    check_eq(len(seqs), len(set(seqs)), "readings stored once")
    check_eq(sorted(seqs), list(range(1, 200001)), "device_seq")


if __name__ == "__main__":
    suite.run(setup=setup)
