#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Benchmarks of the core (issue 2), side by side with containerd 1.6:
#   1. `berth version` vs `ctr version`: end-to-end CLI round trip (hyperfine)
#   2. RPC round trip to the core on an open connection
#   3. echo through berthd vs straight to the plugin: the cost of the core hop
#   4. pipelined echo through berthd on one connection: requests/s, and the
#      CPU time berthd spends per request (independent of machine load)
#   5. plugin crash (kill -9) to serving again
#   6. idle RSS of berthd, of each plugin, and of containerd
# Prints medians and ratios. Needs root, a build (BERTH_BIN, default
# build/bin), hyperfine, containerd and ctr (scripts/install-deps.sh).
#
#   bench/bench_core.sh [-n RUNS]      (RUNS of each measurement, default 3)
set -euo pipefail

RUNS=3
[[ ${1:-} == -n ]] && RUNS=$2
SRC=$(cd "$(dirname "$0")/.." && pwd)
BERTH_BIN=${BERTH_BIN:-$SRC/build/bin}
RPC=${BERTH_RPCTOOL:-$BERTH_BIN/../tests/berth-rpctool}
[[ $(id -u) == 0 ]] || { echo "bench_core: needs root" >&2; exit 77; }
for x in "$BERTH_BIN/berthd" "$BERTH_BIN/berth-echo" "$RPC"; do
    [[ -x $x ]] || { echo "bench_core: $x not built (cmake --build build)" >&2; exit 1; }
done
for t in hyperfine containerd ctr jq; do
    command -v $t >/dev/null || { echo "bench_core: $t not installed (scripts/install-deps.sh)" >&2; exit 1; }
done

D=$(mktemp -d /tmp/berth-bench.XXXXXX)
chmod 0711 "$D"
BPID= CPID=
cleanup() {
    [[ -n $BPID ]] && kill -TERM "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null || true
    [[ -n $CPID ]] && kill -TERM "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null || true
    awk -v d="$D" 'index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2); else print "nan"}'; }
field() { grep -o "$1=[0-9.]*" | head -1 | cut -d= -f2; }
calc() { awk "BEGIN {print $*}"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_berthd() { # PLUGINS-JSON
    rm -rf "$D/b"
    mkdir -p "$D/b"
    jq -n --arg d "$D/b" --argjson p "$1" \
        '{root: ($d + "/root"), state: ($d + "/state"), log_level: "warn", plugins: $p}' >"$D/b.json"
    "$BERTH_BIN/berthd" --config "$D/b.json" >"$D/berthd.log" 2>&1 &
    BPID=$!
    SOCK=$D/b/state/berth.sock
    for _ in $(seq 200); do
        "$RPC" -a "$SOCK" call info 2>/dev/null | jq -e '.not_ready | length == 0' >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench_core: berthd did not become ready; log:" >&2
    tail -20 "$D/berthd.log" >&2
    exit 1
}

stop_berthd() {
    kill -TERM "$BPID"
    wait "$BPID" 2>/dev/null || true
    BPID=
}

start_containerd() {
    mkdir -p "$D/c"
    cat >"$D/c/config.toml" <<EOF
version = 2
root = "$D/c/root"
state = "$D/c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/c/containerd.sock"
[ttrpc]
  address = "$D/c/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/c/opt"
EOF
    containerd --config "$D/c/config.toml" >"$D/containerd.log" 2>&1 &
    CPID=$!
    CSOCK=$D/c/containerd.sock
    for _ in $(seq 200); do
        ctr -a "$CSOCK" version >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench_core: containerd did not start; log:" >&2
    tail -20 "$D/containerd.log" >&2
    exit 1
}

NO_REAL='"content": {"enabled": false}, "metadata": {"enabled": false}, "snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false}, "runtime-runc": {"enabled": false}, "gc": {"enabled": false}'
echo "bench_core: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $RUNS runs each; medians"
start_berthd "{$NO_REAL, \"echo\": {}}"
start_containerd

# 1. CLI round trip.
if [[ -x $BERTH_BIN/berth ]]; then
    hyperfine -N --warmup 20 --runs 300 --export-json "$D/hf.json" \
        "$BERTH_BIN/berth -a $SOCK version" "ctr -a $CSOCK version" >/dev/null 2>&1
    b_cli=$(jq '.results[0].median * 1000' "$D/hf.json")
    c_cli=$(jq '.results[1].median * 1000' "$D/hf.json")
    printf "%-44s berth %7.2f ms   ctr %7.2f ms   ratio %.1fx\n" "version, CLI round trip (median)" \
        "$b_cli" "$c_cli" "$(calc "$c_cli / $b_cli")"
else
    echo "version, CLI round trip: skipped (berth CLI not built)"
fi

# 2. RPC round trip to the core itself.
v=$(for _ in $(seq "$RUNS"); do "$RPC" -a "$SOCK" lat version 20000 | field median_us; done | median)
printf "%-44s %7.1f us\n" "version, RPC round trip on one connection" "$v"

# 3. The core hop.
direct=$(for _ in $(seq "$RUNS"); do "$RPC" -p "$BERTH_BIN/berth-echo" lat echo.echo 20000 '{"data": "x"}' | field median_us; done | median)
via=$(for _ in $(seq "$RUNS"); do "$RPC" -a "$SOCK" lat echo.echo 20000 '{"data": "x"}' | field median_us; done | median)
printf "%-44s %7.1f us direct   %7.1f us via berthd   core hop %.1f us\n" "echo round trip" "$direct" "$via" \
    "$(calc "$via - $direct")"

# 4. Pipelined throughput and berthd CPU per request.
N=200000
rates=() cpus=()
for _ in $(seq "$RUNS"); do
    t0=$(cpu_ticks "$BPID")
    out=$("$RPC" -a "$SOCK" load echo.echo $N 64 '{"data": "x"}')
    t1=$(cpu_ticks "$BPID")
    rates+=("$(field rate <<<"$out")")
    cpus+=("$(calc "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $N")")
done
rate=$(printf '%s\n' "${rates[@]}" | median)
cpu=$(printf '%s\n' "${cpus[@]}" | median)
drate=$(for _ in $(seq "$RUNS"); do "$RPC" -p "$BERTH_BIN/berth-echo" load echo.echo $N 64 '{"data": "x"}' | field rate; done | median)
printf "%-44s %7.0f req/s via berthd (%.0f direct)   berthd CPU %.2f us/request\n" \
    "pipelined echo, 1 connection, depth 64" "$rate" "$drate" "$cpu"

# 5. Crash to serving: time from kill -9 until a call is answered again
# (the call waits in the plugin's queue while it restarts). Each crash on a
# fresh daemon: repeated crashes back off (10 ms doubling), by design.
base=$(for _ in $(seq 5); do s=$(date +%s%N); "$RPC" -a "$SOCK" call echo.pid >/dev/null; echo $((($(date +%s%N) - s) / 1000)); done | median)
stop_berthd
crash=$(for _ in $(seq $((RUNS * 2))); do
    start_berthd "{$NO_REAL, \"echo\": {}}" >&2
    pid=$("$RPC" -a "$SOCK" call echo.pid | jq -r .pid)
    s=$(date +%s%N)
    kill -9 "$pid"
    "$RPC" -a "$SOCK" call echo.pid >/dev/null
    echo $((($(date +%s%N) - s) / 1000))
    stop_berthd >&2
done | median)
printf "%-44s %7.1f ms (a healthy call from a new process takes %.1f ms)\n" "plugin crash to serving again" \
    "$(calc "$crash / 1000")" "$(calc "$base / 1000")"

# 6. Idle RSS: berthd with every plugin that is built, plus echo.
start_berthd '{"echo": {}}'
sleep 2
printf "%-44s %7.0f KiB\n" "idle RSS berthd" "$(rss_kib "$BPID")"
total=$(rss_kib "$BPID")
while read -r id pid status; do
    [[ $pid -gt 0 ]] || continue
    r=$(rss_kib "$pid")
    total=$((total + r))
    printf "%-44s %7.0f KiB (%s)\n" "idle RSS plugin $id" "$r" "$status"
done < <("$RPC" -a "$SOCK" call plugins.list | jq -r '.plugins[] | "\(.id) \(.pid) \(.status)"')
printf "%-44s %7.0f KiB   containerd %s KiB\n" "idle RSS berthd + plugins" "$total" "$(rss_kib "$CPID")"
