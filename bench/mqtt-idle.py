#!/usr/bin/env python3
"""bench/mqtt-idle.py — memory per idle authenticated MQTT connection (issue S4),
plain or over TLS (issue S5).

    python3 bench/mqtt-idle.py [BUILD_DIR] [--connections N] [--tls]   (default build, 15000)

With --tls the connections go to the mqtts listener (sluiced's self-signed
certificate, verified), each completing its handshake before its CONNECT.

Starts sluiced (--threads 1, a fresh data dir under BUILD_DIR) with one device,
opens N loopback connections that each send a CONNECT (3.1.1, keepalive 600 s)
with the token and wait for CONNACK 0, then holds them. sluiced's VmRSS
(/proc/PID/status) and its slab-free user memory are read before the first
connection and after the last CONNACK (after a 2 s settle); the difference
over N is the cost per connection in sluiced's own memory. Kernel socket memory
is not in RSS: the script also prints the kernel's TCP memory (/proc/net/sockstat,
pages) before and after, for the whole machine. Loopback only; needs an open
files limit above N for both this script and sluiced (it raises its own soft
limit to the hard one).
"""
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tcp_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0


def mstr(b):
    return struct.pack(">H", len(b)) + b


def connect_packet(token, cid):
    vh = mstr(b"MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 600)
    body = vh + mstr(cid) + mstr(b"idle") + mstr(token)
    return b"\x10" + bytes([len(body)]) + body if len(body) < 128 else None


def main():
    args = sys.argv[1:]
    n = 15000
    if "--connections" in args:
        i = args.index("--connections")
        n = int(args[i + 1])
        del args[i:i + 2]
    tls = "--tls" in args
    if tls:
        args.remove("--tls")
    build = args[0] if args else "build"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 100:
        print("mqtt-idle: open files limit %d is below %d connections" % (hard, n), file=sys.stderr)
        return 77
    work = tempfile.mkdtemp(prefix="mqtt-idle.", dir=build)
    data = os.path.join(work, "data")
    cli = os.path.join(build, "sluice")
    subprocess.run([cli, "--data-dir", data, "org", "add", "idle"], check=True,
                   stdout=subprocess.DEVNULL)
    token = subprocess.run([cli, "--data-dir", data, "device", "add", "--org", "idle", "d"],
                           check=True, capture_output=True).stdout.strip()
    ports = os.path.join(work, "ports.json")
    d = subprocess.Popen([os.path.join(build, "sluiced"), "--data-dir", data, "--threads", "1",
                          "--http", "off", "--admin", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
                          "--https", "off", "--mqtts", "127.0.0.1:0" if tls else "off",
                          "--frame", "off",
                          "--ports-file", ports], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(ports):
                break
            time.sleep(0.05)
        port = json.load(open(ports))["mqtts" if tls else "mqtt"]
        time.sleep(0.5)
        ctx = None
        if tls:
            import ssl
            ctx = ssl.create_default_context(cafile=os.path.join(data, "tls", "server.crt"))
        r0, t0 = rss(d.pid), tcp_pages()
        sel = selectors.DefaultSelector()
        socks = []
        ok = 0
        t_start = time.monotonic()
        for k in range(n):
            if tls:  # handshake, CONNECT and CONNACK one after the other
                s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                    server_hostname="localhost")
                s.sendall(connect_packet(token, b"idle-%d" % k))
                if s.recv(16).startswith(b"\x20\x02\x00\x00"):
                    ok += 1
                socks.append(s)
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.connect(("127.0.0.1", port))
            s.sendall(connect_packet(token, b"idle-%d" % k))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
            # take CONNACKs as they come, so the kernel never holds many
            for key, _ in sel.select(0):
                if key.fileobj.recv(16).startswith(b"\x20\x02\x00\x00"):
                    ok += 1
                sel.unregister(key.fileobj)
        deadline = time.monotonic() + 30
        while ok < n and time.monotonic() < deadline:
            for key, _ in sel.select(1):
                if key.fileobj.recv(16).startswith(b"\x20\x02\x00\x00"):
                    ok += 1
                sel.unregister(key.fileobj)
        took = time.monotonic() - t_start
        time.sleep(2)
        r1, t1 = rss(d.pid), tcp_pages()
        per = (r1 - r0) / n
        print("| connections | CONNACK 0 | sluiced RSS before | after | per connection | kernel TCP "
              "memory before → after (machine) | time to connect all |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print("| %d | %d | %.1f MiB | %.1f MiB | %.0f bytes | %d → %d pages | %.1f s |" %
              (n, ok, r0 / 2**20, r1 / 2**20, per, t0, t1, took))
        for s in socks:
            s.close()
        return 0 if ok == n else 1
    finally:
        d.terminate()
        d.wait(10)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
