"""Shared helpers for the HTTP integration tests: a real sluiced on loopback.

Each test file is a standalone script that registers named cases with a Suite,
runs them in order and prints one line per case (`ok - name`,
`FAIL - name: why`, or `skip - name: why` for a case that cannot run here and
called skip()), then `N passed, M failed, K skipped`. It exits 1 when any case
failed; 77 (meson: skipped) when the binaries or curl are missing, or when
every case skipped; 0 only when something passed and nothing failed. Every daemon started here is killed on any exit (atexit, and on the
file's overall time limit), and all of its output goes to files in the run's
temporary directory so tests can look for tokens that must never be logged.

Stdlib only (Python 3.11) plus the curl binary.
"""
import atexit
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77
_daemons = []  # every Daemon ever started, for the atexit / alarm cleanup
_tmpdirs = []


def _kill_all():
    for d in _daemons:
        d.kill()


def _cleanup():
    _kill_all()  # before the directories go: a live daemon still writes there
    if not os.environ.get("SLUICE_KEEP_TMP"):
        for d in _tmpdirs:
            shutil.rmtree(d, True)


atexit.register(_cleanup)


class CaseFailed(Exception):
    """A check failed; the message says what was expected and what came back."""


class CaseSkipped(Exception):
    """The case cannot run on this machine (a tool, a privilege); never a pass."""


def skip(why):
    raise CaseSkipped(why)


def need_tool(name):
    """The path of the program `name`, or the case is skipped."""
    path = shutil.which(name)
    if not path:
        skip("%s is not installed" % name)
    return path


def check(cond, why):
    if not cond:
        raise CaseFailed(why)


def check_eq(got, want, what):
    if got != want:
        raise CaseFailed("%s: want %r, got %r" % (what, want, got))


def binaries():
    """(sluiced, sluice CLI) from the environment meson sets, or exit 77 with why."""
    sluiced = os.environ.get("SLUICED")
    cli = os.environ.get("SLUICE_CLI")
    for name, path in (("SLUICED", sluiced), ("SLUICE_CLI", cli)):
        if not path or not os.access(path, os.X_OK):
            print("# skip: $%s is not set or not executable (%r)" % (name, path))
            sys.exit(SKIP)
    if not shutil.which("curl"):
        print("# skip: curl is not installed")
        sys.exit(SKIP)
    # absolute: some cases run the daemon from a scratch working directory
    return os.path.abspath(sluiced), os.path.abspath(cli)


class Suite:
    """Runs registered cases in order; one line each, then the summary line.

    The whole file is bounded by `limit` seconds: past it, the running case is
    reported as failed, the daemons are killed and the file exits 1."""

    def __init__(self, limit=55):
        self.cases = []
        self.limit = limit

    def case(self, name):
        def register(fn):
            # SLUICE_ONLY=text runs only the cases whose name contains it (while
            # working on one; meson always runs them all)
            only = os.environ.get("SLUICE_ONLY")
            if not only or only in name:
                self.cases.append((name, fn))
            return fn

        return register

    def run(self, setup=None, teardown=None):
        passed = failed = skipped = 0
        stopped = False

        def on_alarm(signum, frame):
            raise CaseFailed("file time limit of %ds reached" % self.limit)

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(self.limit)
        try:
            try:
                if setup:
                    setup()
            except Exception as e:  # setup failure: every case fails, loudly
                why = _describe(e)
                for name, _ in self.cases:
                    print("FAIL - %s: setup failed: %s" % (name, why), flush=True)
                print("%d passed, %d failed" % (0, len(self.cases)), flush=True)
                _kill_all()
                sys.exit(1)
            for name, fn in self.cases:
                if stopped:
                    failed += 1
                    print("FAIL - %s: not run (file time limit reached)" % name, flush=True)
                    continue
                try:
                    fn()
                    passed += 1
                    print("ok - %s" % name, flush=True)
                except CaseSkipped as e:
                    skipped += 1
                    print("skip - %s: %s" % (name, e), flush=True)
                except Exception as e:
                    failed += 1
                    print("FAIL - %s: %s" % (name, _describe(e)), flush=True)
                    if isinstance(e, CaseFailed) and "time limit" in str(e):
                        stopped = True
        finally:
            signal.alarm(0)
            try:
                if teardown:
                    teardown()
            finally:
                _kill_all()
        print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
        if failed:
            sys.exit(1)
        # nothing ran: meson must show SKIP, not a pass
        sys.exit(0 if passed else SKIP)


def _describe(e):
    if isinstance(e, CaseFailed):
        return str(e)
    tb = traceback.extract_tb(e.__traceback__)
    where = "%s:%d" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else "?"
    return "%s: %s (at %s)" % (type(e).__name__, e, where)


class Cli:
    """The admin CLI against one data directory."""

    def __init__(self, path, data_dir):
        self.path = path
        self.data_dir = data_dir

    def run(self, *args, timeout=30):
        p = subprocess.run([self.path, "--data-dir", self.data_dir] + list(args),
                           capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode(
            "utf-8", "replace")

    def must(self, *args):
        rc, out, err = self.run(*args)
        check(rc == 0, "sluice %s: exit %d, stderr %r" % (" ".join(args), rc, err))
        return out

    def add_org(self, name):
        return self.must("org", "add", name).strip()

    def add_device(self, org, name):
        tok = self.must("device", "add", "--org", org, name).strip()
        check(tok.startswith("slk_"), "device add printed %r, not a token" % tok)
        return tok

    def log_cat(self, org):
        """Every stored reading of org, as parsed JSON objects in output order."""
        out = self.must("log", "cat", "--org", org)
        rows = []
        for line in out.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise CaseFailed("log cat printed a line that is not JSON: %r" % line[:200])
        return rows


class Daemon:
    """A sluiced process on loopback with ephemeral ports, output in files."""

    def __init__(self, path, data_dir, extra=(), name="sluiced"):
        self.path = path
        self.data_dir = data_dir
        base = os.path.dirname(data_dir.rstrip("/"))
        self.out_path = os.path.join(base, name + ".stdout")
        self.err_path = os.path.join(base, name + ".stderr")
        self.ports_file = os.path.join(base, name + ".ports.json")
        # every test client is 127.0.0.1: the failed-authentication limit per
        # address would couple unrelated cases (401 tests, token polling), so it
        # is off unless a case sets --auth-fail-rate itself
        limit = [] if "--auth-fail-rate" in extra else ["--auth-fail-rate", "0"]
        self.argv = [path, "--data-dir", data_dir, "--threads", "2", "--http", "127.0.0.1:0",
                     "--admin", "127.0.0.1:0", "--https", "off", "--mqtt", "off", "--mqtts",
                     "off", "--frame", "off", "--ports-file", self.ports_file] + limit + list(extra)
        self.proc = None
        self.http = self.admin = self.mqtt = None

    def start(self, timeout=10):
        os.makedirs(self.data_dir, exist_ok=True)
        if os.path.exists(self.ports_file):
            os.unlink(self.ports_file)
        self.out_f = open(self.out_path, "wb")
        self.err_f = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.out_f, stderr=self.err_f,
                                     stdin=subprocess.DEVNULL)
        _daemons.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CaseFailed("sluiced exited %d during start-up; stderr %r" %
                                 (self.proc.returncode, self.stderr()))
            if "ready\n" in self.stdout():
                break
            time.sleep(0.02)
        else:
            raise CaseFailed("sluiced printed no 'ready' within %ds; stdout %r stderr %r" %
                             (timeout, self.stdout(), self.stderr()))
        with open(self.ports_file) as f:
            ports = json.load(f)
        self.http = ports.get("http")
        self.admin = ports.get("admin")
        self.mqtt = ports.get("mqtt")  # with extra ["--mqtt", "127.0.0.1:0"]
        check(isinstance(self.http, int) and self.http > 0, "ports file has no http: %r" % ports)
        check(isinstance(self.admin, int) and self.admin > 0,
              "ports file has no admin: %r" % ports)
        return self

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def terminate(self, timeout=5):
        """SIGTERM; returns the exit status, or None if it did not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for f in ("out_f", "err_f"):
            if getattr(self, f, None):
                getattr(self, f).close()
                setattr(self, f, None)


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (last wins)
        self.body = body
        self.raw_head = raw_head

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise CaseFailed("response body is not JSON: %r" % self.body[:200])

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:200])


class Conn:
    """A raw TCP connection with a response reader that keeps leftover bytes,
    so pipelined responses are read one after another."""

    def __init__(self, port, host="127.0.0.1", timeout=5, nodelay=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise CaseFailed("timed out waiting for the server (have %r)" % self.buf[:200])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise CaseFailed("timed out waiting for the server (have %r)" % self.buf[:200])
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise CaseFailed("connection closed by the server (have %r)" % self.buf[:200])
        self.buf += chunk

    def read_response(self, timeout=None, allow_interim=False):
        """Reads one response; interim 1xx responses are returned only when
        allow_interim, otherwise skipped."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            while b"\r\n\r\n" not in self.buf:
                self._fill(deadline)
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            check(len(parts) >= 2 and parts[0] == "HTTP/1.1" and parts[1].isdigit(),
                  "bad status line %r" % lines[0])
            status = int(parts[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                if allow_interim:
                    return Response(status, parts[2] if len(parts) > 2 else "", headers, b"",
                                    head)
                continue
            n = int(headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill(deadline)
            body, self.buf = self.buf[:n], self.buf[n:]
            return Response(status, parts[2] if len(parts) > 2 else "", headers, body, head)

    def wait_eof(self, timeout=2.0):
        """True when the server closes (FIN or RST) within timeout with nothing
        more to say; raises if it sends more bytes."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not chunk:
                check(not self.buf, "unread bytes before EOF: %r" % self.buf[:200])
                return True
            self.buf += chunk
            raise CaseFailed("expected EOF, got more bytes: %r" % self.buf[:200])


def post_bytes(path, token, body, ctype="application/json", extra=b"", host=b"127.0.0.1"):
    """The bytes of a well-formed POST with Content-Length."""
    if isinstance(body, str):
        body = body.encode()
    head = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
    if token is not None:
        head += b"X-Auth-Token: " + token.encode() + b"\r\n"
    if ctype:
        head += b"Content-Type: " + ctype.encode() + b"\r\n"
    head += b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n"
    return head + body


def request(port, method, path, headers=None, body=b"", timeout=5):
    """One request on a fresh connection (Connection: close); returns a Response."""
    if isinstance(body, str):
        body = body.encode()
    h = {"Host": "127.0.0.1", "Connection": "close"}
    if method in ("POST", "PUT") or body:
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    raw = ("%s %s HTTP/1.1\r\n" % (method, path)).encode()
    raw += b"".join(("%s: %s\r\n" % kv).encode("latin-1") for kv in h.items() if kv[1] is not None)
    raw += b"\r\n" + body
    with Conn(port, timeout=timeout) as c:
        c.send(raw)
        return c.read_response()


def post(port, token, body, ctype="application/json", headers=None, path="/v1/readings"):
    h = {"Content-Type": ctype}
    if token is not None:
        h["X-Auth-Token"] = token
    h.update(headers or {})
    return request(port, "POST", path, h, body)


def wait_token_live(port, token, timeout=10):
    """The daemon picks up CLI changes within about a second: poll with an empty
    array (202 accepted 0, stores nothing) until the token is accepted."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = post(port, token, b"[]")
        if last.status != 401:
            check_eq((last.status, last.json()), (202, {"accepted": 0}),
                     "empty array from a live token")
            return
        time.sleep(0.05)
    raise CaseFailed("token still refused after %ds: %r" % (timeout, last))


def metrics(port, conn=None):
    """Parses /metrics into {name: value}; uses conn (keep-alive) when given."""
    raw = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if conn is None:
        r = request(port, "GET", "/metrics")
    else:
        conn.send(raw)
        r = conn.read_response()
    check_eq(r.status, 200, "GET /metrics status")
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def curl(args, max_time=10):
    """Runs curl -s with a time limit; returns (http status as int, 0 when none
    came, body bytes, stderr text)."""
    with tempfile.NamedTemporaryFile(prefix="sluice-curl-") as body:
        p = subprocess.run(["curl", "-s", "-S", "--max-time", str(max_time), "-o", body.name,
                            "-w", "%{http_code}"] + args, capture_output=True,
                           timeout=max_time + 5)
        with open(body.name, "rb") as f:
            data = f.read()
    code = p.stdout.decode().strip()
    return (int(code) if code.isdigit() else -1), data, p.stderr.decode("utf-8", "replace")


def readings_with(rows, key, value):
    """The log rows whose JSON payload has payload[key] == value, in order."""
    return [r for r in rows
            if isinstance(r.get("payload"), dict) and r["payload"].get(key) == value]


def readable_within(sock, seconds):
    r, _, _ = select.select([sock], [], [], max(0.0, seconds))
    return bool(r)


def tmpdir(prefix):
    """A fresh directory removed at exit (kept when $SLUICE_KEEP_TMP is set)."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d
