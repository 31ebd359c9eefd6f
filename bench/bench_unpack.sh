#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Layer unpack speed, berth vs containerd, side by side on this machine.
#
# Builds one OCI image with umoci from copies of /usr/share and /usr/lib
# (>= 1 GiB unpacked, >= 30,000 files, 3 gzip layers), then times:
#   berth:      berth-apply-test chain (prepare, apply, commit per layer into
#               overlay snapshots; no fsync, like containerd's defaults)
#   containerd: a private containerd 1.6; the image is imported with
#               --no-unpack (untimed), then `ctr images mount` is timed: it
#               unpacks every layer into overlayfs snapshots and mounts.
# Each side runs RUNS times on a fresh root with caches dropped first; prints
# medians, MB/s of uncompressed data and the ratio.
#
# Usage: bench/bench_unpack.sh [BUILD_DIR]   (root; env RUNS=3, SIZE_MB=1200,
#        KEEP=1 keeps the work dir, WORK=/path reuses an image built before)
set -euo pipefail
BUILD=${1:-$(cd "$(dirname "$0")/.." && pwd)/build}
TOOL=$BUILD/bin/berth-apply-test
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-1200}
[ "$(id -u)" = 0 ] || { echo "bench_unpack: needs root" >&2; exit 77; }
[ -x "$TOOL" ] || { echo "bench_unpack: build berth-apply-test first ($TOOL)" >&2; exit 1; }
for t in umoci ctr containerd jq python3; do
    command -v $t >/dev/null || { echo "bench_unpack: $t missing (scripts/install-deps.sh)" >&2; exit 77; }
done

W=${WORK:-$(mktemp -d /var/tmp/berth-bench-unpack-XXXXXX)}
CTD_PID=""
cleanup() {
    [ -n "$CTD_PID" ] && kill "$CTD_PID" 2>/dev/null && wait "$CTD_PID" 2>/dev/null
    umount "$W/mnt" 2>/dev/null || true
    grep -o " $W[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    [ -n "${KEEP:-}" ] || [ -n "${WORK:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ---- the image -----------------------------------------------------------------------
if [ ! -f "$W/img/index.json" ]; then
    echo "building a ${SIZE_MB} MiB image with umoci in $W ..."
    cd "$W"
    umoci init --layout img >/dev/null
    umoci new --image img:bench >/dev/null
    per=$((SIZE_MB / 3))
    for part in 1 2 3; do
        umoci unpack --image img:bench b$part >/dev/null
        # Fill b$part/rootfs/part$part with ~per MiB of real files.
        python3 - "$W/b$part/rootfs/part$part" "$per" "$part" <<'PY'
import os, shutil, sys
dst, limit, part = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
srcs = ["/usr/share", "/usr/lib", "/usr/include"]
total = files = 0
skip = (part - 1) * 7  # different files in each layer
n = 0
for src in srcs:
    for d, dirs, fs in os.walk(src):
        for f in fs:
            n += 1
            if n % 3 != part % 3:
                continue
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = os.path.relpath(p, "/")
            q = os.path.join(dst, rel)
            os.makedirs(os.path.dirname(q), exist_ok=True)
            try:
                if os.path.islink(p):
                    os.symlink(os.readlink(p), q)
                elif os.path.isfile(p):
                    shutil.copy2(p, q)
                    total += st.st_size
                else:
                    continue
            except OSError:
                continue
            files += 1
            if total >= limit:
                print(files, total)
                sys.exit(0)
print(files, total)
PY
        umoci repack --image img:bench b$part >/dev/null
        rm -rf "b$part"
    done
    cd - >/dev/null
fi
manifest=$(jq -r '.manifests[0].digest' "$W/img/index.json" | cut -d: -f2)
blobs=()
for l in $(jq -r '.layers[].digest' "$W/img/blobs/sha256/$manifest" | cut -d: -f2); do
    blobs+=("$W/img/blobs/sha256/$l")
done
usize=0
files=0
for b in "${blobs[@]}"; do
    usize=$((usize + $(gzip -dc "$b" | wc -c)))
    files=$((files + $(gzip -dc "$b" | tar -t | wc -l)))
done
csize=$(du -cb "${blobs[@]}" | tail -1 | cut -f1)
echo "image: ${#blobs[@]} gzip layers, $((csize >> 20)) MiB compressed, $((usize >> 20)) MiB uncompressed, $files entries"

# ---- berth ---------------------------------------------------------------------------
ours=()
for i in $(seq 1 "$RUNS"); do
    rm -rf "$W/berth-store"
    drop_caches
    t0=$(now)
    "$TOOL" chain --no-sync "$W/berth-store" "${blobs[@]}" >/dev/null
    t1=$(now)
    ours+=("$(echo "$t1 - $t0" | bc)")
    echo "berth run $i: ${ours[-1]} s"
done
rm -rf "$W/berth-store"

# ---- containerd -------------------------------------------------------------------------
(cd "$W/img" && tar -cf "$W/img.tar" .)
theirs=()
for i in $(seq 1 "$RUNS"); do
    C=$W/ctd
    rm -rf "$C"
    mkdir -p "$C" "$W/mnt"
    cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$C/sock"
EOF
    containerd --config "$C/config.toml" >"$C/log" 2>&1 &
    CTD_PID=$!
    for _ in $(seq 100); do ctr -a "$C/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    ctr -a "$C/sock" -n bench images import --no-unpack --base-name bench/img "$W/img.tar" >/dev/null
    ref=$(ctr -a "$C/sock" -n bench images ls -q | head -1)
    drop_caches
    t0=$(now)
    ctr -a "$C/sock" -n bench images mount --snapshotter overlayfs "$ref" "$W/mnt" >/dev/null
    t1=$(now)
    theirs+=("$(echo "$t1 - $t0" | bc)")
    echo "containerd run $i: ${theirs[-1]} s"
    ctr -a "$C/sock" -n bench images unmount "$W/mnt" >/dev/null 2>&1 || umount "$W/mnt" || true
    kill "$CTD_PID"
    wait "$CTD_PID" 2>/dev/null || true
    CTD_PID=""
    grep -o " $C[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$C"
done

m_ours=$(printf '%s\n' "${ours[@]}" | median)
m_theirs=$(printf '%s\n' "${theirs[@]}" | median)
mb=$((usize / 1000000))
printf 'median berth:      %6.2f s  %6.0f MB/s\n' "$m_ours" "$(echo "$mb / $m_ours" | bc -l)"
printf 'median containerd: %6.2f s  %6.0f MB/s\n' "$m_theirs" "$(echo "$mb / $m_theirs" | bc -l)"
printf 'speedup (containerd time / berth time): %.2fx (target >= 1.5x)\n' \
    "$(echo "$m_theirs / $m_ours" | bc -l)"
