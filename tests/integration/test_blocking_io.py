#!/usr/bin/env python3
"""Regression test for D7 (blocking I/O on the event loop): sluiced runs under
strace -ff; after start-up, readings go to several new orgs (each opens a log:
directories, a segment, fsyncs) and enough data to one org to roll its
segments (--segment-bytes 64KiB). None of the blocking file syscalls may come
from a worker thread: they belong on the storage thread (sluice-io).

Worker threads are those named sluice-w* and, for builds that did not name
them, any thread but the main one that set up an io_uring (each worker owns
one). Its own file because it needs strace: exits 77 without it (and without
$SLUICED / $SLUICE_CLI or curl).
"""
import glob
import json
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    SKIP, Cli, Conn, Daemon, Suite, binaries, check, check_eq, post_bytes, tmpdir,
    wait_token_live)
from regress_util import note, stored_count  # noqa: E402

SLUICED, SLUICE_CLI = binaries()
STRACE = shutil.which("strace")
if not STRACE:
    print("# skip: strace is not installed")
    sys.exit(SKIP)
suite = Suite(limit=120)
BLOCKING = ["openat", "mkdir", "mkdirat", "fsync", "fdatasync", "ftruncate", "pwrite64",
            "rename", "renameat", "renameat2", "unlink", "unlinkat", "fallocate"]
TRACE = BLOCKING + ["io_uring_setup"]


def sluiced_pid(strace_pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (strace_pid, strace_pid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        if kids:
            return kids[0]
        time.sleep(0.02)
    raise AssertionError("no sluiced under strace %d" % strace_pid)


def thread_names(pid):
    out = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, t)) as f:
                out[int(t)] = f.read().strip()
        except OSError:
            pass
    return out


def calls(path, start=0, end=None):
    """(syscall name, line) of each call line in an strace -ff file from byte
    start to byte end (whole lines only)."""
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(-1 if end is None else max(0, end - start)).decode("utf-8", "replace")
    if end is not None and not text.endswith("\n"):
        text = text.rsplit("\n", 1)[0]
    out = []
    for line in text.splitlines():
        name = line.split("(", 1)[0].strip()
        if name and name.replace("_", "").isalnum():
            out.append((name, line))
    return out


@suite.case("D7: no worker thread opens, fsyncs, truncates, renames or unlinks after "
            "start-up (new orgs, segment rolls)")
def _():
    work = tmpdir("sluice-strace-")
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    orgs = ["n%d" % i for i in range(6)]
    toks = {}
    for org in orgs:
        cli.add_org(org)
        toks[org] = cli.add_device(org, "dev")
    prefix = os.path.join(work, "trace")
    ends = {}
    d = Daemon(SLUICED, data, ["--segment-bytes", "64KiB"], name="traced")
    d.argv = [STRACE, "-f", "-ff", "-qq", "-e", "trace=" + ",".join(TRACE), "-o", prefix] + d.argv
    spid = None
    try:
        d.start(timeout=30)
        spid = sluiced_pid(d.proc.pid)
        wait_token_live(d.http, toks[orgs[0]])
        time.sleep(0.5)  # start-up done
        names = thread_names(spid)
        marks = {}
        for path in glob.glob(prefix + ".*"):
            marks[int(path.rsplit(".", 1)[1])] = os.path.getsize(path)
        # the traffic: a first reading in each org (each opens its log), then
        # 40 x 8 KB to one org: its 64 KiB segments roll several times
        statuses = []
        with Conn(d.http, timeout=30) as c:
            for org in orgs:
                c.send(post_bytes("/v1/readings", toks[org], json.dumps({"org": org})))
                statuses.append(c.read_response().status)
            for i in range(40):
                body = json.dumps({"i": i, "pad": "p" * 8000})
                c.send(post_bytes("/v1/readings", toks[orgs[1]], body))
                statuses.append(c.read_response().status)
        check_eq(statuses, [202] * len(statuses), "statuses")
        time.sleep(1.0)
        names.update(thread_names(spid))
        # the window ends here: the clean stop on SIGTERM (fdatasync and cut
        # every log) is not serving
        ends = {int(p.rsplit(".", 1)[1]): os.path.getsize(p) for p in glob.glob(prefix + ".*")}
        check_eq(stored_count(cli, orgs[1]), 41, "readings stored in %s" % orgs[1])
        check_eq(stored_count(cli, orgs[5]), 1, "readings stored in %s" % orgs[5])
    finally:
        if spid:
            try:
                os.kill(spid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        d.terminate(timeout=10)
        d.kill()
    per_tid = {}
    for path in glob.glob(prefix + ".*"):
        tid = int(path.rsplit(".", 1)[1])
        per_tid[tid] = (calls(path), calls(path, marks.get(tid, 0), ends.get(tid, 0)))
    workers = set()
    for tid, (every, _) in per_tid.items():
        name = names.get(tid, "?")
        if name.startswith("sluice-w"):
            workers.add(tid)
        elif tid != spid and name != "sluice-io" and any(n == "io_uring_setup" for n, _ in every):
            workers.add(tid)
    note("threads: %s; workers %s" % (sorted((t, names.get(t, "?")) for t in per_tid),
                                      sorted(workers)))
    check(workers, "no worker thread found in the trace")
    # the traced work did happen somewhere: a log file was opened after start-up
    opened = [ln for tid, (_, after) in per_tid.items() for n, ln in after
              if n == "openat" and "/logs/" in ln]
    check(opened, "no log opened after start-up in any thread (is strace tracing?)")
    bad = [(names.get(tid, "?"), ln[:160]) for tid in workers for n, ln in per_tid[tid][1]
           if n in BLOCKING]
    check(not bad, "%d blocking calls on worker threads after start-up, e.g. %r" %
          (len(bad), bad[:4]))


if __name__ == "__main__":
    suite.run()
