#!/usr/bin/env python3
"""Defect D8, forged records on recovery, through the real daemon.

Device A posts a reading whose payload embeds well-formed records claiming
device B: one laid out exactly as the format-1 writer laid out a valid record
(unkeyed XXH3-64), one in format 2 and one in format 3 checksummed with a
guessed seed of 0 (the unseeded hash; the format-3 one also claims everything
before it durable, what would make recovery keep the file). Readings follow. With the daemon stopped, the header of the
record carrying that payload is damaged, so recovery and readers resync past
it — through the payload. After a restart neither `sluice log cat` nor
`sluice log verify` may take the embedded bytes for a record: no reading of
device B appears, verify resumes only at a real record, and the acknowledged
readings after the damage are all still there (mid-file damage is kept, not
truncated).

The payload goes as application/octet-stream (docs/http-api.md): a record
header cannot sit inside a JSON string, its version byte (1, 2 or 3) is a
control character. XXH3-64 comes from the system libxxhash through ctypes.
Exits 77 when $SLUICED / $SLUICE_CLI, curl or libxxhash are missing.
"""
import ctypes
import ctypes.util
import glob
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicetest import (  # noqa: E402
    Cli, Daemon, Suite, binaries, check, check_eq, post, tmpdir, wait_token_live)

SLUICED, SLUICE_CLI = binaries()


def load_xxh3():
    for name in (ctypes.util.find_library("xxhash"), "libxxhash.so.0"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            f = lib.XXH3_64bits
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_uint64
        f.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
        return lambda b: f(b, len(b))
    print("# skip: libxxhash (XXH3_64bits) not found")
    sys.exit(77)


XXH3 = load_xxh3()
suite = Suite(limit=80)

F_BATCH_START = 0x04
PROTO_HTTP, CTYPE_JSON = 1, 1


def forged_v1(device, seq, recv_ns, payload):
    """A record as the format-1 writer built it: 40-byte header, XXH3-64 of
    header[0,32) and the body."""
    head = struct.pack("<HBBIIBBHQQ", 0x5253, 1, F_BATCH_START, len(payload), device, PROTO_HTTP,
                       CTYPE_JSON, 0, recv_ns, seq)
    return head + struct.pack("<Q", XXH3(head + payload)) + payload


def forged_v2_seed0(device, seq, recv_ns, payload):
    """A format-2 record with a guessed seed of 0: XXH3 seeded 0 is the
    unseeded hash of header[0,48) and the body."""
    head = struct.pack("<HBBIIBBHQQQQ", 0x5253, 2, F_BATCH_START, len(payload), device,
                       PROTO_HTTP, CTYPE_JSON, 0, recv_ns, seq, 0, 0)
    return head + struct.pack("<Q", XXH3(head + payload)) + payload


def forged_v3_seed0(device, seq, recv_ns, payload):
    """A format-3 record with a guessed seed of 0, its durable_seq claiming
    every earlier record durable: XXH3 of header[0,56) and the body."""
    head = struct.pack("<HBBIIBBHQQQQQ", 0x5253, 3, F_BATCH_START, len(payload), device,
                       PROTO_HTTP, CTYPE_JSON, 0, recv_ns, seq, 0, 0, seq)
    return head + struct.pack("<Q", XXH3(head + payload)) + payload


# record header bytes by segment version
REC_HEADER = {1: 40, 2: 56, 3: 64}


def records(seg):
    """(offset, header size, seq, device, body) of each record of a segment
    file, in order, as far as they parse (any format)."""
    with open(seg, "rb") as f:
        data = f.read()
    version, hsize = struct.unpack_from("<HH", data, 4)
    rh = REC_HEADER[version]
    out, off = [], hsize
    while off + rh <= len(data):
        magic, _, _, length, device = struct.unpack_from("<HBBII", data, off)
        if magic != 0x5253 or off + rh + length > len(data):
            break
        seq = struct.unpack_from("<Q", data, off + 24)[0]
        out.append((off, rh, seq, device, data[off + rh:off + rh + length]))
        off += rh + length
    return out


def device_ids(cli):
    """{name: id} from `sluice device list --org acme`."""
    ids = {}
    for line in cli.must("device", "list", "--org", "acme").splitlines()[1:]:
        cols = line.split()
        ids[cols[1]] = int(cols[0])
    return ids


def post_json(port, tok, ident):
    r = post(port, tok, json.dumps({"id": ident}))
    check_eq(r.status, 202, "POST %s" % ident)


@suite.case("D8: records embedded in a payload are not adopted after damage before them")
def _():
    base = tmpdir("forged")
    data = os.path.join(base, "data")
    os.makedirs(data)
    cli = Cli(SLUICE_CLI, data)
    org_id = cli.add_org("acme")
    tok_a = cli.add_device("acme", "dev-a")
    cli.add_device("acme", "dev-b")
    dev_b = device_ids(cli)["dev-b"]

    d = Daemon(SLUICED, data, ["--threads", "1"], name="forged").start()
    wait_token_live(d.http, tok_a)
    for i in range(3):
        post_json(d.http, tok_a, "a.%d" % i)
    # The carrier is seq 3 (one worker, one record per request): the forgeries
    # claim the next seq, as a real batch after it would carry.
    now = time.time_ns()
    fake = json.dumps({"id": "forged", "by": "dev-b"}).encode()
    marker = b"CARRIER-" + os.urandom(8).hex().encode()
    body = (marker + b"|" + forged_v1(dev_b, 4, now, fake) + b"|" +
            forged_v2_seed0(dev_b, 4, now, fake) + b"|" +
            forged_v3_seed0(dev_b, 4, now, fake) + b"|")
    r = post(d.http, tok_a, body, ctype="application/octet-stream")
    check_eq(r.status, 202, "POST of the carrier reading")
    for i in range(3, 6):
        post_json(d.http, tok_a, "a.%d" % i)
    check_eq(d.terminate(10), 0, "exit status of SIGTERM")

    segs = sorted(glob.glob(os.path.join(data, "logs", org_id, "w0", "*.seg")))
    check(len(segs) >= 1, "no segment written")
    seg = segs[-1]
    recs = records(seg)
    carrier = [r for r in recs if r[4].startswith(marker)]
    check_eq(len(carrier), 1, "records carrying the payload")
    off, rh, seq, device, _ = carrier[0]
    check(device != dev_b, "the carrier is device A's reading")
    starts = {r[0] for r in recs}
    # Damage the carrier's header checksum: the record no longer verifies and
    # every reader looks for the next batch start from inside its payload.
    with open(seg, "r+b") as f:
        f.seek(off + rh - 8)
        f.write(b"\xde\xad\xbe\xef")
    size = os.path.getsize(seg)

    d = Daemon(SLUICED, data, ["--threads", "1"], name="forged2").start()
    err = d.stderr()
    check("corrupt record" in err and "left untouched" in err,
          "recovery does not report mid-file damage: %r" % err[-600:])
    check_eq(os.path.getsize(seg), size, "size of the damaged segment after recovery")
    post_json(d.http, tok_a, "after-restart")
    check_eq(d.terminate(10), 0, "exit status of SIGTERM")

    rc, out, err = cli.run("log", "cat", "--org", "acme")
    rows = [json.loads(line) for line in out.splitlines()]
    devs = [r["device"] for r in rows]
    check("dev-b" not in devs,
          "log cat shows a record of dev-b, which never posted: %r" %
          [r for r in rows if r["device"] == "dev-b"])
    ids = {r["payload"]["id"] for r in rows if isinstance(r.get("payload"), dict)}
    want = {"a.%d" % i for i in range(6)} | {"after-restart"}
    check(want <= ids, "acknowledged readings missing after recovery: %r" % sorted(want - ids))
    check_eq(rc, 1, "log cat exit status over a damaged record (stderr %r)" % err[-300:])

    rc, out, err = cli.run("log", "verify")
    check_eq(rc, 1, "log verify exit status with a damaged record (stderr %r)" % err[-300:])
    resumed = [int(line.split("resume at offset ")[1].split()[0]) for line in err.splitlines()
               if seg in line and "resume at offset" in line]
    check(resumed, "log verify does not report where records resume: %r" % err[-400:])
    for at in resumed:
        check(at in starts and at > off,
              "log verify resumes at offset %d, inside the carrier's payload (record starts %r)"
              % (at, sorted(starts)))


if __name__ == "__main__":
    suite.run()
