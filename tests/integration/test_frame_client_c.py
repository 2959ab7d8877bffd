#!/usr/bin/env python3
"""The C device client (sluice-frame-send, client/frame_client.c) against a real sluiced.

Every acknowledged reading is in the log exactly once with its device_seq, a
second run goes on after the first, a kill -9 of the server mid-run is
survived by resending what was not acknowledged, and the command line keeps
its promises (exit 0 / 1 with one line / 2). Exits 77 when the binaries are
not built.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
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
    """sluiced with its frame listener on a fixed port, so it can come back on it."""

    def __init__(self):
        self.base = tmpdir("sluice-cclient-")
        self.data = os.path.join(self.base, "data")
        self.port = free_port()
        self.cli = Cli(SLUICE_CLI, self.data)
        os.makedirs(self.data)
        self.org = "o"
        self.cli.add_org(self.org)
        self.token = self.cli.add_device(self.org, "d")
        self.daemon = None

    def start(self):
        self.daemon = Daemon(SLUICED, self.data, extra=["--frame", "127.0.0.1:%d" % self.port])
        self.daemon.start()
        with open(self.daemon.ports_file) as f:
            check_eq(json.load(f).get("frame"), self.port, "ports file frame")
        return self

    def seqs(self):
        rows = [r for r in self.cli.log_cat(self.org) if r.get("proto") == "frame"]
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


@suite.case("bad usage exits 2; --udp is not supported yet")
def usage():
    p = send(srv.port, srv.token, 3, "x", "--udp")
    check_eq(p.returncode, 2, "--udp exit")
    check("UDP is not supported by this client yet" in p.stderr, "stderr %r" % p.stderr)
    p = subprocess.run([SEND, "--host", "127.0.0.1"], capture_output=True, text=True)
    check_eq(p.returncode, 2, "missing options exit")
    p = send(srv.port, srv.token, 3, "x", "--batch", "0")
    check_eq(p.returncode, 2, "--batch 0 exit")


if __name__ == "__main__":
    suite.run(setup=setup)
