#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Garbage collection through the real daemon over a synthetic store:
# IMAGES images (default 1,000) whose manifests reference, with gc.ref.content
# labels, layers from a shared pool, BLOBS blobs in all (default 5,000). It
# measures what issue 7 asks for: how long a collection holds the metadata
# write lock (stats.lock_ns, target <= 50 ms) and its total time
# (stats.duration_ns, target <= 1 s), first when everything is kept, then
# after half of the images were removed (the sweep deletes their blobs).
#
# Usage: bench/bench_gc.sh [BUILD_DIR]     (default: build)
#   IMAGES=1000 BLOBS=5000 LAYERS_PER_IMAGE=5 RUNS=5 JOBS=4 bench/bench_gc.sh
# Needs root (berthd), jq, and berthd, berth, berth-content, berth-metadata,
# berth-gc and berth-rpctool built. Uses a temporary root and state; never
# touches /var/lib/berth or /run/berth.
#
# Setup: with BENCH_POPULATE set to a command that writes a metadata store
# directly (e.g. the metadata helper's bench_meta_gc in populate mode), the
# records are made without bytes; otherwise each blob is a tiny real blob
# ingested through the CLI (slower to set up, same collection cost).
set -euo pipefail

BUILD=${1:-build}
BIN=$BUILD/bin
RPC=$BUILD/tests/berth-rpctool
IMAGES=${IMAGES:-1000}
BLOBS=${BLOBS:-5000}
LAYERS_PER_IMAGE=${LAYERS_PER_IMAGE:-5}
RUNS=${RUNS:-5}
JOBS=${JOBS:-4}
LOCK_TARGET_MS=50
TOTAL_TARGET_MS=1000

die() { echo "bench_gc: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (berthd supervises plugins)"
command -v jq >/dev/null || die "jq not installed"
for b in berthd berth berth-content berth-metadata berth-gc; do
    [[ -x $BIN/$b ]] || die "$BIN/$b not built"
done
[[ -x $RPC ]] || die "$RPC not built"
(( BLOBS > IMAGES )) || die "BLOBS must exceed IMAGES (one manifest per image plus shared layers)"
NLAYERS=$(( BLOBS - IMAGES ))

W=$(mktemp -d /tmp/berth-bench-gc.XXXXXX)
ROOT=$W/root
STATE=$W/state
SOCK=$STATE/berth.sock
DPID=
cleanup() {
    if [[ -n $DPID ]]; then
        kill -TERM "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
    fi
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

# Collections only when asked, so that each measurement is one collection.
cat > "$W/config.json" <<EOF
{
  "root": "$ROOT",
  "state": "$STATE",
  "plugins": {
    "snapshot-overlay": {"enabled": false},
    "transfer": {"enabled": false},
    "runtime-runc": {"enabled": false},
    "gc": {"config": {"startup_delay": "0ms", "deletion_threshold": 100000000,
                      "mutation_threshold": 0, "max_concurrent_deletes": 8}}
  }
}
EOF

berth() { "$BIN/berth" -a "$SOCK" "$@"; }
rpc() { "$RPC" -a "$SOCK" call "$@"; }

start_daemon() {
    "$BIN/berthd" --config "$W/config.json" --log-level warn 2>>"$W/berthd.log" &
    DPID=$!
    for _ in $(seq 100); do
        [[ -S $SOCK ]] && berth version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$W/berthd.log" >&2
    die "berthd did not come up"
}

echo "# bench_gc: $IMAGES images, $BLOBS blobs ($NLAYERS shared layers, $LAYERS_PER_IMAGE per image)"
mkdir -p "$ROOT" "$STATE"

if [[ -n ${BENCH_POPULATE:-} ]]; then
    # The populate command writes <root>/metadata/meta.lmdb before start.
    t0=$(date +%s%N)
    $BENCH_POPULATE "$ROOT/metadata/meta.lmdb" "$IMAGES" "$BLOBS" "$LAYERS_PER_IMAGE"
    echo "setup: populate $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    start_daemon
else
    start_daemon
    t0=$(date +%s%N)
    mkdir -p "$W/blobs"
    # Layers: tiny unique blobs, labelled gc.root while the manifests are
    # made so that an accidental collection cannot take them.
    seq 0 $(( NLAYERS - 1 )) | xargs -P "$JOBS" -I{} sh -c \
        'printf "layer %s\n" {} | "$0" -a "$1" content ingest "layer-{}" --label berth.io/gc.root=bench >/dev/null' \
        "$BIN/berth" "$SOCK"
    mapfile -t LAYER < <(for ((i = 0; i < NLAYERS; i++)); do
        printf 'layer %s\n' "$i" | sha256sum | sed 's/ .*//; s/^/sha256:/'
    done)
    # Manifests: one per image, referencing LAYERS_PER_IMAGE consecutive
    # layers of the pool, wrapping around, so that every layer is used and
    # (when IMAGES * LAYERS_PER_IMAGE > layers) some are shared.
    for ((m = 0; m < IMAGES; m++)); do
        args=()
        for ((l = 0; l < LAYERS_PER_IMAGE; l++)); do
            idx=$(( (m * LAYERS_PER_IMAGE + l) % NLAYERS ))
            args+=(--label "berth.io/gc.ref.content.l.$l=${LAYER[$idx]}")
        done
        printf 'manifest %s\n' "$m" > "$W/blobs/m$m"
        echo "$m ${args[*]}"
    done | xargs -P "$JOBS" -L 1 sh -c \
        'b=$0 s=$1 m=$2; shift 2; "$b" -a "$s" content ingest "manifest-$m" "$@" < "'"$W"'/blobs/m$m" >/dev/null' \
        "$BIN/berth" "$SOCK"
    for ((m = 0; m < IMAGES; m++)); do
        d=sha256:$(sha256sum < "$W/blobs/m$m" | sed 's/ .*//')
        s=$(stat -c %s "$W/blobs/m$m")
        printf '{"image":{"name":"bench/img-%d:latest","target":{"media_type":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d}}}\n' \
            "$m" "$d" "$s"
    done | xargs -P "$JOBS" -d '\n' -I{} "$RPC" -a "$SOCK" call images.create '{}' >/dev/null
    # Now only the images keep the layers.
    for ((i = 0; i < NLAYERS; i++)); do echo "${LAYER[$i]}"; done |
        xargs -P "$JOBS" -I{} "$BIN/berth" -a "$SOCK" content label {} berth.io/gc.root= >/dev/null
    echo "setup: $(( ($(date +%s%N) - t0) / 1000000 )) ms through the CLI"
fi

nimg=$(rpc images.list '{}' | jq '.images | length')
ncontent=$(berth content ls -q | wc -l)
echo "store: $nimg images, $ncontent content records"
(( nimg == IMAGES )) || die "expected $IMAGES images, found $nimg"

# One collection; prints "lock_ms mark_ms total_ms content_deleted".
collect() {
    berth gc --format json | jq -r '.stats | "\(.lock_ns/1e6) \(.mark_ns/1e6) \(.duration_ns/1e6) \(.content_deleted)"'
}

median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

fail=0
report() { # name lock_ms total_ms
    local verdict=ok
    awk -v l="$2" -v t="$3" -v lt=$LOCK_TARGET_MS -v tt=$TOTAL_TARGET_MS \
        'BEGIN { exit !(l <= lt && t <= tt) }' || { verdict=OVER; fail=1; }
    printf '%-28s lock %8.2f ms (target <= %d)   total %8.2f ms (target <= %d)   %s\n' \
        "$1" "$2" $LOCK_TARGET_MS "$3" $TOTAL_TARGET_MS "$verdict"
}

(( IMAGES * LAYERS_PER_IMAGE >= NLAYERS )) ||
    echo "note: only $(( IMAGES * LAYERS_PER_IMAGE )) of $NLAYERS layers are used by an image; the rest is garbage"
collect > "$W/warm" # warm up: page cache, first-run allocations
: > "$W/keep"
for ((r = 0; r < RUNS; r++)); do collect >> "$W/keep"; done
if (( IMAGES * LAYERS_PER_IMAGE >= NLAYERS )); then
    deleted=$(awk '{s += $4} END {print s + 0}' "$W/warm")
    (( deleted == 0 )) || die "the first collection deleted $deleted blobs that images reference"
fi
deleted=$(awk '{s += $4} END {print s + 0}' "$W/keep")
(( deleted == 0 )) || die "a collection deleted $deleted blobs that images reference"
report "keep all (median of $RUNS)" "$(awk '{print $1}' "$W/keep" | median)" \
    "$(awk '{print $3}' "$W/keep" | median)"

# Remove half of the images: their manifests and the layers only they used
# become garbage.
t0=$(date +%s%N)
for ((m = 0; m < IMAGES; m += 2)); do
    printf '{"name":"bench/img-%d:latest"}\n' "$m"
done | xargs -P "$JOBS" -d '\n' -I{} "$RPC" -a "$SOCK" call images.delete '{}' >/dev/null
echo "removed $(( (IMAGES + 1) / 2 )) images in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
read -r lock mark total deleted < <(collect)
echo "sweep: $deleted blobs deleted, mark $mark ms"
(( deleted >= (IMAGES + 1) / 2 )) || die "expected at least $(( (IMAGES + 1) / 2 )) manifests deleted, got $deleted"
report "free half of the images" "$lock" "$total"
left=$(berth content ls -q | wc -l)
files=$(find "$ROOT/content/blobs" -type f 2>/dev/null | wc -l)
echo "store after: $left content records"
# The counts must agree: what gc reports deleted is what left the store.
(( left + deleted == ncontent )) || die "$ncontent records - $deleted deleted != $left left"
if [[ -z ${BENCH_POPULATE:-} ]] && (( files != left )); then
    die "$files blob files on disk but $left records"
fi
exit $fail
