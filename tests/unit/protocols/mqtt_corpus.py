#!/usr/bin/env python3
"""Decodes Mosquitto's broker test corpus ($SLUICE_CORPORA/mqtt-mosquitto/*.json)
for tests/unit/protocols/mqtt_corpus_test.c and the MQTT fuzzer's seeds.

  mqtt_corpus.py DIR            one test per record on stdout, tab-separated lines:
                                  T ver connect expect_disconnect file group name
                                  S hex   (bytes the client sends)
                                  R hex   (bytes the broker is expected to answer)
  mqtt_corpus.py DIR --seeds OUT  one fuzzer input per send payload: a version
                                  selector byte (0: before CONNECT, 4, 5) + bytes

Payload notation (../shared/corpora/README.md): hex, 'text', iN (1 byte), HN kN
mN sN (2 bytes big-endian), LN (4 bytes), rN vN (variable byte integer, with
no upper bound so that deliberately oversized values are encoded as written).
"""
import glob
import json
import os
import re
import sys

TOKEN = re.compile(r"'[^']*'|\S+")


def vbi(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode(payload):
    out = bytearray()
    for tok in TOKEN.findall(payload):
        if tok.startswith("'"):
            out += tok[1:-1].encode("utf-8")
        elif tok[0] == "i":
            out.append(int(tok[1:]) & 0xFF)
        elif tok[0] in "Hkms":
            out += (int(tok[1:]) & 0xFFFF).to_bytes(2, "big")
        elif tok[0] == "L":
            out += (int(tok[1:]) & 0xFFFFFFFF).to_bytes(4, "big")
        elif tok[0] in "rv":
            out += vbi(int(tok[1:]))
        else:
            out += bytes.fromhex(tok)
    return bytes(out)


def clean(s):
    return " ".join(str(s).split())


def tests(folder):
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            groups = json.load(f)
        for g in groups:
            for t in g.get("tests", []):
                ver = t.get("ver", g.get("ver", 4))
                connect = t.get("connect", g.get("connect", True))
                yield (os.path.basename(path), g, t, 4 if ver == 3 else ver, connect)


def main():
    folder = sys.argv[1]
    if len(sys.argv) > 3 and sys.argv[2] == "--seeds":
        out = sys.argv[3]
        os.makedirs(out, exist_ok=True)
        k = 0
        for _, _, t, ver, connect in tests(folder):
            sel = ver if connect else 0
            for m in t.get("msgs", []):
                if m.get("type") == "send":
                    with open(os.path.join(out, "mosq-%04d" % k), "wb") as f:
                        f.write(bytes([sel]) + decode(m["payload"]))
                    k += 1
        print("%d seeds in %s" % (k, out))
        return
    w = sys.stdout.write
    for fname, g, t, ver, connect in tests(folder):
        w("T\t%d\t%d\t%d\t%s\t%s\t%s\n" % (ver, 1 if connect else 0,
                                           1 if t.get("expect_disconnect", True) else 0,
                                           fname, clean(g.get("group", "")), clean(t["name"])))
        for m in t.get("msgs", []):
            if m.get("type") in ("send", "recv"):
                w("%s\t%s\n" % ("S" if m["type"] == "send" else "R",
                                decode(m["payload"]).hex()))


if __name__ == "__main__":
    main()
