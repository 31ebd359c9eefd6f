#!/bin/sh
# Runs every libFuzzer target in BUILD/fuzz for SECONDS each, starting from the
# committed seed corpus tests/fuzz/corpus/<name without fuzz_>/ (new inputs go
# to a scratch dir so the committed corpus only changes by hand).
set -eu
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-60}
SRC=$(cd "$(dirname "$0")/.." && pwd)
status=0
for f in "$BUILD"/fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f" | sed 's/^fuzz_//')
    seeds="$SRC/tests/fuzz/corpus/$name"
    work="$SRC/tests/fuzz/corpus-run/$name"
    mkdir -p "$work" "$seeds"
    echo "== fuzz $name for ${SECONDS_EACH}s"
    if ! "$f" -max_total_time="$SECONDS_EACH" -artifact_prefix="$work/" "$work" "$seeds"; then
        echo "fuzz $name: crash found; the input is in $work" >&2
        status=1
    fi
done
exit $status
