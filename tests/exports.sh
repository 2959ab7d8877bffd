#!/bin/sh
# exports.sh ARCHIVE INCLUDE_DIR PKG_MODULES LINK_FLAGS CC...
#
# The installed libsluice.a as an embedding program sees it: it must define no
# global symbol outside sluice_* (ours would collide with the host's log_*,
# http_*, conn_* ...), and a program using include/sluice.h alone must link
# against it plus its pkg-config dependencies and run.
set -eu
archive=$1 incdir=$2 modules=$3 ldflags=$4
shift 4
fail=0

stray=$(nm -g --defined-only "$archive" | awk 'NF == 3 && $3 !~ /^sluice_/ { print $2, $3 }')
if [ -n "$stray" ]; then
    echo "FAIL: $archive defines global symbols outside sluice_*:"
    echo "$stray" | sed 's/^/    /' | head -40
    fail=1
fi
public=$(nm -g --defined-only "$archive" | awk 'NF == 3 && $3 ~ /^sluice_/' | wc -l)
if [ "$public" -eq 0 ]; then
    echo "FAIL: $archive defines no sluice_* symbol at all"
    fail=1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/embed.c" <<'C'
#include <stdio.h>
#include <string.h>

#include <sluice.h>

int main(void)
{
    sluice_config cfg;
    char err[256];
    sluice_config_init(&cfg);
    if (strcmp(cfg.data_dir, "./data") || cfg.fsync != SLUICE_FSYNC_BATCH) {
        fprintf(stderr, "embed: unexpected defaults: data_dir %s\n", cfg.data_dir);
        return 1;
    }
    if (sluice_config_set(&cfg, "threads", "3", err, sizeof err) || cfg.threads != 3) {
        fprintf(stderr, "embed: sluice_config_set threads: %s\n", err);
        return 1;
    }
    printf("embed: %s\n", sluice_strerror(SLUICE_EINVAL));
    return 0;
}
C
# shellcheck disable=SC2086 # the flag lists are word lists
if ! "$@" -I"$incdir" -o "$work/embed" "$work/embed.c" "$archive" $ldflags \
        $(pkg-config --libs $modules) -pthread; then
    echo "FAIL: a program using only sluice.h does not link against $archive"
    fail=1
elif ! "$work/embed"; then
    echo "FAIL: the embedding program linked against $archive did not run"
    fail=1
fi
[ "$fail" -eq 0 ] && echo "ok: $public sluice_* symbols, nothing else global; embedding program links and runs"
exit "$fail"
