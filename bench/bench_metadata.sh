#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# berth-metadata benchmarks, side by side with containerd 1.6 on this host.
#
#   bench/bench_metadata.sh [N] [NFORK]
#
# 1. gc: mark & sweep over 1,000 images sharing 5,000 blobs (synthetic, no
#    daemon): write-lock hold time, budget 50 ms (bench-meta-gc).
# 2. images.create + images.get/list round trips through a private berthd
#    (only the metadata plugin), from one connection, no fork per call
#    (bench-meta-client): N (default 10,000) of each.
# 3. The same through forking clients, because containerd can only be driven
#    here through ctr (no Go toolchain, no gRPC for Python on this host):
#    NFORK (default 1,000) `ctr images tag` + `ctr images ls` against a
#    private containerd, and NFORK `berth-rpctool call images.create` +
#    `berth images ls`-equivalent calls against berthd. Both sides pay a
#    fork+exec+connect per call, so the figures compare like with like; the
#    non-forking berth figure is what a real client sees.
#
# Needs root (both daemons), jq, containerd, ctr and python3-msgpack.
# Binaries from $BERTH_BIN (default build/bin) and $BERTH_BENCH_BIN
# (default build/bench).
set -euo pipefail

N=${1:-10000}
NFORK=${2:-1000}
SRC=$(cd "$(dirname "$0")/.." && pwd)
export BERTH_BIN=${BERTH_BIN:-$SRC/build/bin}
BENCH_BIN=${BERTH_BENCH_BIN:-$(dirname "$BERTH_BIN")/bench}
export BERTH_RPCTOOL=${BERTH_RPCTOOL:-$(dirname "$BERTH_BIN")/tests/berth-rpctool}

[[ $(id -u) == 0 ]] || { echo "bench_metadata: needs root" >&2; exit 77; }
for t in "$BERTH_BIN/berthd" "$BERTH_BIN/berth-metadata" "$BENCH_BIN/bench-meta-gc" \
    "$BENCH_BIN/bench-meta-client" "$BERTH_RPCTOOL"; do
    [[ -x $t ]] || { echo "bench_metadata: $t not built" >&2; exit 77; }
done

rate() { # COUNT SECONDS
    awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f/s", n / s }'
}

now() { date +%s.%N; }

echo "== gc: 1,000 images sharing 5,000 blobs (write lock budget: 50 ms)"
"$BENCH_BIN/bench-meta-gc" 1000 5000 3

# ---- berthd ------------------------------------------------------------------
# shellcheck source=/dev/null
source "$SRC/tests/e2e/lib/daemon.bash"
WORK=$(mktemp -d /tmp/berth-bench-meta.XXXXXX)
CTRD_PID=
cleanup() {
    berth_stop_daemon || true
    if [[ -n $CTRD_PID ]]; then
        kill "$CTRD_PID" 2>/dev/null || true
        wait "$CTRD_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
BERTH_WAIT_READY=1 berth_start_daemon '{"content": {"enabled": false}, "snapshot-overlay": {"enabled": false},
    "transfer": {"enabled": false}, "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}' >/dev/null

echo
echo "== berth, one connection, no fork: $N images.create, $N images.get, 20 full images.list"
"$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" create "$N" bench
"$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" get "$N" bench
"$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" list 20 bench

echo
echo "== berth, 8 connections in parallel: $N images.create in total (group commit)"
t0=$(now)
pids=()
for ((p = 0; p < 8; p++)); do
    "$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" create $((N / 8)) par $((p * N)) >/dev/null &
    pids+=($!)
done
wait "${pids[@]}" # not berthd, also a child of this shell
t1=$(now)
echo "berth create x8: $(((N / 8) * 8)) in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s = $(rate $(((N / 8) * 8)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")"

echo
echo "== berth, forking a client per call: $NFORK images.create, $NFORK images.list (1 item)"
t0=$(now)
for ((i = 0; i < NFORK; i++)); do
    "$BERTH_RPCTOOL" -a "$BERTH_SOCK" call images.create "{\"namespace\": \"fork\", \"image\": {\"name\": \"bench/tag-$i:latest\",
        \"target\": {\"media_type\": \"application/vnd.oci.image.manifest.v1+json\",
        \"digest\": \"sha256:0000000000000000000000000000000000000000000000000000000000000001\", \"size\": 1}}}" >/dev/null
done
t1=$(now)
echo "berth create (fork): $NFORK in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s = $(rate "$NFORK" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")"
t0=$(now)
for ((i = 0; i < NFORK; i++)); do
    "$BERTH_RPCTOOL" -a "$BERTH_SOCK" call images.list "{\"namespace\": \"fork\", \"filters\": [\"name==bench/tag-$i:latest\"]}" >/dev/null
done
t1=$(now)
echo "berth list (fork): $NFORK in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s = $(rate "$NFORK" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")"

# ---- containerd ------------------------------------------------------------------
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null || ! /usr/bin/python3 -c 'import msgpack' 2>/dev/null; then
    echo "containerd/ctr not installed: containerd side skipped"
    exit 0
fi
mkdir -p "$WORK/ctrd"
cat >"$WORK/ctrd/config.toml" <<EOF
version = 2
root = "$WORK/ctrd/root"
state = "$WORK/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/ctrd/sock"
[ttrpc]
  address = "$WORK/ctrd/sock.ttrpc"
EOF
containerd --config "$WORK/ctrd/config.toml" >"$WORK/ctrd/log" 2>&1 &
CTRD_PID=$!
for ((i = 0; i < 100; i++)); do
    ctr -a "$WORK/ctrd/sock" version >/dev/null 2>&1 && break
    sleep 0.1
done
CTR=(ctr -a "$WORK/ctrd/sock" -n bench)

# A minimal OCI archive (one empty layer) to import as the tag source.
/usr/bin/python3 - "$WORK/img.tar" <<'EOF'
import gzip, hashlib, io, json, sys, tarfile, time
out = sys.argv[1]
layer_tar = io.BytesIO()
with tarfile.open(fileobj=layer_tar, mode="w"):
    pass
raw = layer_tar.getvalue()
layer = gzip.compress(raw, mtime=0)
def d(b): return "sha256:" + hashlib.sha256(b).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": [d(raw)]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(layer), "size": len(layer)}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": d(manifest), "size": len(manifest),
    "annotations": {"io.containerd.image.name": "bench/src:latest", "org.opencontainers.image.ref.name": "latest"}}]}).encode()
with tarfile.open(out, "w") as t:
    def add(name, data):
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = int(time.time())
        t.addfile(ti, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    add("index.json", index)
    for b in (layer, config, manifest):
        add("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
EOF
"${CTR[@]}" images import --no-unpack "$WORK/img.tar" >/dev/null
SRCREF=$("${CTR[@]}" images ls -q | head -1)

echo
echo "== containerd 1.6 through ctr (forks per call): $NFORK images tag, $NFORK images ls"
t0=$(now)
for ((i = 0; i < NFORK; i++)); do
    "${CTR[@]}" images tag "$SRCREF" "bench/tag-$i:latest" >/dev/null
done
t1=$(now)
echo "containerd tag (fork): $NFORK in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s = $(rate "$NFORK" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")"
t0=$(now)
for ((i = 0; i < NFORK; i++)); do
    "${CTR[@]}" images ls "name==bench/tag-$i:latest" >/dev/null
done
t1=$(now)
echo "containerd ls (fork): $NFORK in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s = $(rate "$NFORK" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")"
