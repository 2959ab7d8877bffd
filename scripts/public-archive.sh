#!/bin/sh
# public-archive.sh OUT.a INTERNAL.a OBJCOPY AR CC...
#
# Builds the installed libsluice.a from the internal archive: every object is
# linked into one relocatable object (so calls between modules resolve inside
# it), then the symbols compiled hidden (everything not marked SLUICE_API in
# include/sluice.h: the build uses -fvisibility=hidden) become local. An
# embedding program then sees only sluice_* and cannot collide with log_*,
# http_*, conn_* ... of ours.
set -eu
out=$1 internal=$2 objcopy=$3 ar=$4
shift 4
obj=${out%.a}.o
rm -f "$out" "$obj"
"$@" -r -nostdlib -o "$obj" -Wl,--whole-archive "$internal" -Wl,--no-whole-archive
"$objcopy" --localize-hidden "$obj"
"$ar" rcs "$out" "$obj"
rm -f "$obj"
