#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Side-by-side container start benchmarks (issue 6, "Speed and memory"):
#   1. `berth run --rm IMG id /bin/true` vs `ctr run --rm` (a private
#      containerd 1.6) vs bare `runc run` on a prepared bundle: medians of N.
#   2. 50 detached containers started concurrently: wall time until all run,
#      and the total RSS of the shims (berth-shim vs containerd-shim-runc-v2).
# Everything runs in private temp roots; nothing touches /var/lib or /run.
# Runtime state goes on tmpfs for every tool, as /run is on a normal host
# (berth's runtime, fifo and runc dirs, containerd's state dir, bare runc's
# --root); roots (images, snapshots, metadata) stay on disk. -S keeps the
# state on the disk instead (here /tmp is ext4, where creating files is slow
# after many deletions: docs/performance.md, "Pull").
#
#   bench/bench_run.sh [-n RUNS] [-c CONCURRENT] [-s SETTLE_MS] [-S] [-i]  (root; build/bin built)
#   env BERTH_BIN (default build/bin)
# -s pauses between two timed commands (default 0), so that one tool's
# asynchronous after-work (containerd's cleanup after `ctr run --rm`
# returned, say) does not land on the next tool's timing.
# -i measures the daemon's RSS a second time, once transfer and
# snapshot-overlay have given back their libraries after their idle period
# (`unload_idle_ms`, default 30 s: the wait is that long).
set -euo pipefail

RUNS=20
CONC=50
SETTLE_MS=0
STATE_TMPFS=1
IDLE_RSS=0
while getopts "n:c:s:Si" o; do
    case $o in
    n) RUNS=$OPTARG ;;
    c) CONC=$OPTARG ;;
    s) SETTLE_MS=$OPTARG ;;
    S) STATE_TMPFS=0 ;;
    i) IDLE_RSS=1 ;;
    *) echo "usage: $0 [-n RUNS] [-c CONCURRENT] [-s SETTLE_MS] [-S] [-i]" >&2; exit 2 ;;
    esac
done

SRC=$(cd "$(dirname "$0")/.." && pwd)
export BERTH_BIN=${BERTH_BIN:-$SRC/build/bin}
export BERTH_RPCTOOL=${BERTH_RPCTOOL:-$BERTH_BIN/../tests/berth-rpctool}
[[ $(id -u) == 0 ]] || { echo "bench_run.sh needs root" >&2; exit 77; }
for t in runc containerd ctr umoci jq; do
    command -v $t >/dev/null || { echo "bench_run.sh needs $t (scripts/install-deps.sh)" >&2; exit 77; }
done

source "$SRC/tests/e2e/lib/daemon.bash"
source "$SRC/tests/e2e/lib/registry.bash"

CTRD_PID=
cleanup() {
    # Only the main shell cleans up (subshells may run this trap too).
    [[ $BASHPID == "$$" ]] || return 0
    set +e
    if [[ -n ${CTRD_SOCK:-} ]]; then
        for id in $(ctr -a "$CTRD_SOCK" -n bench tasks ls -q 2>/dev/null); do
            ctr -a "$CTRD_SOCK" -n bench tasks kill -s KILL "$id" >/dev/null 2>&1
        done
        sleep 0.5
        for id in $(ctr -a "$CTRD_SOCK" -n bench tasks ls -q 2>/dev/null); do
            ctr -a "$CTRD_SOCK" -n bench tasks rm -f "$id" >/dev/null 2>&1
        done
        for id in $(ctr -a "$CTRD_SOCK" -n bench containers ls -q 2>/dev/null); do
            ctr -a "$CTRD_SOCK" -n bench containers rm "$id" >/dev/null 2>&1
        done
    fi
    [[ -n $CTRD_PID ]] && kill "$CTRD_PID" 2>/dev/null && wait "$CTRD_PID" 2>/dev/null
    # containerd's shims outlive it by design: stop ours.
    for p in $(pgrep -f "containerd-shim-runc-v2 .*-address ${CTRD_SOCK:-/nonexistent}"); do
        kill -KILL "$p" 2>/dev/null
    done
    if [[ -n ${CTRD_DIR:-} ]]; then
        awk -v d="$CTRD_DIR" 'index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
            while read -r m; do umount -l "$m"; done
        rm -rf "$CTRD_DIR"
    fi
    berth_stop_daemon
    for c in /sys/fs/cgroup/*/; do
        rmdir "$c"bench-berth/bench "$c"bench-berth "$c"bench/* "$c"bench 2>/dev/null
    done
}
trap cleanup EXIT

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print 0}'; }
spread() { sort -n | awk '{a[NR]=$1} END {if (NR) printf "%s-%s", a[1], a[NR]}'; }
settle() { ((SETTLE_MS == 0)) || sleep "$(awk -v m="$SETTLE_MS" 'BEGIN {print m / 1000}')"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

echo "# preparing: berthd, containerd and a busybox image (runtime state on $( ((STATE_TMPFS)) && echo tmpfs || echo disk))"
berth_start_daemon '{"gc": {"enabled": false}, "runtime-runc": {"config": {"cgroup_parent": "/bench-berth"}}}'
if ((STATE_TMPFS)); then
    # Still empty: the runtime made them at start and keeps no fd in them.
    # berth_stop_daemon unmounts everything under the test dir.
    for d in runtime fifo runc runtime-tmp; do
        mount -t tmpfs -o mode=0700 tmpfs "$BERTH_STATE/$d"
    done
    mkdir "$BERTH_TEST_DIR/runc-root"
    mount -t tmpfs -o mode=0700 tmpfs "$BERTH_TEST_DIR/runc-root"
fi
registry_build_image "$BERTH_TEST_DIR/img" 1
tar -C "$BERTH_TEST_DIR/img" -cf "$BERTH_TEST_DIR/img.tar" .
berth -n bench images import --base-name busybox "$BERTH_TEST_DIR/img.tar" >/dev/null
IMG=$(berth -n bench images ls -q | head -n 1)

CTRD_DIR=$(mktemp -d /tmp/berth-bench-ctrd.XXXXXX)
CTRD_SOCK=$CTRD_DIR/c.sock
if ((STATE_TMPFS)); then
    mkdir "$CTRD_DIR/state"
    mount -t tmpfs -o mode=0711 tmpfs "$CTRD_DIR/state"
fi
cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
EOF
containerd --config "$CTRD_DIR/config.toml" >"$CTRD_DIR/log" 2>&1 &
CTRD_PID=$!
for _ in $(seq 100); do ctr -a "$CTRD_SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
ctr -a "$CTRD_SOCK" -n bench images import --base-name busybox "$BERTH_TEST_DIR/img.tar" >/dev/null
CIMG=$(ctr -a "$CTRD_SOCK" -n bench images ls -q | head -n 1)

# A bundle for bare runc: the same image, unpacked.
BUNDLE=$BERTH_TEST_DIR/bundle
umoci unpack --image "$BERTH_TEST_DIR/img:t" "$BUNDLE" >/dev/null
jq '.process.args = ["/bin/true"] | .process.terminal = false | .linux.cgroupsPath = "/bench/runc"' \
    "$BUNDLE/config.json" >"$BUNDLE/c.json" && mv "$BUNDLE/c.json" "$BUNDLE/config.json"
RUNC_ROOT=$BERTH_TEST_DIR/runc-root
# berth's own floor: bare runc on the same rootfs with the spec berth
# generates (default seccomp profile, capabilities, masked paths...).
# `ctr run` applies no seccomp profile unless --seccomp is given; that
# profile costs runc about 13 ms of CPU per start here.
BUNDLE_B=$BERTH_TEST_DIR/bundle-berth
mkdir "$BUNDLE_B"
cp -a "$BUNDLE/rootfs" "$BUNDLE_B/rootfs"
berth -n bench containers create "$IMG" spec-probe /bin/true >/dev/null
berth -n bench containers info --spec spec-probe |
    jq '.root = {"path": "rootfs", "readonly": false} | .process.terminal = false |
        .linux.cgroupsPath = "/bench/runc-berth" | del(.hooks)' >"$BUNDLE_B/config.json"
berth -n bench containers rm spec-probe >/dev/null
ctr_seccomp=1
ctr -a "$CTRD_SOCK" -n bench run --rm --seccomp "$CIMG" warm-s /bin/true >/dev/null 2>&1 || ctr_seccomp=0

echo "# 1. run --rm IMG id /bin/true, $RUNS runs each (median, ms)"
# Warm up each path once.
berth -n bench run --rm "$IMG" warm /bin/true
ctr -a "$CTRD_SOCK" -n bench run --rm "$CIMG" warm /bin/true
runc --root "$RUNC_ROOT" run --bundle "$BUNDLE" warm >/dev/null
runc --root "$RUNC_ROOT" run --bundle "$BUNDLE_B" warm >/dev/null
declare -a B C CS R RB
for i in $(seq "$RUNS"); do
    settle
    s=$(now_ms); berth -n bench run --rm "$IMG" b$i /bin/true; B+=($(($(now_ms) - s)))
    settle
    s=$(now_ms); ctr -a "$CTRD_SOCK" -n bench run --rm "$CIMG" c$i /bin/true; C+=($(($(now_ms) - s)))
    if ((ctr_seccomp)); then
        settle
        s=$(now_ms); ctr -a "$CTRD_SOCK" -n bench run --rm --seccomp "$CIMG" cs$i /bin/true
        CS+=($(($(now_ms) - s)))
    fi
    settle
    s=$(now_ms); runc --root "$RUNC_ROOT" run --bundle "$BUNDLE" r$i >/dev/null; R+=($(($(now_ms) - s)))
    settle
    s=$(now_ms); runc --root "$RUNC_ROOT" run --bundle "$BUNDLE_B" rb$i >/dev/null
    RB+=($(($(now_ms) - s)))
done
mb=$(printf '%s\n' "${B[@]}" | median)
mc=$(printf '%s\n' "${C[@]}" | median)
mr=$(printf '%s\n' "${R[@]}" | median)
mrb=$(printf '%s\n' "${RB[@]}" | median)
printf '%-40s %8s ms  (%s)\n' "berth run --rm" "$mb" "$(printf '%s\n' "${B[@]}" | spread)" \
    "ctr run --rm" "$mc" "$(printf '%s\n' "${C[@]}" | spread)"
if ((ctr_seccomp)); then
    mcs=$(printf '%s\n' "${CS[@]}" | median)
    printf '%-40s %8s ms  (%s)\n' "ctr run --rm --seccomp" "$mcs" "$(printf '%s\n' "${CS[@]}" | spread)"
fi
printf '%-40s %8s ms  (%s)\n' "runc run, umoci's spec (floor)" "$mr" "$(printf '%s\n' "${R[@]}" | spread)" \
    "runc run, berth's spec (berth's floor)" "$mrb" "$(printf '%s\n' "${RB[@]}" | spread)"
awk -v b="$mb" -v c="$mc" 'BEGIN {printf "berth / ctr = %.2f (target <= 0.35)\n", b / c}'
awk -v r="$mrb" -v c="$mc" -v b="$mb" 'BEGIN {printf "runc with berth'"'"'s spec / ctr = %.2f (the lowest ratio berth could reach); berth'"'"'s own time: %d ms\n", r / c, b - r}'
if ((ctr_seccomp)); then
    awk -v b="$mb" -v c="$mcs" 'BEGIN {printf "berth / ctr --seccomp = %.2f (both with the default seccomp profile)\n", b / c}'
fi

echo "# 2. $CONC detached containers started concurrently"
settle
s=$(now_ms)
pids=()
for i in $(seq "$CONC"); do
    $BERTH -n bench run -d "$IMG" d$i sleep 600 &
    pids+=($!)
done
# Only these: a bare `wait` would also wait for berthd and containerd.
wait "${pids[@]}" || true
eb=$(($(now_ms) - s))
nb=$(berth -n bench tasks ls --format json | jq '[.[] | select(.status == "RUNNING")] | length')
rss_b=0
for p in $(pgrep -f "berth-shim --id d[0-9]+ --namespace bench --bundle $BERTH_STATE/"); do
    rss_b=$((rss_b + $(awk '/^VmRSS/ {print $2}' /proc/$p/status)))
done
settle
s=$(now_ms)
pids=()
for i in $(seq "$CONC"); do
    ctr -a "$CTRD_SOCK" -n bench run -d "$CIMG" d$i sleep 600 >/dev/null &
    pids+=($!)
done
wait "${pids[@]}" || true
ec=$(($(now_ms) - s))
nc=$(ctr -a "$CTRD_SOCK" -n bench tasks ls | grep -c RUNNING || true)
rss_c=0
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK"); do
    rss_c=$((rss_c + $(awk '/^VmRSS/ {print $2}' /proc/$p/status)))
done
printf '%-28s %8s ms  (%s running)  shim RSS total %s MiB\n' \
    "berth run -d x$CONC" "$eb" "$nb" "$((rss_b / 1024))" \
    "ctr run -d x$CONC" "$ec" "$nc" "$((rss_c / 1024))"
awk -v b="$eb" -v c="$ec" 'BEGIN {printf "berth / ctr = %.2f (target <= 0.5)\n", b / c}'
echo "berth shim RSS per container: $((rss_b / CONC)) KiB (target <= 1024)"
# The daemons themselves with the containers running (issue 2: berthd and
# all plugins <= 24 MiB with 20 containers; containerd 44-57 MiB). berth's
# plugins are berthd's children; the shims are not (reparented away).
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_d=$(rss_of "$BERTH_PID")
for p in $(pgrep -P "$BERTH_PID"); do rss_d=$((rss_d + $(rss_of "$p"))); done
rss_cd=$(rss_of "$CTRD_PID")
printf 'daemon RSS with %s containers running: berth (berthd + plugins) %s MiB, containerd %s MiB\n' \
    "$CONC" "$(awk -v k="$rss_d" 'BEGIN {printf "%.1f", k / 1024}')" \
    "$(awk -v k="$rss_cd" 'BEGIN {printf "%.1f", k / 1024}')"
if ((IDLE_RSS)); then
    # -i: the same, after the idle unload (docs/performance.md): transfer has
    # been recycled by berthd (its libraries not mapped any more) and
    # snapshot-overlay has dlclose'd its extraction library.
    idle_ms=$(jq -r '[.plugins.transfer.config.unload_idle_ms // 30000,
        .plugins["snapshot-overlay"].config.unload_idle_ms // 30000] | max' "$BERTH_CONFIG")
    echo "# waiting for the idle unload (unload_idle_ms $idle_ms)"
    unloaded() {
        local t o
        t=$(berth_plugin_pid transfer)
        o=$(berth_plugin_pid snapshot-overlay)
        ! grep -qE 'berth-transfer-(impl|archive)\.so' "/proc/$t/maps" 2>/dev/null &&
            ! grep -q 'berth-snapshot-overlay-apply\.so' "/proc/$o/maps" 2>/dev/null
    }
    s=$(now_ms)
    if berth_wait_for $((idle_ms * 2 / 1000 + 15)) unloaded; then
        sleep 2.5 # malloc_trim 2 s after the last message (the recycle's)
        rss_d=$(rss_of "$BERTH_PID")
        for p in $(pgrep -P "$BERTH_PID"); do rss_d=$((rss_d + $(rss_of "$p"))); done
        printf 'daemon RSS with %s containers running, after the idle unload (%s ms later): berth (berthd + plugins) %s MiB\n' \
            "$CONC" "$(($(now_ms) - s))" "$(awk -v k="$rss_d" 'BEGIN {printf "%.1f", k / 1024}')"
        echo "  berthd $(rss_of "$BERTH_PID") KiB; $(ps -o comm=,rss= --ppid "$BERTH_PID" |
            awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2} END {print " KiB"}')"
    else
        echo "daemon RSS after the idle unload: not measured (transfer or snapshot-overlay did not unload)"
    fi
fi

echo "# cleaning up"
for i in $(seq "$CONC"); do berth -n bench tasks kill -s KILL d$i >/dev/null 2>&1 || true; done
sleep 1
for i in $(seq "$CONC"); do
    berth -n bench tasks rm d$i >/dev/null 2>&1 || true
    berth -n bench containers rm d$i >/dev/null 2>&1 || true
done
