#!/bin/sh
# Stands in for a test that cannot run on this machine: says why, and exits 77,
# meson's SKIP, so that a missing dependency never looks like a pass.
echo "SKIP: $*"
exit 77
