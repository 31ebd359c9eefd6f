#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Pull + unpack benchmark, berth vs containerd 1.6 (`ctr image pull
# --plain-http`), from a private docker-registry on loopback:
#   - busybox: a 1-layer busybox-static image
#   - big: 5 gzip layers, ≥ 1 GiB unpacked, ≥ 30,000 files
# Each side gets a fresh root for every run (cold pull); medians of RUNS runs
# (default 3) and the berth/containerd ratio are printed, then the time of a
# second pull of an image already present.
#
#   BERTH_BIN=build/bin bench/bench_pull.sh            (needs root)
#   env: RUNS=3  BIG_LAYER_FILES=6200  BIG_LAYER_MB=215  BENCH_CACHE=/var/tmp/berth-bench-images
#        DROP_CACHES=1 (drop the page cache before each run: cold binaries too)
#        BENCH_PLUGINS='{"gc": {"enabled": false}}' (plugins JSON for berth_start_daemon)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
export BERTH_BIN=${BERTH_BIN:-$SRC/build/bin}
RUNS=${RUNS:-3}
BIG_LAYER_FILES=${BIG_LAYER_FILES:-6200}
BIG_LAYER_MB=${BIG_LAYER_MB:-215}
CACHE=${BENCH_CACHE:-/var/tmp/berth-bench-images}

[[ $(id -u) == 0 ]] || { echo "bench_pull: needs root" >&2; exit 77; }
for t in containerd ctr umoci skopeo docker-registry python3 jq; do
    command -v $t >/dev/null || { echo "bench_pull: $t not installed (scripts/install-deps.sh)" >&2; exit 77; }
done

# shellcheck source=../tests/e2e/lib/registry.bash
source "$SRC/tests/e2e/lib/registry.bash"
# shellcheck source=../tests/e2e/lib/daemon.bash
source "$SRC/tests/e2e/lib/daemon.bash"

W=$(mktemp -d /tmp/berth-bench-pull.XXXXXX)
CTRD_PID=
cleanup() {
    [[ -n ${BERTH_PID:-} ]] && berth_stop_daemon >/dev/null 2>&1 || true
    stop_containerd
    registry_stop
    rm -rf "$W"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# ---- fixtures ---------------------------------------------------------------

build_big() {
    local dir=$1 b i
    b=$(mktemp -d /tmp/berth-bench-build.XXXXXX)
    umoci init --layout "$dir" >/dev/null
    umoci new --image "$dir:t" >/dev/null
    for ((i = 1; i <= 5; i++)); do
        rm -rf "$b/bundle"
        umoci unpack --rootless --image "$dir:t" "$b/bundle" >/dev/null
        if ((i == 1)); then
            mkdir -p "$b/bundle/rootfs/bin"
            cp /bin/busybox "$b/bundle/rootfs/bin/busybox"
            ln -s busybox "$b/bundle/rootfs/bin/sh"
        fi
        # Compressible, varied files (text-like), like a distribution layer.
        python3 - "$b/bundle/rootfs/data/l$i" "$BIG_LAYER_FILES" "$BIG_LAYER_MB" "$i" <<'PY'
import os, random, sys
root, n, mb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(seed)
words = [("%x" % random.getrandbits(40)) for _ in range(4096)]
total = mb << 20
per = total // n
for k in range(n):
    d = os.path.join(root, "d%03d" % (k % 200))
    os.makedirs(d, exist_ok=True)
    size = max(64, int(random.expovariate(1 / per)))
    parts, got = [], 0
    while got < size:
        w = random.choice(words) + (" " if random.random() < 0.9 else "\n")
        parts.append(w)
        got += len(w)
    with open(os.path.join(d, "f%05d.txt" % k), "w") as f:
        f.write("".join(parts)[:size])
PY
        umoci repack --image "$dir:t" "$b/bundle" >/dev/null
    done
    umoci config --image "$dir:t" --config.cmd /bin/sh --os linux --architecture amd64 >/dev/null
    rm -rf "$b"
}

mkdir -p "$CACHE"
if [[ ! -f $CACHE/busybox/index.json ]]; then
    echo "building busybox fixture..." >&2
    rm -rf "$CACHE/busybox"
    registry_build_image "$CACHE/busybox" 1
fi
if [[ ! -f $CACHE/big/index.json ]]; then
    echo "building big fixture (5 layers, ~$((BIG_LAYER_MB * 5)) MiB, $((BIG_LAYER_FILES * 5)) files; takes a few minutes)..." >&2
    rm -rf "$CACHE/big"
    build_big "$CACHE/big"
fi

registry_start
registry_push "$CACHE/busybox" bench/busybox:1
registry_push "$CACHE/big" bench/big:1

# ---- sides ------------------------------------------------------------------

start_containerd() {
    local c=$W/ctrd
    rm -rf "$c"
    mkdir -p "$c"
    cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/c.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
EOF
    containerd --config "$c/config.toml" >"$c/log" 2>&1 &
    CTRD_PID=$!
    for _ in $(seq 100); do ctr -a "$c/c.sock" version >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "containerd did not start" >&2
    return 1
}

stop_containerd() {
    if [[ -n ${CTRD_PID:-} ]]; then
        kill "$CTRD_PID" 2>/dev/null || true
        wait "$CTRD_PID" 2>/dev/null || true
        CTRD_PID=
        awk -v d="$W/ctrd" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$W/ctrd"
    fi
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

time_berth() { # image → ms of a cold pull (fresh root)
    berth_start_daemon "${BENCH_PLUGINS:-{\}}" >/dev/null
    local t0 t1
    t0=$(now_ms)
    berth images pull --plain-http "$REG/$1" >/dev/null 2>&1
    t1=$(now_ms)
    if [[ ${2:-} == second ]]; then
        t0=$(now_ms)
        berth images pull --plain-http "$REG/$1" >/dev/null 2>&1
        t1=$(now_ms)
    fi
    berth_stop_daemon >/dev/null 2>&1
    echo $((t1 - t0))
}

time_ctr() {
    start_containerd
    local t0 t1 c=$W/ctrd/c.sock
    t0=$(now_ms)
    ctr -a "$c" image pull --plain-http "$REG/$1" >/dev/null
    t1=$(now_ms)
    if [[ ${2:-} == second ]]; then
        t0=$(now_ms)
        ctr -a "$c" image pull --plain-http "$REG/$1" >/dev/null
        t1=$(now_ms)
    fi
    stop_containerd
    echo $((t1 - t0))
}

printf "%-10s %12s %14s %8s\n" IMAGE "berth (ms)" "containerd (ms)" ratio
for img in busybox big; do
    b=() c=()
    for ((r = 0; r < RUNS; r++)); do
        if [[ ${DROP_CACHES:-0} == 1 ]]; then
            sync
            echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
        fi
        b+=("$(time_berth bench/$img:1)")
        c+=("$(time_ctr bench/$img:1)")
    done
    mb=$(printf "%s\n" "${b[@]}" | median)
    mc=$(printf "%s\n" "${c[@]}" | median)
    printf "%-10s %12s %14s %8s   (runs: berth %s; containerd %s)\n" "$img" "$mb" "$mc" \
        "$(awk -v a="$mb" -v b="$mc" 'BEGIN {printf "%.2f", b ? a / b : 0}')" "${b[*]}" "${c[*]}"
done
sb=$(time_berth bench/busybox:1 second)
sc=$(time_ctr bench/busybox:1 second)
printf "%-10s %12s %14s   (second pull of busybox, image present; CLI process included)\n" \
    second "$sb" "$sc"
