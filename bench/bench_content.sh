#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Content ingest speed, side by side: `berth content ingest` of a file into a
# private berthd, against reading the file plus hashing it (`cat f >/dev/null`
# then `sha256sum f`), and against `ctr content ingest` into a private
# containerd. Medians of RUNS runs; the page cache is warm for everyone.
#
#   bench/bench_content.sh [SIZE_MIB (1024)] [RUNS (3)]
#
# Needs root, a built tree (BERTH_BIN, default build/bin) and containerd/ctr
# (skipped with a note if absent). Goal (issue 3): berth >= 0.9x the speed of
# cat+sha256sum, and faster than ctr.
set -euo pipefail

SIZE_MIB=${1:-1024}
RUNS=${2:-3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BERTH_BIN=${BERTH_BIN:-$HERE/../build/bin}

[[ $(id -u) == 0 ]] || { echo "bench_content: needs root" >&2; exit 77; }
# shellcheck source=../tests/e2e/lib/daemon.bash
source "$HERE/../tests/e2e/lib/daemon.bash"

WORK=$(mktemp -d /var/tmp/berth-bench-content.XXXXXX)
CTRD_PID=
cleanup() {
    if [[ -n $CTRD_PID ]]; then
        kill "$CTRD_PID" 2>/dev/null || true
        wait "$CTRD_PID" 2>/dev/null || true
    fi
    berth_stop_daemon >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

now_ns() { date +%s%N; }
# Runs "$@" and prints its wall time in seconds.
timed() {
    local t0 t1
    t0=$(now_ns)
    "$@" >/dev/null
    t1=$(now_ns)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mibps() { awk -v s="$SIZE_MIB" -v t="$1" 'BEGIN { printf "%.0f", s / t }'; }

F=$WORK/blob
echo "bench_content: writing a ${SIZE_MIB} MiB random file" >&2
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$F"
DIGEST=sha256:$(sha256sum "$F" | cut -d' ' -f1)
HEX=${DIGEST#sha256:}
cat "$F" >/dev/null

# ---- baseline: read + hash -------------------------------------------------
baseline_once() { cat "$F" >/dev/null && sha256sum "$F" >/dev/null; }
base=()
for ((i = 0; i < RUNS; i++)); do base+=("$(timed baseline_once)"); done
BASE=$(median "${base[@]}")

# ---- berth -------------------------------------------------------------------
echo "bench_content: starting berthd" >&2
berth_start_daemon '{"snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
                     "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
berth_once() {
    local ref=bench-$1
    [[ $(berth content ingest "$ref" <"$F") == "$DIGEST" ]]
}
bt=()
for ((i = 0; i < RUNS; i++)); do
    # Every run stores the blob anew: drop the previous one (record and file).
    berth content rm "$DIGEST" >/dev/null 2>&1 || true
    rm -f "$BERTH_ROOT/content/blobs/sha256/$HEX"
    bt+=("$(timed berth_once "$i")")
done
BERTH_T=$(median "${bt[@]}")
berth_stop_daemon >/dev/null 2>&1

# ---- containerd --------------------------------------------------------------
CTR_T=
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
    D=$WORK/containerd
    mkdir -p "$D"
    cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$D/containerd.sock"
[ttrpc]
  address = "$D/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
EOF
    containerd --config "$D/config.toml" >"$D/log" 2>&1 &
    CTRD_PID=$!
    for ((i = 0; i < 100; i++)); do [[ -S $D/containerd.sock ]] && break; sleep 0.1; done
    CTR="ctr -a $D/containerd.sock"
    ctr_once() { $CTR content ingest "bench-$1" <"$F"; }
    ct=()
    for ((i = 0; i < RUNS; i++)); do
        $CTR content rm "$DIGEST" >/dev/null 2>&1 || true
        rm -f "$D/root/io.containerd.content.v1.content/blobs/sha256/$HEX"
        ct+=("$(timed ctr_once "$i")")
    done
    CTR_T=$(median "${ct[@]}")
    $CTR content ls | grep -q "$HEX" || { echo "bench_content: ctr did not store the blob" >&2; exit 1; }
else
    echo "bench_content: containerd/ctr not installed: skipping the containerd column" >&2
fi

# ---- report ------------------------------------------------------------------
echo
echo "content ingest of $SIZE_MIB MiB, median of $RUNS runs (s; MiB/s)"
printf '  %-32s %8s %8s   runs: %s\n' "cat f >/dev/null; sha256sum f" "$BASE" "$(mibps "$BASE")" "${base[*]}"
printf '  %-32s %8s %8s   runs: %s\n' "berth content ingest" "$BERTH_T" "$(mibps "$BERTH_T")" "${bt[*]}"
if [[ -n $CTR_T ]]; then
    printf '  %-32s %8s %8s   runs: %s\n' "ctr content ingest" "$CTR_T" "$(mibps "$CTR_T")" "${ct[*]}"
fi
echo
R1=$(ratio "$BASE" "$BERTH_T")
echo "berth speed / (cat + sha256sum) speed = ${R1}x (goal >= 0.9)"
ok=$(awk -v r="$R1" 'BEGIN { print (r >= 0.9) ? 1 : 0 }')
if [[ -n $CTR_T ]]; then
    R2=$(ratio "$CTR_T" "$BERTH_T")
    echo "berth speed / ctr speed            = ${R2}x (goal > 1)"
    ok=$(awk -v r="$R2" -v o="$ok" 'BEGIN { print (o && r > 1) ? 1 : 0 }')
fi
[[ $ok == 1 ]] && echo "PASS" || { echo "FAIL"; exit 1; }
