#!/bin/sh
# client_standalone.sh SOURCE_ROOT CC...
#
# The device client's promise (include/sluice.h): client/frame_client.c,
# client/sha256.c and protocols/frame.c build alone, as plain C11 with POSIX,
# and need nothing beyond libc. Builds examples/frame_send.c from those files
# only, outside meson's flags, checks that the program asks for no library but
# libc, and runs it once (bad usage: it must say so and exit 2).
set -eu
src=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0

if ! "$@" -std=c11 -pedantic -Wall -Wextra -Werror -Os -I"$src/include" -I"$src" \
        -o "$work/frame-send" "$src/examples/frame_send.c" "$src/client/frame_client.c" \
        "$src/client/sha256.c" "$src/protocols/frame.c" 2> "$work/cc.err"; then
    echo "FAIL: the client does not build alone as C11:"
    sed 's/^/    /' "$work/cc.err" | head -30
    exit 1
fi
extra=$(readelf -d "$work/frame-send" | awk '/NEEDED/ { print $NF }' | tr -d '[]' |
        grep -v -E '^(libc\.so|ld-linux|libc\.musl)' || true)
if [ -n "$extra" ]; then
    echo "FAIL: the standalone client needs more than libc: $extra"
    fail=1
fi
rc=0
"$work/frame-send" --udp > /dev/null 2>&1 || rc=$?
if [ "$rc" -ne 2 ]; then
    echo "FAIL: the standalone sluice-frame-send --udp without --host ... exited $rc, not 2 (usage)"
    fail=1
fi
[ "$fail" -eq 0 ] && echo "ok: the client builds as C11 from its own files and needs libc only"
exit "$fail"
