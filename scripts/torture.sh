#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# make torture: the long fault and resource-limit suites (issue 9). Runs the
# short suite (tests/e2e/torture_short.bats) scaled up, the sandbox suites,
# the runtime's crash points (torture_runtime.bats) and
# tests/torture/torture_long.bats (random kill -9 loops, kill -9 of
# berthd during pulls, ulimit -n 64), ROUNDS times.
#
#   scripts/torture.sh [BUILD_DIR]
#   env: TORTURE_SCALE (sizes and counts of the short suite, default 5: 5,000
#        idle connections, 1,000 slow subscribers), TORTURE_ITERATIONS (kill
#        loops, default 10), TORTURE_ROUNDS (default 1)
# Needs root, bats, jq, python3-msgpack; image cases need umoci, skopeo,
# docker-registry and busybox-static (scripts/install-deps.sh).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
build=$(cd "$build" && pwd)
export BERTH_BIN=$build/bin BERTH_SRC=$src
export TORTURE_SCALE=${TORTURE_SCALE:-5}
export TORTURE_ITERATIONS=${TORTURE_ITERATIONS:-10}
rounds=${TORTURE_ROUNDS:-1}

if [[ $(id -u) != 0 ]]; then
    echo "torture: needs root (berthd supervises plugins and mounts)" >&2
    exit 77
fi
command -v bats >/dev/null || { echo "torture: bats not installed (scripts/install-deps.sh)" >&2; exit 77; }
[[ -x $BERTH_BIN/berthd ]] || { echo "torture: $BERTH_BIN/berthd not built" >&2; exit 1; }

failed=0
t0=$SECONDS
for ((r = 1; r <= rounds; r++)); do
    echo "== torture round $r/$rounds (scale $TORTURE_SCALE, iterations $TORTURE_ITERATIONS)"
    for f in "$src/tests/e2e/torture_short.bats" "$src/tests/e2e/sandbox.bats" \
        "$src/tests/e2e/torture_runtime.bats" "$src/tests/e2e/sandbox_runtime.bats" \
        "$src/tests/torture/torture_long.bats"; do
        echo "-- $f"
        bats --tap "$f" </dev/null || failed=1
    done
done
echo "== torture done in $((SECONDS - t0)) s: $([[ $failed == 0 ]] && echo passed || echo FAILED)"
exit "$failed"
