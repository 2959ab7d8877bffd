#!/usr/bin/env python3
"""Durability of acknowledged readings through the real daemon (issue S2):
a reading answered 202 survives kill -9 in every --fsync mode, is stored
exactly once, and a reading answered otherwise is not stored; SIGTERM under
load acknowledges what is in flight; a torn tail is cut on start, said so on
stderr, and the log goes on.

Clients are Python threads with keep-alive http.client connections; every
reading carries a unique id so `sluice log cat` can be audited against what
each client saw. Exits 77 when $SLUICED / $SLUICE_CLI or curl are missing.
"""
import collections
import glob
import http.client
import json
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    CaseFailed, Cli, Daemon, Suite, binaries, check, check_eq, post, tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()
suite = Suite(limit=88)
SEED = int(os.environ.get("SLUICE_TEST_SEED", str(int(time.time()))))
print("# seed %d (set SLUICE_TEST_SEED to replay)" % SEED, flush=True)
RNG = random.Random(SEED)


def note(msg):
    print("# note: " + msg, flush=True)


class Load:
    """`threads` clients POSTing readings with unique ids until stop(); every
    reading ends up in exactly one of: acked (202), refused (another status,
    id -> status), unknown (sent, the connection died before a response),
    unsent (the connection could not be made)."""

    def __init__(self, port, token, tag, threads=8):
        self.port = port
        self.token = token
        self.tag = tag
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.acked = set()
        self.refused = {}
        self.unknown = set()
        self.died = []  # (ids, sent_at, done_at, "closed"|"reset") for requests without answer
        self.answered = []  # (ids, sent_at, done_at, status)
        self.bad = []  # protocol surprises: wrong 202 body, timeouts
        self.requests = 0
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout=15):
        self.halt.set()
        for t in self.threads:
            t.join(timeout)
            check(not t.is_alive(), "a client thread did not stop within %ds" % timeout)

    def _client(self, i):
        rnd = random.Random("%d-%s-%d" % (SEED, self.tag, i))
        conn = None
        k = 0
        while not self.halt.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    conn.connect()
                except OSError:
                    conn.close()
                    conn = None
                    time.sleep(0.01)
                    continue
            n = rnd.choice((1, 1, 1, 2, 3, 5))
            ids = ["%s.%d.%d.%d" % (self.tag, i, k, j) for j in range(n)]
            k += 1
            if n == 1 and rnd.random() < 0.5:
                body = json.dumps({"id": ids[0], "v": k})
            else:
                body = json.dumps([{"id": x, "v": k} for x in ids])
            sent_at = time.monotonic()
            try:
                conn.request("POST", "/v1/readings", body,
                             {"X-Auth-Token": self.token, "Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
            except TimeoutError:
                with self.lock:
                    self.unknown.update(ids)
                    self.bad.append("no response within 10 s to %s" % ids[0])
                conn.close()
                conn = None
                continue
            except (OSError, http.client.HTTPException) as e:
                how = "reset" if isinstance(e, ConnectionResetError) else "closed"
                with self.lock:
                    self.unknown.update(ids)
                    self.died.append((ids, sent_at, time.monotonic(), how))
                conn.close()
                conn = None
                continue
            with self.lock:
                self.requests += 1
                self.answered.append((ids, sent_at, time.monotonic(), r.status))
                if r.status == 202:
                    self.acked.update(ids)
                    if data != b'{"accepted":%d}' % n:
                        self.bad.append("202 with body %r for %d readings" % (data[:100], n))
                else:
                    for x in ids:
                        self.refused[x] = r.status
            if r.will_close:
                conn.close()
                conn = None


class Audit:
    """What a run of Loads sent and saw, across daemon restarts."""

    def __init__(self):
        self.acked = set()
        self.refused = {}
        self.unknown = set()
        self.requests = 0

    def add(self, load):
        check(not load.bad, "client surprises: %s" % "; ".join(load.bad[:5]))
        self.acked |= load.acked
        self.refused.update(load.refused)
        self.unknown |= load.unknown
        self.requests += load.requests

    def check_log(self, cli, org):
        """log cat holds every acked reading once, no refused one, nothing
        never sent, no duplicate at all. Returns the stored ids."""
        rows = cli.log_cat(org)
        ids = collections.Counter()
        for r in rows:
            p = r.get("payload")
            check(isinstance(p, dict) and "id" in p, "log cat row without an id: %r" % r)
            ids[p["id"]] += 1
        dups = sorted(x for x, c in ids.items() if c > 1)
        check(not dups, "%d readings stored more than once, e.g. %s (x%d)" %
              (len(dups), dups[:3], ids[dups[0]] if dups else 0))
        missing = self.acked - ids.keys()
        check(not missing, "%d of %d acknowledged readings are missing, e.g. %s" %
              (len(missing), len(self.acked), sorted(missing)[:5]))
        stored_refused = sorted(x for x in self.refused if x in ids)
        check(not stored_refused, "%d readings answered %s are stored, e.g. %s" %
              (len(stored_refused), sorted(set(self.refused.values())), stored_refused[:3]))
        phantom = ids.keys() - self.acked - self.unknown - set(self.refused)
        check(not phantom, "%d stored readings were never sent, e.g. %s" %
              (len(phantom), sorted(phantom)[:3]))
        return ids


def log_verify(cli):
    """`sluice log verify` must exit 0: no corruption anywhere."""
    rc, out, err = cli.run("log", "verify")
    check_eq(rc, 0, "sluice log verify exit status (stdout %r stderr %r)" %
             (out[-300:], err[-300:]))


def fresh(name):
    """A work dir with org acme and device pump-7, no daemon yet."""
    work = tmpdir("sluice-dur-%s-" % name)
    data = os.path.join(work, "data")
    cli = Cli(SLUICE_CLI, data)
    org_id = cli.add_org("acme")
    tok = cli.add_device("acme", "pump-7")
    return data, cli, tok, org_id


def crash_loop(name, flags, rounds):
    """rounds × (start, load, kill -9 at a random moment), then a clean stop;
    then the audit. Returns the Audit and the segment files."""
    data, cli, tok, _ = fresh(name)
    audit = Audit()
    extra = ["--segment-bytes", "256KiB"] + list(flags)
    started = []
    for rnd in range(rounds):
        d = Daemon(SLUICED, data, extra, name="%s-r%d" % (name, rnd)).start()
        started.append(d)
        wait_token_live(d.http, tok)
        load = Load(d.http, tok, "%s%d" % (name, rnd)).start()
        time.sleep(RNG.uniform(0.3, 1.5))
        d.kill()  # SIGKILL while the clients are sending
        load.stop()
        audit.add(load)
        check(load.acked, "round %d: no reading was acknowledged before the kill" % rnd)
    d = Daemon(SLUICED, data, extra, name="%s-last" % name).start()
    check_eq(d.terminate(10), 0, "exit status of the final SIGTERM")
    started.append(d)
    cuts = sum(x.stderr().count("sluiced: recovery: /") for x in started)
    if "--direct-io" not in flags:
        # the default path is O_DIRECT: a silent fallback would test the other one
        check(not any("O_DIRECT" in x.stderr() for x in started),
              "sluiced fell back from O_DIRECT: %s" % started[0].stderr()[-300:])
    if "--dsync" in flags:
        check("made durable by RWF_DSYNC writes" in started[0].stderr(),
              "--dsync on, but sluiced did not say it writes with RWF_DSYNC: %s"
              % started[0].stderr()[-300:])
    ids = audit.check_log(cli, "acme")
    segs = glob.glob(os.path.join(data, "logs", "*", "w*", "*.seg"))
    note("%s: %d rounds, %d requests, %d acked readings, %d of %d in-flight readings stored, "
         "%d segments, %d tails cut on restart" %
         (name, rounds, audit.requests, len(audit.acked), len(audit.unknown & ids.keys()),
          len(audit.unknown), len(segs), cuts))
    log_verify(cli)
    return audit, segs


@suite.case("crash loop, --fsync batch (2 commits in flight, the default): 5 × kill -9 under load, "
            "every 202 stored exactly once")
def _():
    _, segs = crash_loop("batch", ["--fsync", "batch"], 5)
    check(len(segs) > 2, "256KiB segments never rolled (%d segment files)" % len(segs))


# Several commits in flight per log (issue S11): a kill -9 then finds batches
# whose writes or syncs were still running, possibly a later one complete
# behind an earlier one cut short; every acknowledged reading must be there once.
# (Through the page cache, --direct-io off, a log keeps one in flight whatever
# K says: the case checks that the flag changes nothing there.)
for _k, _flags in ((1, []), (4, []), (4, ["--direct-io", "off"]), (2, ["--dsync", "on"])):
    @suite.case("crash loop, --commits-in-flight %d%s: 3 × kill -9 under load, every 202 stored "
                "exactly once" % (_k, " " + " ".join(_flags) if _flags else ""))
    def _(k=_k, flags=_flags):
        crash_loop("k%d%s" % (k, "".join(f[2] for f in flags[::2])),
                   ["--fsync", "batch", "--commits-in-flight", str(k)] + flags, 3)


@suite.case("crash loop, --fsync always: 3 × kill -9 under load, every 202 stored exactly once")
def _():
    crash_loop("always", ["--fsync", "always"], 3)


@suite.case("crash loop, --direct-io off (appends through the page cache): 3 × kill -9, every 202 stored once")
def _():
    crash_loop("buffered", ["--fsync", "batch", "--direct-io", "off"], 3)


@suite.case("kill -9 with --fsync interval:200 loses nothing acknowledged (page cache)")
def _():
    crash_loop("interval", ["--fsync", "interval:200"], 1)


@suite.case("kill -9 with --fsync never loses nothing acknowledged (page cache)")
def _():
    crash_loop("never", ["--fsync", "never"], 1)


@suite.case("SIGTERM under load: exit 0 within 10 s, in-flight requests answered, 202s stored")
def _():
    data, cli, tok, _ = fresh("term")
    d = Daemon(SLUICED, data, ["--fsync", "batch"], name="term").start()
    wait_token_live(d.http, tok)
    load = Load(d.http, tok, "term").start()
    time.sleep(1.0)
    t_term = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        rc = d.proc.wait(10)
    except Exception:
        rc = None
    took = time.monotonic() - t_term
    load.stop()
    check_eq(rc, 0, "exit status after SIGTERM (stderr %r)" % d.stderr()[-500:])
    check(took < 10, "took %.1f s to exit" % took)
    audit = Audit()
    audit.add(load)
    ids = audit.check_log(cli, "acme")
    # requests in flight at SIGTERM (sent before it, ended after it) and those
    # sent after it on connections still open: what became of them
    inflight, later = collections.Counter(), collections.Counter()
    stored_unanswered = []
    ends = [(ids_, a, b, str(st)) for ids_, a, b, st in load.answered]
    ends += [(ids_, a, b, how) for ids_, a, b, how in load.died]
    for ids_, sent_at, done_at, outcome in ends:
        if sent_at < t_term <= done_at:
            inflight[outcome] += 1
        elif sent_at >= t_term:
            later[outcome] += 1
        if outcome in ("closed", "reset") and any(x in ids for x in ids_):
            stored_unanswered.append(ids_[0])
    note("SIGTERM after %d requests, exit in %.2f s; in flight at SIGTERM: %s; sent after "
         "it: %s" % (load.requests, took, dict(inflight), dict(later)))
    check(not stored_unanswered,
          "%d requests were stored but their connection closed without a response (the "
          "drain must acknowledge what it commits), e.g. %s" % (len(stored_unanswered),
                                                          stored_unanswered[:3]))
    check(sum(inflight.values()) > 0, "no request was in flight at SIGTERM: the case tested "
          "nothing")
    check(len(audit.acked) > 0, "nothing was acknowledged")
    log_verify(cli)


def newest_segment(data, org_id):
    """The newest segment of worker 0 of the org (worker 1's if worker 0 has none)."""
    for w in ("w0", "w1"):
        segs = sorted(glob.glob(os.path.join(data, "logs", org_id, w, "*.seg")))
        if segs and os.path.getsize(segs[-1]) > seg_header_size(segs[-1]):
            return segs[-1]
    raise CaseFailed("no segment with records under %s" % os.path.join(data, "logs", org_id))


def post_each(port, tok, tag, n):
    """n readings, each on its own connection (so both workers get some)."""
    for i in range(n):
        r = post(port, tok, json.dumps({"id": "%s.%d" % (tag, i)}))
        check_eq(r.status, 202, "POST %s.%d" % (tag, i))
    return {"%s.%d" % (tag, i) for i in range(n)}


def seg_header_size(seg):
    """The segment header's size (u16 at offset 6): 32 in format 1, 48 in 2 and 3."""
    with open(seg, "rb") as f:
        return int.from_bytes(f.read(8)[6:8], "little")


def rec_header_size(seg):
    """A record header's size in this segment (its version, u16 at offset 4):
    40 in format 1, 56 in 2, 64 in 3."""
    with open(seg, "rb") as f:
        version = int.from_bytes(f.read(6)[4:6], "little")
    return {1: 40, 2: 56, 3: 64}[version]


def first_record(seg):
    """The bytes of the first record of a segment (the segment header, then
    records whose header has the body length as the u32 at offset 4)."""
    with open(seg, "rb") as f:
        data = f.read()
    hs, rh = seg_header_size(seg), rec_header_size(seg)
    length = int.from_bytes(data[hs + 4:hs + 8], "little")
    return data[hs:hs + rh + length]


def torn_body(seg):
    rec, rh = first_record(seg), rec_header_size(seg)
    return rec[:rh + (len(rec) - rh) // 2]


def stored_ids(cli):
    return collections.Counter(r["payload"]["id"] for r in cli.log_cat("acme"))


@suite.case("torn tail of w0 (torn header, torn body, garbage) is cut on start and logged")
def _():
    data, cli, tok, org_id = fresh("torn")
    want = set()
    garbage = random.Random(SEED).randbytes(777)
    for n, (kind, make) in enumerate((("torn record header", lambda seg: first_record(seg)[:23]),
                                      ("torn record body", torn_body),
                                      ("garbage", lambda seg: garbage))):
        d = Daemon(SLUICED, data, name="torn%d" % n).start()
        wait_token_live(d.http, tok)
        want |= post_each(d.http, tok, "t%d" % n, 30)
        check_eq(d.terminate(10), 0, "exit status of SIGTERM")
        seg = newest_segment(data, org_id)
        size = os.path.getsize(seg)
        tail = make(seg)
        with open(seg, "ab") as f:
            f.write(tail)

        d = Daemon(SLUICED, data, name="torn%da" % n).start()
        err = d.stderr()
        cut = "cut %d bytes after offset %d" % (len(tail), size)
        check("sluiced: recovery:" in err and seg in err and cut in err,
              "%s: stderr does not name the cut (%r) of %s: %r" % (kind, cut, seg, err[-600:]))
        check_eq(os.path.getsize(seg), size, "%s: segment size after recovery" % kind)
        got = stored_ids(cli)
        check_eq(sorted(x for x in got if got[x] != 1), [], "%s: duplicates" % kind)
        check_eq(set(got), want, "%s: readings after recovery" % kind)
        want |= post_each(d.http, tok, "t%da" % n, 5)
        check_eq(d.terminate(10), 0, "exit status of SIGTERM")
        check_eq(set(stored_ids(cli)), want, "%s: readings after new POSTs" % kind)
        log_verify(cli)


@suite.case("retention by bytes through the daemon: old sealed segments go, the newest data stays")
def _():
    data, cli, tok, org_id = fresh("retain")
    d = Daemon(SLUICED, data, ["--threads", "1", "--segment-bytes", "4KiB",
                               "--retention-bytes", "16KiB"], name="retain").start()
    wait_token_live(d.http, tok)
    sent = set()
    for i in range(200):  # ~35 KiB of records: 8+ segments of 4 KiB
        r = post(d.http, tok, json.dumps({"id": "r.%d" % i, "pad": "x" * 120}))
        check_eq(r.status, 202, "POST r.%d" % i)
        sent.add("r.%d" % i)
    wdir = os.path.join(data, "logs", org_id, "w0")
    deadline = time.monotonic() + 12  # retention runs every 5 s
    total = None
    while time.monotonic() < deadline:
        total = sum(os.path.getsize(f) for f in glob.glob(os.path.join(wdir, "*.seg")))
        if total <= 16 * 1024:
            break
        time.sleep(0.25)
    check(total is not None and total <= 16 * 1024,
          "segments still hold %s bytes > 16 KiB after 12 s" % total)
    check("sluiced: retention: deleted" in d.stderr(), "no retention line on stderr")
    got = stored_ids(cli)
    check("r.199" in got, "the newest reading is gone")
    check(set(got) < sent and len(got) < len(sent), "nothing was deleted from the log")
    kept = sorted(int(x.split(".")[1]) for x in got)
    check_eq(kept, list(range(kept[0], 200)), "retention left a hole (kept ids)")
    log_verify(cli)
    check_eq(d.terminate(10), 0, "exit status of SIGTERM")


@suite.case("damage in the middle of a segment: kept on start, writing goes on, verify exits 1")
def _():
    data, cli, tok, org_id = fresh("middle")
    d = Daemon(SLUICED, data, ["--threads", "1"], name="middle").start()
    wait_token_live(d.http, tok)
    post_each(d.http, tok, "m", 20)  # 20 batches of one reading each
    check_eq(d.terminate(10), 0, "exit status of SIGTERM")
    seg = newest_segment(data, org_id)
    at = seg_header_size(seg) + rec_header_size(seg) + 3
    with open(seg, "r+b") as f:
        f.seek(at)  # the first record's body: acknowledged, synced data
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x20]))
    size = os.path.getsize(seg)
    d = Daemon(SLUICED, data, ["--threads", "1"], name="middle2").start()
    err = d.stderr()
    check("corrupt record" in err and "left untouched" in err,
          "stderr does not report the damage: %r" % err[-600:])
    check_eq(os.path.getsize(seg), size, "the damaged segment was truncated")
    post_each(d.http, tok, "m2", 3)
    check_eq(d.terminate(10), 0, "exit status of SIGTERM")
    # log cat reports the damaged record (exit 1) and still prints the rest
    rc, out, err = cli.run("log", "cat", "--org", "acme")
    check_eq(rc, 1, "log cat exit status over a damaged record")
    check(seg in err, "log cat does not name the damaged file: %r" % err[-300:])
    got = {json.loads(line)["payload"]["id"] for line in out.splitlines()}
    check({"m2.0", "m2.1", "m2.2"} <= got, "readings after the damage are missing")
    check("m.19" in got, "readings after the damaged one, in the same segment, are missing")
    rc, out, err = cli.run("log", "verify")
    check_eq(rc, 1, "log verify exit status with a damaged record (stderr %r)" % err[-300:])
    check(seg in err, "log verify does not name the damaged file: %r" % err[-300:])


if __name__ == "__main__":
    suite.run()
