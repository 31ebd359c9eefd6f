#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# berth-metadata benchmarks, side by side with containerd 1.6 on this host.
#
#   bench/bench_metadata.sh [BUILD_DIR] [N] [NFORK]
#
# (`make bench` passes the build directory first; it may be left out.)
# 1. gc: mark & sweep over 1,000 images sharing 5,000 blobs (synthetic, no
#    daemon): write-lock hold time, budget 50 ms (bench-meta-gc).
# 2. images.create + images.get/list round trips through a private berthd
#    (only the metadata plugin), from one connection, one call in flight, no
#    fork per call (bench-meta-client): N (default 10,000) create, N get,
#    NFILTER (default 100) list name==<one image>, NLIST (default 20) full
#    list of all N images.
# 3. berth, 8 connections in parallel: N images.create in total.
# 4. The same calls against a private containerd 1.6 (temp root and socket,
#    never /var/lib/containerd or /run/containerd) through its Images gRPC
#    API, the API ctr uses, from one connection, one call in flight, no fork:
#    bench/ctrd_images_client.js (Node.js, @grpc/grpc-js, containerd's .proto
#    files from Debian's golang-github-containerd-containerd-dev). Then the
#    two side by side with the ratio (issue 3's target: >= 3x containerd's
#    rate), and each daemon's CPU per call (berthd + berth-metadata against
#    containerd), which does not depend on the client's speed. The Version
#    RPC through the same client is printed as the client's floor.
# 5. Forking clients (skipped when NFORK is 0): NFORK `berth-rpctool call
#    images.create`/`images.list` against berthd and NFORK `ctr images tag` +
#    `ctr images ls` against the containerd: both pay fork+exec+connect.
#
# Needs root (both daemons), jq, containerd, ctr, python3 and, for the
# containerd gRPC side, node + npm (`npm ci --prefix bench` is run when
# bench/node_modules is missing). Binaries from $BERTH_BIN (default
# BUILD_DIR/bin) and $BERTH_BENCH_BIN (default BUILD_DIR/bench).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$SRC/build
if [[ -n ${1:-} && -d $1 ]]; then
    BUILD=$(cd "$1" && pwd)
    shift
fi
N=${1:-10000}
NFORK=${2:-1000}
NFILTER=${NFILTER:-100}
NLIST=${NLIST:-20}
export BERTH_BIN=${BERTH_BIN:-$BUILD/bin}
BENCH_BIN=${BERTH_BENCH_BIN:-$(dirname "$BERTH_BIN")/bench}
export BERTH_RPCTOOL=${BERTH_RPCTOOL:-$(dirname "$BERTH_BIN")/tests/berth-rpctool}
CTRD_PROTO_ROOT=${CTRD_PROTO_ROOT:-/usr/share/gocode/src}
export CTRD_PROTO_ROOT

[[ $(id -u) == 0 ]] || { echo "bench_metadata: needs root" >&2; exit 77; }
for t in "$BERTH_BIN/berthd" "$BERTH_BIN/berth-metadata" "$BENCH_BIN/bench-meta-gc" \
    "$BENCH_BIN/bench-meta-client" "$BERTH_RPCTOOL"; do
    [[ -x $t ]] || { echo "bench_metadata: $t not built" >&2; exit 77; }
done

rate() { # COUNT SECONDS
    awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f/s", n / s }'
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# CPU time (utime + stime, clock ticks) of a set of processes.
ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || v=0
        t=$((t + v))
    done
    echo "$t"
}
HZ=$(getconf CLK_TCK)
# field NAME LINE: the value of NAME=... in a "k=v k=v" line.
field() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { sub(/\/s$/, "", $2); print $2 }'; }
# One client run against PIDS: prints the client's line plus the daemon's CPU
# per call, and stores "rate cpu_us" in RESULT_<tag>.
declare -A RESULT
measure() { # TAG PIDS(comma separated) COMMAND...
    local tag=$1 pids out c0 c1 n cpu_us
    IFS=, read -r -a pids <<<"$2"
    shift 2
    c0=$(ticks "${pids[@]}")
    out=$("$@")
    c1=$(ticks "${pids[@]}")
    n=$(field n "$out")
    cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.0f", t * 1e6 / hz / n }')
    echo "$out daemon_cpu_us_per_call=$cpu_us"
    RESULT[$tag]="$(field rate "$out") $cpu_us"
}

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
# containerd logs at info by default; berthd's debug log (the e2e default)
# would add a line per published event.
BERTH_CONFIG_EXTRA='{"log_level": "info"}' BERTH_WAIT_READY=1 berth_start_daemon \
    '{"content": {"enabled": false}, "snapshot-overlay": {"enabled": false},
    "transfer": {"enabled": false}, "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}' >/dev/null
BERTH_PIDS=${BERTH_PID:?}
for p in $(ps -o pid= --ppid "$BERTH_PID"); do BERTH_PIDS+=",$p"; done

echo
echo "== berth, one connection, one call in flight, no fork: $N images.create, $N images.get,"
echo "   $NFILTER images.list name==<one image>, $NLIST full images.list (server CPU: berthd + berth-metadata)"
measure b_create "$BERTH_PIDS" "$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" create "$N" bench
measure b_get "$BERTH_PIDS" "$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" get "$N" bench
measure b_filter "$BERTH_PIDS" "$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" filter "$NFILTER" bench
measure b_list "$BERTH_PIDS" "$BENCH_BIN/bench-meta-client" "$BERTH_SOCK" list "$NLIST" bench

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
echo "berth create x8: $(((N / 8) * 8)) in $(secs "$t0" "$t1") s = $(rate $(((N / 8) * 8)) "$(secs "$t0" "$t1")")"

if ((NFORK > 0)); then
    echo
    echo "== berth, forking a client per call: $NFORK images.create, $NFORK images.list (1 item)"
    t0=$(now)
    for ((i = 0; i < NFORK; i++)); do
        "$BERTH_RPCTOOL" -a "$BERTH_SOCK" call images.create "{\"namespace\": \"fork\", \"image\": {\"name\": \"bench/tag-$i:latest\",
            \"target\": {\"media_type\": \"application/vnd.oci.image.manifest.v1+json\",
            \"digest\": \"sha256:0000000000000000000000000000000000000000000000000000000000000001\", \"size\": 1}}}" >/dev/null
    done
    t1=$(now)
    echo "berth create (fork): $NFORK in $(secs "$t0" "$t1") s = $(rate "$NFORK" "$(secs "$t0" "$t1")")"
    t0=$(now)
    for ((i = 0; i < NFORK; i++)); do
        "$BERTH_RPCTOOL" -a "$BERTH_SOCK" call images.list "{\"namespace\": \"fork\", \"filters\": [\"name==bench/tag-$i:latest\"]}" >/dev/null
    done
    t1=$(now)
    echo "berth list (fork): $NFORK in $(secs "$t0" "$t1") s = $(rate "$NFORK" "$(secs "$t0" "$t1")")"
fi
berth_stop_daemon >/dev/null 2>&1 || true

# ---- containerd --------------------------------------------------------------
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null || ! command -v python3 >/dev/null; then
    echo "containerd/ctr/python3 not installed (scripts/install-deps.sh): containerd side skipped"
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

# A minimal OCI archive (one empty layer) to import: the target descriptor of
# every image the gRPC client creates and the source of `ctr images tag`.
# Prints the manifest's "MEDIATYPE DIGEST SIZE".
TARGET=$(python3 - "$WORK/img.tar" <<'EOF'
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
print("application/vnd.oci.image.manifest.v1+json", d(manifest), len(manifest))
EOF
)
# Namespace "fork" for the ctr section, as berth's forking section uses its
# own namespace (its images.ls calls then scan NFORK images, not N + NFORK).
CTRF=(ctr -a "$WORK/ctrd/sock" -n fork)
"${CTRF[@]}" images import --no-unpack "$WORK/img.tar" >/dev/null
SRCREF=$("${CTRF[@]}" images ls -q | head -1)

# Two gRPC clients, the same calls as bench-meta-client, each in its own
# namespace: ctrd-grpc-client (C, built here: a minimal HTTP/2 client about as
# cheap per call as bench-meta-client) and ctrd_images_client.js (Node.js,
# @grpc/grpc-js: a stock gRPC stack, but it spends more CPU per call than
# containerd does, so it understates containerd).
CGRPC=$WORK/ctrd-grpc-client
if ! cc -O2 -o "$CGRPC" "$SRC/bench/ctrd_grpc_client.c" 2>"$WORK/cc.log"; then
    echo "cannot build bench/ctrd_grpc_client.c (cc missing?): its section is skipped"
    sed 's/^/  /' "$WORK/cc.log" | tail -5
    CGRPC=
fi
NODE_OK=1
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node/npm not installed (nodejs): the Node.js gRPC client is skipped"
    NODE_OK=0
elif [[ ! -f $CTRD_PROTO_ROOT/github.com/containerd/containerd/api/services/images/v1/images.proto ]]; then
    echo "containerd's .proto files not under $CTRD_PROTO_ROOT (apt-get install golang-github-containerd-containerd-dev" \
        "golang-github-gogo-protobuf-dev libprotobuf-dev): the Node.js gRPC client is skipped"
    NODE_OK=0
elif [[ ! -d $SRC/bench/node_modules/@grpc/grpc-js ]] &&
    ! npm ci --prefix "$SRC/bench" --no-audit --no-fund >"$WORK/npm.log" 2>&1; then
    echo "npm ci --prefix bench failed (no registry?): the Node.js gRPC client is skipped"
    sed 's/^/  /' "$WORK/npm.log" | tail -5
    NODE_OK=0
fi

ctrd_calls() { # TAG-PREFIX NAMESPACE CLIENT...
    local t=$1 ns=$2
    shift 2
    measure "${t}_create" "$CTRD_PID" env CTRD_TARGET="$TARGET" "$@" create "$N" "$ns"
    measure "${t}_get" "$CTRD_PID" "$@" get "$N" "$ns"
    measure "${t}_filter" "$CTRD_PID" "$@" filter "$NFILTER" "$ns"
    measure "${t}_list" "$CTRD_PID" "$@" list "$NLIST" "$ns"
    measure "${t}_version" "$CTRD_PID" "$@" version "$N" "$ns"
}
if [[ -n $CGRPC ]]; then
    echo
    echo "== containerd 1.6 Images gRPC, C client (ctrd-grpc-client), one connection, one call in flight:"
    echo "   the same calls, then $N Version calls (the client + gRPC floor)"
    ctrd_calls c bench "$CGRPC" "$WORK/ctrd/sock"
fi
if ((NODE_OK)); then
    echo
    echo "== containerd 1.6 Images gRPC, Node.js client (@grpc/grpc-js), one connection, one call in flight"
    ctrd_calls j bench-node node "$SRC/bench/ctrd_images_client.js" "$WORK/ctrd/sock"
fi

ratio() {
    if [[ $2 == - ]]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; fi
}
if [[ -n $CGRPC ]] || ((NODE_OK)); then
    echo
    echo "== side by side: calls/s, one connection, one call in flight (target: berth >= 3x containerd);"
    echo "   daemon CPU per call: berthd + berth-metadata, containerd"
    printf '%-28s %9s %11s %6s %11s %6s  %9s %9s\n' call berth "ctrd C" ratio "ctrd Node" ratio \
        "berth CPU" "ctrd CPU"
    for op in create get filter list; do
        read -r br bc <<<"${RESULT[b_$op]}"
        read -r cr cc <<<"${RESULT[c_$op]:-- -}"
        read -r jr jc <<<"${RESULT[j_$op]:-- -}"
        [[ $cc == - ]] && cc=$jc
        case $op in
        create) label="images.create" ;;
        get) label="images.get" ;;
        filter) label="images.list name== ($N)" ;;
        list) label="images.list all ($N)" ;;
        esac
        printf '%-28s %7s/s %9s/s %6s %9s/s %6s  %6s µs %6s µs\n' "$label" "$br" "$cr" "$(ratio "$br" "$cr")" \
            "$jr" "$(ratio "$br" "$jr")" "$bc" "$cc"
    done
    read -r cr cc <<<"${RESULT[c_version]:-- -}"
    read -r jr jc <<<"${RESULT[j_version]:-- -}"
    printf '%-28s %9s %9s/s %6s %9s/s %6s  %9s %6s µs\n' "Version (client floor)" "" "$cr" "" "$jr" "" "" "$cc"
fi

if ((NFORK > 0)); then
    echo
    echo "== containerd 1.6 through ctr (forks per call): $NFORK images tag, $NFORK images ls"
    t0=$(now)
    for ((i = 0; i < NFORK; i++)); do
        "${CTRF[@]}" images tag "$SRCREF" "bench/tag-$i:latest" >/dev/null
    done
    t1=$(now)
    echo "containerd tag (fork): $NFORK in $(secs "$t0" "$t1") s = $(rate "$NFORK" "$(secs "$t0" "$t1")")"
    t0=$(now)
    for ((i = 0; i < NFORK; i++)); do
        "${CTRF[@]}" images ls "name==bench/tag-$i:latest" >/dev/null
    done
    t1=$(now)
    echo "containerd ls (fork): $NFORK in $(secs "$t0" "$t1") s = $(rate "$NFORK" "$(secs "$t0" "$t1")")"
fi
