"""Helpers shared by the regression tests for the S3 defects (test_limits.py,
test_regressions.py, test_blocking_io.py): process accounting from /proc,
a daemon under a descriptor limit, stored-record counts through the CLI, and
a raw-socket pump that sends and reads at once with bounded buffers.

Stdlib only, on top of sluicetest.py.
"""
import contextlib
import os
import re
import resource
import select
import shutil
import socket
import subprocess
import time

from sluicetest import CaseFailed, Cli, Daemon, check, tmpdir

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def fresh(cli_path, prefix, orgs):
    """A new data dir (in its own temp dir named after prefix) with one device
    per org: (data, Cli, {org: token})."""
    data = os.path.join(tmpdir("sluice-%s-" % prefix), "data")
    cli = Cli(cli_path, data)
    toks = {}
    for org in orgs:
        cli.add_org(org)
        toks[org] = cli.add_device(org, "dev-" + org)
    return data, cli, toks


def gone(data):
    """Removes a data dir made by fresh() with its temp dir (large ones: now,
    not at exit)."""
    shutil.rmtree(os.path.dirname(data), True)


def sanitized(binary):
    """True when binary was built with AddressSanitizer: its allocator keeps
    freed memory in quarantine and maps shadow memory, so RSS bounds say
    nothing there (the cases still check everything else)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def note(msg):
    print("# note: " + msg, flush=True)


def rss(pid):
    """VmRSS of pid in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise CaseFailed("no VmRSS for pid %d" % pid)


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # fields after the comm: state is field 3, utime 14, stime 15
    return (int(rest[11]) + int(rest[12])) / TICK


def disk_usage(path):
    """Bytes allocated (st_blocks) under path, like du."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def raise_own_nofile(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, want))
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def child_nofile(limit):
    """Processes started inside (sluicetest's Daemon uses subprocess.Popen)
    get RLIMIT_NOFILE limit (soft and hard) through a preexec_fn."""
    real = subprocess.Popen

    def preexec():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def popen(*a, **kw):
        kw["preexec_fn"] = preexec
        return real(*a, **kw)

    subprocess.Popen = popen
    try:
        yield
    finally:
        subprocess.Popen = real


def start_daemon(sluiced, data, extra=(), name="sluiced", nofile=None, timeout=15):
    if nofile is None:
        return Daemon(sluiced, data, list(extra), name=name).start(timeout=timeout)
    with child_nofile(nofile):
        return Daemon(sluiced, data, list(extra), name=name).start(timeout=timeout)


_VERIFY = re.compile(r"verified (\d+) segments?, (\d+) records?")


def stored_count(cli, org):
    """Records in org's logs, from `sluice log verify --org` (cheap for
    millions of records, unlike log cat)."""
    rc, out, err = cli.run("log", "verify", "--org", org, timeout=120)
    m = _VERIFY.search(out + err)
    check(m is not None, "log verify printed no record count: rc %d %r %r" % (rc, out, err))
    check(rc == 0, "log verify --org %s: exit %d: %r" % (org, rc, (out + err)[-300:]))
    return int(m.group(2))


def chunked(data, size):
    """data as a chunked body with chunks of size bytes (plus the last chunk,
    no trailers)."""
    out = []
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def pump(sock, data, deadline, want=None, on_data=None, stop_send_on_close=True,
         shutdown_after=False):
    """Sends data while reading whatever comes back, with select, until all
    is sent and (want is None or want(received) is true) or EOF or deadline.
    on_data(chunk) is called with each received chunk instead of keeping it
    when given (bounded memory). Returns (received bytes or b"", eof, sent)."""
    sock.setblocking(False)
    got = bytearray()
    sent = 0
    eof = False
    sending = True
    view = memoryview(data)
    while True:
        if not sending and (want is None or want(got)):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        wl = [sock] if sending else []
        r, w, _ = select.select([sock], wl, [], min(left, 0.5))
        if r:
            try:
                chunk = sock.recv(1 << 16)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                eof = True
                break
            if chunk:
                if on_data:
                    on_data(chunk)
                else:
                    got += chunk
        if w and sending:
            try:
                n = sock.send(view[sent:sent + (1 << 18)])
                sent += n
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                sending = False
                if stop_send_on_close:
                    continue
            if sent >= len(data):
                sending = False
                if shutdown_after:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
    return bytes(got), eof, sent


class ResponseParser:
    """Incremental parser of a stream of HTTP/1.1 responses (Content-Length
    bodies): feed() bytes, collects (status, headers, body) tuples; keeps only
    the unparsed tail, so memory is bounded by one response."""

    def __init__(self, keep=None):
        self.buf = b""
        self.responses = []
        self.count = 0
        self.keep = keep  # callable(status, headers, body) -> None to not store

    def feed(self, data):
        self.buf += data
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = self.buf[:i].decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or parts[0] != "HTTP/1.1" or not parts[1].isdigit():
                raise CaseFailed("bad status line %r after %d responses" % (lines[0], self.count))
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            if len(self.buf) < i + 4 + n:
                return
            body = self.buf[i + 4:i + 4 + n]
            self.buf = self.buf[i + 4 + n:]
            status = int(parts[1])
            self.count += 1
            if self.keep is None:
                self.responses.append((status, headers, body))
            else:
                self.keep(status, headers, body)
