#!/usr/bin/env python3
"""sluiced as an operator runs it (INTERFACE.md, "sluiced"): --help, bad flags
(exit 2, one line naming the flag), a port in use (exit 1), the INI config file
and flags winning over it, the admin endpoints, and SIGTERM under load: exit 0
and every acknowledged reading stored exactly once.

Exits 77 when $SLUICED / $SLUICE_CLI or curl are missing.
"""
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluicetest  # noqa: E402
from sluicetest import (  # noqa: E402
    CaseFailed, Cli, Conn, Daemon, Suite, binaries, check, check_eq, metrics, post, post_bytes,
    request, tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=100)
WORK = tmpdir("sluice-daemon-")
OFF = ["--https", "off", "--mqtt", "off", "--mqtts", "off", "--frame", "off"]


def run_sluiced(*args, timeout=10):
    """Runs sluiced to completion in a scratch directory (a daemon that starts
    when it should not is killed by the timeout and reported)."""
    cwd = tmpdir("sluice-run-")
    try:
        p = subprocess.run([SLUICED] + list(args), capture_output=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise CaseFailed("sluiced %s was still running after %ds" % (" ".join(args), timeout))
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def fresh(name, extra=()):
    """A started daemon on its own data dir with org acme / device pump-7."""
    data = os.path.join(tmpdir("sluice-%s-" % name), "data")
    cli = Cli(SLUICE_CLI, data)
    cli.add_org("acme")
    tok = cli.add_device("acme", "pump-7")
    d = Daemon(SLUICED, data, list(extra), name=name).start()
    wait_token_live(d.http, tok)
    return d, cli, tok


@suite.case("--help exits 0 and lists the flags")
def _():
    rc, out, err = run_sluiced("--help")
    check_eq(rc, 0, "exit status (stderr %r)" % err)
    for flag in ["--data-dir", "--fsync", "--ports-file", "--threads", "--http", "--https",
                 "--mqtt", "--mqtts", "--frame", "--udp", "--admin", "--tls-cert", "--tls-key",
                 "--config"]:
        check(flag in out, "--help does not list %s" % flag)
    check("./data" in out and "batch" in out and "127.0.0.1:9090" in out,
          "--help does not show the defaults")


@suite.case("bad flag values exit 2 with one stderr line naming the flag")
def _():
    data = os.path.join(WORK, "bad-flags")
    for args, name in [(["--threads", "0"], "threads"), (["--threads", "many"], "threads"),
                       (["--fsync", "sometimes"], "fsync"), (["--http", "nonsense"], "http"),
                       (["--http", "127.0.0.1:70000"], "http"),
                       (["--admin", "127.0.0.1"], "admin"),
                       (["--header-timeout", "0s"], "header-timeout"),
                       (["--max-body", "lots"], "max-body"), (["--bogus"], "bogus"),
                       (["--threads"], "threads")]:
        rc, out, err = run_sluiced("--data-dir", data, *(OFF + args))
        what = "sluiced %s" % " ".join(args)
        check_eq(rc, 2, what + ": exit status (stderr %r)" % err)
        lines = err.splitlines()
        check_eq(len(lines), 1, what + ": stderr lines")
        check(name in lines[0], what + ": stderr does not name %r: %r" % (name, lines[0]))
        check_eq(out, "", what + ": stdout")
    check(not os.path.exists(data), "a refused configuration created the data dir")


@suite.case("port in use: exit 1 with a clear message")
def _():
    hold = socket.socket()
    try:
        hold.bind(("127.0.0.1", 0))
        hold.listen(1)
        port = hold.getsockname()[1]
        data = os.path.join(WORK, "port-in-use")
        rc, out, err = run_sluiced("--data-dir", data, "--threads", "2", "--http",
                                   "127.0.0.1:%d" % port, "--admin", "127.0.0.1:0", *OFF)
    finally:
        hold.close()
    check_eq(rc, 1, "exit status (stderr %r)" % err)
    check("in use" in err.lower(), "stderr does not say the address is in use: %r" % err)
    check(str(port) in err, "stderr does not name the port %d: %r" % (port, err))
    check("ready" not in out, "printed ready: %r" % out)


def config_daemon(name, conf_lines, flags=()):
    base = tmpdir("sluice-conf-")
    data = os.path.join(base, "data")
    Cli(SLUICE_CLI, data).add_org("acme")
    conf = os.path.join(base, "sluiced.ini")
    with open(conf, "w") as f:
        f.write("\n".join(l.replace("BASE", base) for l in conf_lines) + "\n")
    d = Daemon(SLUICED, data, name=name)
    d.argv = [SLUICED, "--config", conf] + list(flags)
    return d, base, conf


CONF = ["; written by test_daemon.py", "[sluiced]", "data-dir = BASE/data", "threads = 2",
        "http = 127.0.0.1:0", "admin = 127.0.0.1:0", "https = off", "mqtt = off",
        "mqtts = off", "frame = off"]


@suite.case("--config INI file sets values")
def _():
    d, base, _ = config_daemon("conf-only", CONF + ["ports-file = BASE/from-config.json"])
    d.ports_file = os.path.join(base, "from-config.json")
    d.start()
    try:
        check_eq(request(d.admin, "GET", "/healthz").status, 200, "healthz")
        check(os.path.isdir(os.path.join(base, "data")), "data-dir from the config unused")
    finally:
        check_eq(d.terminate(), 0, "exit status after SIGTERM")


@suite.case("flags win over the config file, wherever they appear")
def _():
    for before in (False, True):
        d, base, conf = config_daemon("conf-flag", CONF + ["ports-file = BASE/from-config.json"])
        flag = ["--ports-file", os.path.join(base, "from-flag.json")]
        d.argv = [SLUICED] + (flag + ["--config", conf] if before else ["--config", conf] + flag)
        d.ports_file = os.path.join(base, "from-flag.json")
        d.start()
        try:
            check(not os.path.exists(os.path.join(base, "from-config.json")),
                  "the config's ports-file was written although a flag overrides it")
        finally:
            check_eq(d.terminate(), 0, "exit status after SIGTERM")
    # the config's http address is in use: only the flag lets the daemon start
    hold = socket.socket()
    try:
        hold.bind(("127.0.0.1", 0))
        hold.listen(1)
        busy = ["http = 127.0.0.1:%d" % hold.getsockname()[1]]
        conf_busy = [l for l in CONF if not l.startswith("http ")] + busy
        d, base, conf = config_daemon("conf-busy", conf_busy)
        rc, out, err = run_sluiced("--config", conf)
        check_eq(rc, 1, "config http on a busy port: exit status (stderr %r)" % err)
        d.argv = [SLUICED, "--config", conf, "--http", "127.0.0.1:0", "--ports-file",
                  os.path.join(base, "p.json")]
        d.ports_file = os.path.join(base, "p.json")
        d.start()
        check(d.http != hold.getsockname()[1], "flag --http ignored")
        check_eq(d.terminate(), 0, "exit status after SIGTERM")
    finally:
        hold.close()


@suite.case("a bad config value exits 2 with one line naming the key")
def _():
    d, base, conf = config_daemon("conf-bad", CONF + ["threads = 0"])
    rc, out, err = run_sluiced("--config", conf)
    check_eq(rc, 2, "exit status (stderr %r)" % err)
    lines = err.splitlines()
    check_eq(len(lines), 1, "stderr lines")
    check("threads" in lines[0] and "sluiced.ini" in lines[0],
          "stderr does not name the file and key: %r" % lines[0])
    d, base, conf = config_daemon("conf-unknown", CONF + ["colour = blue"])
    rc, out, err = run_sluiced("--config", conf)
    check_eq(rc, 2, "unknown key: exit status (stderr %r)" % err)
    check("colour" in err and len(err.splitlines()) == 1, "unknown key: stderr %r" % err)
    rc, out, err = run_sluiced("--config", os.path.join(base, "missing.ini"))
    check_eq(rc, 2, "missing config file: exit status (stderr %r)" % err)
    check("missing.ini" in err, "missing config file: stderr %r" % err)


@suite.case("start-up output: 'listening' lines matching the ports file, then ready")
def _():
    d, cli, tok = fresh("startup")
    try:
        lines = d.stdout().splitlines()
        check_eq(lines[-1], "ready", "last start-up line")
        want = {"listening http 127.0.0.1:%d" % d.http, "listening admin 127.0.0.1:%d" % d.admin}
        check_eq(set(lines[:-1]), want, "listening lines")
        with open(d.ports_file) as f:
            check_eq(json.load(f), {"http": d.http, "admin": d.admin}, "ports file")
    finally:
        check_eq(d.terminate(), 0, "exit status after SIGTERM")


@suite.case("admin: /healthz and /readyz 200, /metrics counts readings")
def _():
    d, cli, tok = fresh("admin")
    try:
        check_eq(request(d.admin, "GET", "/healthz").status, 200, "/healthz")
        check_eq(request(d.admin, "GET", "/readyz").status, 200, "/readyz")
        r = request(d.admin, "GET", "/metrics")
        check_eq(r.status, 200, "/metrics")
        check(r.headers.get("content-type", "").startswith("text/plain"),
              "/metrics content type %r" % r.headers.get("content-type"))
        text = r.body.decode()
        for name in ["sluice_readings_total", "sluice_connections_accepted_total"]:
            check("\n# TYPE %s " % name in "\n" + text and "\n%s " % name in "\n" + text,
                  "/metrics lacks %s: %r" % (name, text[:300]))
        before = metrics(d.admin)["sluice_readings_total"]
        check_eq(post(d.http, tok, '[{"m":1},{"m":2},{"m":3}]').status, 202, "POST")
        check_eq(metrics(d.admin)["sluice_readings_total"] - before, 3,
                 "sluice_readings_total delta after 3 readings")
        check_eq(request(d.admin, "GET", "/nope").status, 404, "unknown admin path")
    finally:
        check_eq(d.terminate(), 0, "exit status after SIGTERM")


@suite.case("SIGTERM with an idle keep-alive connection: exit 0 within 2 s")
def _():
    d, cli, tok = fresh("idle")
    with Conn(d.http) as c:
        c.send(post_bytes("/v1/readings", tok, '{"idle":1}'))
        check_eq(c.read_response().status, 202, "POST before SIGTERM")
        t0 = time.monotonic()
        rc = d.terminate(timeout=5)
        took = time.monotonic() - t0
        check_eq(rc, 0, "exit status")
        check(took < 2.0, "exit took %.2fs with an idle connection open" % took)
        check(c.wait_eof(1.0), "the idle connection was not closed")


class Load:
    """Client threads posting one reading per request on keep-alive connections
    until stopped, the daemon goes away, or `seconds` pass; `acked[t]` holds the
    sequence numbers thread t got a 202 {"accepted":1} for, `odd` counts what
    should not happen (503 and cuts while draining are allowed)."""

    def __init__(self, d, tok, case, threads=4, seconds=4.0):
        self.d, self.tok, self.case, self.seconds = d, tok, case, seconds
        self.stop = threading.Event()
        self.acked = [[] for _ in range(threads)]
        self.sent = [0] * threads
        self.odd = collections.Counter()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(threads)]
        for t in self.threads:
            t.start()

    def _client(self, tid):
        d, seq, conn = self.d, 0, None
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = Conn(d.http, timeout=5)
                payload = json.dumps({"case": self.case, "t": tid, "seq": seq})
                seq += 1
                conn.send(post_bytes("/v1/readings", self.tok, payload))
                self.sent[tid] += 1
                r = conn.read_response()
                if r.status == 202 and r.body == b'{"accepted":1}':
                    self.acked[tid].append(seq - 1)
                elif r.status != 503:
                    self.odd["status %d %r" % (r.status, r.body[:80])] += 1
                if r.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except ConnectionRefusedError:
                break  # listener closed: the daemon is draining or gone
            except Exception as e:
                # a connection cut while draining is allowed; the reading is then unacked
                if conn is not None:
                    conn.close()
                conn = None
                if not isinstance(e, (ConnectionResetError, BrokenPipeError)) and \
                        "closed by the server" not in str(e):
                    self.odd[type(e).__name__ + ": " + str(e)[:80]] += 1
                if d.proc.poll() is not None:
                    break
        if conn is not None:
            conn.close()

    def acknowledged(self):
        return sum(len(a) for a in self.acked)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(6)
        check(all(not t.is_alive() for t in self.threads), "client threads did not finish")
        check_eq(dict(self.odd), {}, "unexpected responses or errors during the load")

    def check_stored(self, cli):
        """Every acknowledged reading is in the log exactly once; returns how
        many of this load's readings are stored."""
        rows = cli.log_cat("acme")
        seen = collections.Counter((r["payload"]["t"], r["payload"]["seq"]) for r in rows
                                   if isinstance(r.get("payload"), dict) and
                                   r["payload"].get("case") == self.case)
        dup = [k for k, v in seen.items() if v > 1]
        check_eq(dup[:5], [], "readings stored more than once (of %d stored)" % len(seen))
        missing = [(t, s) for t in range(len(self.acked)) for s in self.acked[t]
                   if (t, s) not in seen]
        check_eq(missing[:5], [], "acknowledged readings missing from the log (%d of %d)" %
                 (len(missing), self.acknowledged()))
        for r in rows:
            check_eq((r["org"], r["device"]), ("acme", "pump-7"), "envelope")
        return len(seen)


def _daemons_append(d):
    sluicetest._daemons.append(d)  # killed at exit like every Daemon.start()


def exit_status(rc):
    """An exit status for a message: 'stopped by signal N' when killed."""
    return "stopped by signal %d" % -rc if rc is not None and rc < 0 else repr(rc)


@suite.case("SIGTERM under load: exit 0 within 5 s, every acknowledged reading stored once")
def _():
    d, cli, tok = fresh("load")
    load = Load(d, tok, "load")
    time.sleep(1.0)
    before_term = load.acknowledged()
    t0 = time.monotonic()
    rc = d.terminate(timeout=5)
    took = time.monotonic() - t0
    load.finish()
    check_eq(rc, 0, "exit status after SIGTERM under load (took %.2fs; stderr %r)" %
             (took, d.stderr()[-300:]))
    check(before_term >= 20, "too little load before SIGTERM: %d acknowledged" % before_term)
    stored = load.check_stored(cli)
    print("# load: %d sent, %d acknowledged (%d before SIGTERM), %d stored, exit in %.2fs" %
          (sum(load.sent), load.acknowledged(), before_term, stored, took))


def signal_claimed(pid):
    """True once the process has taken charge of SIGTERM (blocked or caught it):
    before that, in the dynamic loader, any program dies of the default action,
    which no daemon can prevent (issue S3, D6)."""
    bit = 1 << (signal.SIGTERM - 1)
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(l.split(":", 1) for l in f if ":" in l)
    except OSError:
        return False
    return any(int(fields.get(k, "0").strip(), 16) & bit for k in ("SigBlk", "SigCgt"))


@suite.case("SIGTERM during start-up and log recovery: exit 0, nothing lost (D6)")
def _():
    # a data dir with logs to recover: readings from both workers, and a daemon
    # that was killed rather than stopped
    d, cli, tok = fresh("early")
    load = Load(d, tok, "early", seconds=1.0)
    for t in load.threads:
        t.join(5)
    load.finish()
    d.proc.kill()
    d.proc.wait(5)
    d.kill()
    check(load.acknowledged() >= 20, "too little stored before the kill: %d" %
          load.acknowledged())
    for delay in (0, 0.005, 0.02, 0.05, 0.1, 0.2):
        e = Daemon(SLUICED, d.data_dir, name="early-%g" % delay)
        e.out_f = open(e.out_path, "wb")
        e.err_f = open(e.err_path, "wb")
        e.proc = subprocess.Popen(e.argv, stdout=e.out_f, stderr=e.err_f,
                                  stdin=subprocess.DEVNULL)
        _daemons_append(e)
        deadline = time.monotonic() + 5
        while not signal_claimed(e.proc.pid) and e.proc.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.0002)
        time.sleep(delay)
        e.proc.send_signal(signal.SIGTERM)
        try:
            rc = e.proc.wait(5)
        except subprocess.TimeoutExpired:
            rc = None
        what = "SIGTERM %g s after start-up began" % delay
        check(rc is not None, what + ": still running 5 s later (stdout %r, stderr %r)" %
              (e.stdout(), e.stderr()[-300:]))
        check_eq(exit_status(rc), "0", what + ": exit status (stderr %r)" % e.stderr()[-300:])
        e.kill()
    load.check_stored(cli)


@suite.case("a burst of SIGTERM/SIGINT during a drain under load: exit 0, nothing lost (D6)")
def _():
    d, cli, tok = fresh("burst", ["--drain-timeout", "3s"])
    load = Load(d, tok, "burst", threads=6)
    time.sleep(1.0)
    before = load.acknowledged()
    # the first asks for the drain, the other four arrive while it runs; then
    # more keep coming until the process is gone, to reach its very last steps
    sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM]
    t0 = time.monotonic()
    for sig in sigs:
        d.proc.send_signal(sig)
        time.sleep(0.002)
    while d.proc.poll() is None and time.monotonic() - t0 < 8:
        try:
            d.proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(0.0005)
    try:
        rc = d.proc.wait(1)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.monotonic() - t0
    load.finish()
    check_eq(exit_status(rc), "0", "exit status after the burst (took %.2fs; stderr %r)" %
             (took, d.stderr()[-400:]))
    check(before >= 20, "too little load before the signals: %d acknowledged" % before)
    check("already draining" in d.stderr(), "the later signals were not reported: %r" %
          d.stderr()[-300:])
    stored = load.check_stored(cli)
    print("# burst: %d acknowledged, %d stored, exit in %.2fs" %
          (load.acknowledged(), stored, took))


@suite.case("failed authentications are limited per address: 401s, then 429 with Retry-After")
def _():
    d, cli, tok = fresh("authrate", ["--threads", "1", "--auth-fail-rate", "2"])
    time.sleep(2.1)  # the token polling above may have used some of the bucket (burst 4)
    statuses = []
    for i in range(10):
        # a 429 closes its connection (the failing client must reconnect), so
        # each attempt comes on a connection of its own
        r = post(d.http, "slk_nope%d" % i, b"{}")
        statuses.append(r.status)
        if r.status == 429:
            check("retry-after" in r.headers, "429 without Retry-After")
            check_eq(r.headers.get("connection"), "close", "429 closes the connection")
    check_eq(statuses[:4], [401] * 4, "the burst of 4 failed attempts is answered 401")
    check(statuses[-1] == 429 and statuses.count(429) >= 5,
          "failed attempts beyond the burst are not refused 429: %r" % statuses)
    # only failing attempts are slowed down: a good token from the same address
    # (a neighbour behind the same NAT) is served at once (issue S3, defect 4)
    r = post(d.http, tok, b'{"rate":"neighbour"}')
    check_eq(r.status, 202, "a good token from the throttled address")
    r = post(d.http, "slk_nope_again", b"{}")
    check_eq(r.status, 429, "a bad token from that address right after")
    time.sleep(1.2)  # 2 tokens per second come back
    r = post(d.http, "slk_nope_later", b"{}")
    check_eq(r.status, 401, "a bad token after the bucket refilled")
    m = metrics(d.admin)
    check(m.get("sluice_auth_throttled_total", 0) >= 6, "metric: %r" % m.get(
        "sluice_auth_throttled_total"))
    check_eq(d.terminate(10), 0, "exit status of SIGTERM")


if __name__ == "__main__":
    suite.run()
