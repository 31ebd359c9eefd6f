#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runs every libFuzzer target in BUILD/fuzz for SECONDS each (`make fuzz`):
#   scripts/fuzz.sh [BUILD [SECONDS [TARGET...]]]
# Each target starts from its committed seed corpus tests/fuzz/corpus/<name>/
# plus the inputs it found in earlier runs (tests/fuzz/corpus-run/<name>/,
# git-ignored: new inputs go there, so the committed corpus only changes by
# hand). A dictionary tests/fuzz/dict/<name>.dict is used when present.
# Crash inputs land in BUILD/fuzz/artifacts/<name>-crash-* (never in a corpus
# dir, or the next run would stop on them at once); minimise one with
#   BUILD/fuzz/fuzz_<name> -minimize_crash=1 -runs=20000 FILE
# and save it as tests/fuzz/crashes/<name>-<short>.bin (replayed by
# `make test`, see tests/fuzz/CMakeLists.txt). Logs: BUILD/fuzz/logs/.
# A target that cannot run here (exit 77, e.g. apply without root) is skipped.
# Exit status: 1 if any target crashed.
set -eu
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-60}
[ $# -ge 2 ] && shift 2 || shift $#
SRC=$(cd "$(dirname "$0")/.." && pwd)
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
[ -d "$BUILD/fuzz" ] || { echo "fuzz: no $BUILD/fuzz: configure with -DBERTH_FUZZ=ON -DCMAKE_C_COMPILER=clang" >&2; exit 1; }
mkdir -p "$BUILD/fuzz/logs" "$BUILD/fuzz/artifacts"

# Sanitizer findings are crashes; UBSan's are recoverable by default.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export UBSAN_OPTIONS="$UBSAN_OPTIONS:suppressions=$SRC/tests/fuzz/ubsan.supp"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

# Per-target input size limit (bytes): tar layers and documents need room.
max_len() {
    case $1 in
    apply) echo 65536 ;;
    manifest | import | passwd | labels) echo 16384 ;;
    *) echo 4096 ;;
    esac
}

if [ $# -gt 0 ]; then
    targets=""
    for t in "$@"; do targets="$targets $BUILD/fuzz/fuzz_$t"; done
else
    targets=$(ls "$BUILD"/fuzz/fuzz_* 2>/dev/null || true)
fi
[ -n "$targets" ] || { echo "fuzz: no targets in $BUILD/fuzz (build them first)" >&2; exit 1; }

status=0
summary=""
for f in $targets; do
    [ -x "$f" ] || { echo "fuzz: $f missing" >&2; status=1; continue; }
    name=$(basename "$f" | sed 's/^fuzz_//')
    seeds="$SRC/tests/fuzz/corpus/$name"
    work="$SRC/tests/fuzz/corpus-run/$name"
    log="$BUILD/fuzz/logs/$name.log"
    art="$BUILD/fuzz/artifacts/$name-"
    mkdir -p "$work" "$seeds"
    dict=""
    [ -f "$SRC/tests/fuzz/dict/$name.dict" ] && dict="-dict=$SRC/tests/fuzz/dict/$name.dict"
    echo "== fuzz $name for ${SECONDS_EACH}s (log: $log)"
    rc=0
    # shellcheck disable=SC2086 # $dict is one word or empty
    "$f" -max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=2048 \
        -error_exitcode=1 -timeout_exitcode=1 \
        -max_len="$(max_len "$name")" -print_final_stats=1 $dict \
        -artifact_prefix="$art" "$work" "$seeds" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1 runs/p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    # 77 is what a target exits with when it cannot run here (libFuzzer's own
    # crash exit code is set to 1 above, so the two cannot be confused).
    if [ "$rc" -eq 77 ]; then
        echo "   skipped: $(tail -1 "$log")"
        summary="$summary\n$name: skipped"
    elif [ "$rc" -ne 0 ]; then
        echo "   CRASH (exit $rc): input in $art* (crash/leak/timeout/oom); see $log" >&2
        grep -m3 -E 'ERROR|check failed|ESCAPE|runtime error|disagree' "$log" >&2 || true
        summary="$summary\n$name: CRASH after ${runs:-?}"
        status=1
    else
        echo "   ok: ${runs:-?}, $cov, corpus $(ls "$work" | wc -l) found + $(ls "$seeds" | wc -l) seeds"
        summary="$summary\n$name: ok, ${runs:-?}, $cov"
    fi
done
printf "== fuzz summary:$summary\n"
exit $status
