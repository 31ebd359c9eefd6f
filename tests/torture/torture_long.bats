#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Long torture cases, run by scripts/torture.sh (make torture), not by ctest:
# repeated kill -9 at random moments, kill -9 of berthd during pulls, a
# prepare interrupted by a crash, and a daemon started with `ulimit -n 64`
# under parallel imports. Counts scale with TORTURE_ITERATIONS (default 10)
# and sizes with TORTURE_SCALE (default 4).

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export ITER=${TORTURE_ITERATIONS:-10} SCALE=${TORTURE_SCALE:-4}
    export FIX
    FIX=$(mktemp -d /tmp/berth-torture-long.XXXXXX)
}

teardown_file() {
    [[ -n ${FIX:-} && -d $FIX ]] && rm -rf "$FIX"
}

setup() {
    local lib=$BATS_TEST_DIRNAME/../e2e/lib/daemon.bash b
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins)"
    command -v jq >/dev/null || skip "jq not installed"
    # shellcheck source=/dev/null
    source "$lib"
    for b in berthd berth berth-content berth-metadata; do
        [[ -x $BERTH_BIN/$b ]] || skip "$b not built (looked in $BERTH_BIN)"
    done
    BG_PIDS=()
    REG_STARTED=
}

teardown() {
    local p
    for p in "${BG_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        [[ ${BATS_TEST_COMPLETED:-} == 1 ]] || berth_dump_log 80 >&3 || true
        berth_stop_daemon
        DAEMON_STARTED=
    fi
    if [[ -n ${REG_STARTED:-} ]]; then
        registry_stop
        REG_STARTED=
    fi
    unset BERTH_FAILPOINTS
}

start() {
    DAEMON_STARTED=1
    berth_start_daemon "${1:-{\}}"
}

plugin_field() { # ID FIELD
    berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r ".plugins[0].$2"
}

plugin_restarted() { # ID OLD-PID
    local p
    p=$(plugin_field "$1" pid)
    [[ $(plugin_field "$1" status) == ok && -n $p && $p != null && $p != 0 && $p != "$2" ]]
}

fp_hits_ge() { # NAME N
    [[ $(grep -c "msg=\"failpoint hit\" failpoint=$1 " "$BERTH_LOG" || true) -ge $2 ]]
}

check_blobs() {
    local f
    for f in "$BERTH_ROOT"/content/blobs/sha256/*; do
        [[ -e $f ]] || continue
        [[ $(sha256sum "$f" | cut -d' ' -f1) == "${f##*/}" ]] || {
            echo "blob $f does not match its digest"
            return 1
        }
    done
}

image_tar() { # NAME LAYERS [SIZE_MB]
    local out=$FIX/$1.tar
    if [[ ! -f $out ]]; then
        command -v umoci >/dev/null || skip "umoci not installed"
        [[ -x /bin/busybox ]] || skip "busybox-static not installed"
        # shellcheck source=/dev/null
        source "$BATS_TEST_DIRNAME/../e2e/lib/registry.bash"
        registry_build_image "$FIX/$1" "$2" "${3:-0}"
        tar -C "$FIX/$1" -cf "$out" .
    fi
    echo "$out"
}

@test "content: kill -9 at random moments of a large ingest until it commits; the blob is right" {
    start '{"snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
            "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
    head -c $((64 * SCALE * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/big"
    d="sha256:$(sha256sum "$BERTH_TEST_DIR/big" | cut -d' ' -f1)"
    local i kills=0 old off
    # A throttled feed (4 MiB pieces) keeps each attempt running long enough
    # to be killed at a random moment; the CLI resumes through the pipe.
    for ((i = 0; i < ITER; i++)); do
        (
            for ((k = 0; k < 16 * SCALE; k++)); do
                dd if="$BERTH_TEST_DIR/big" bs=4M skip=$k count=1 status=none || exit 0
                sleep 0.1
            done
        ) | berth content ingest rnd --expected-digest "$d" >"$BERTH_TEST_DIR/out" 2>&1 3>&- &
        BG_PIDS+=($!)
        sleep "0.$((RANDOM % 9 + 1))"
        old=$(plugin_field content pid)
        kill -9 "$old"
        kills=$((kills + 1))
        wait "${BG_PIDS[-1]}" || true
        berth_wait_for 30 plugin_restarted content "$old"
        off=$(berth content active --format json | jq -r '.[] | select(.ref == "rnd") | .offset')
        echo "kill $kills: resumable at ${off:-none}"
        check_blobs
        # Never a wrong or partial blob under that name.
        if [[ -e $BERTH_ROOT/content/blobs/sha256/${d#sha256:} ]]; then
            cmp "$BERTH_ROOT/content/blobs/sha256/${d#sha256:}" "$BERTH_TEST_DIR/big"
        fi
    done
    echo "kills: $kills"
    run berth content ingest rnd --expected-digest "$d" <"$BERTH_TEST_DIR/big"
    [ "$status" -eq 0 ]
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/big"
    [ -z "$(berth content active --format json | jq -r '.[].ref')" ]
}

@test "snapshot-overlay: kill -9 right after a prepare; the re-sent prepare completes the import" {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    tar=$(image_tar img3 3)
    export BERTH_FAILPOINTS="overlay.prepare.after=pause=3000"
    start '{"runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
    berth images import --base-name tl "$tar" >"$BERTH_TEST_DIR/imp.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    berth_wait_for 60 fp_hits_ge overlay.prepare.after 1
    old=$(plugin_field snapshot-overlay pid)
    kill -9 "$old"
    berth_wait_for 30 plugin_restarted snapshot-overlay "$old"
    st=0
    wait "${BG_PIDS[0]}" || st=$?
    cat "$BERTH_TEST_DIR/imp.out"
    [ "$st" -eq 0 ]
    run berth images check
    [[ $output == *complete*true* ]]
    [ -z "$(find "$BERTH_ROOT/snapshot-overlay/snapshots" -maxdepth 1 -name 'new-*')" ]
}

@test "berthd: kill -9 during pulls, again and again; every image ends complete" {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    # shellcheck source=/dev/null
    source "$BATS_TEST_DIRNAME/../e2e/lib/registry.bash"
    registry_require_tools
    registry_build_image "$FIX/pl" 4 "$SCALE"
    registry_start
    REG_STARTED=1
    registry_push "$FIX/pl" long:1
    start '{"runtime-runc": {"enabled": false}}'
    local i kids p
    for ((i = 0; i < ITER; i++)); do
        berth images rm "$REG/long:1" >/dev/null 2>&1 || true
        berth gc >/dev/null 2>&1 || true
        berth images pull --plain-http "$REG/long:1" >/dev/null 2>&1 3>&- &
        BG_PIDS+=($!)
        sleep "0.$((RANDOM % 9 + 1))"
        mapfile -t kids < <(ps -o pid= --ppid "$BERTH_PID" | tr -d ' ')
        kill -9 "$BERTH_PID"
        wait "$BERTH_PID" 2>/dev/null || true
        wait "${BG_PIDS[-1]}" 2>/dev/null || true
        for p in "${kids[@]}"; do
            berth_wait_for 15 bash -c "! kill -0 $p 2>/dev/null"
        done
        "$BERTH_BIN/berthd" --config "$BERTH_CONFIG" >>"$BERTH_LOG" 2>&1 &
        BERTH_PID=$!
        berth_wait_for 15 berth_rpc call version
        berth_wait_for 45 berth__ready
        run berth images check
        [[ $output != *long:1* || $output == *long:1*complete*true* ]]
        check_blobs
    done
    run berth images pull --plain-http "$REG/long:1"
    [ "$status" -eq 0 ]
    run berth images check "$REG/long:1"
    [[ $output == *complete*true* ]]
    [ -z "$(berth content active --format json | jq -r '.[].ref')" ]
}

@test "ulimit -n 64: parallel imports fail or succeed cleanly, the daemon keeps serving" {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    local t i st
    for i in 1 2 3 4; do t[$i]=$(image_tar "u$i" 3); done
    # The daemon and its plugins inherit the (soft) limit; the test raises
    # its own back afterwards.
    ulimit -S -n 64
    start '{"runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
    ulimit -S -n "$(ulimit -H -n)"
    [ "$(awk '/^Max open files/ {print $4}' /proc/"$BERTH_PID"/limits)" = 64 ]
    for i in 1 2 3 4; do
        berth -n "ns$i" images import --base-name "u$i" "${t[$i]}" >"$BERTH_TEST_DIR/u$i.out" 2>&1 3>&- &
        BG_PIDS+=($!)
    done
    for i in 1 2 3 4; do
        st=0
        wait "${BG_PIDS[$((i - 1))]}" || st=$?
        echo "import $i: status $st: $(tail -n 1 "$BERTH_TEST_DIR/u$i.out")"
        # A failure must say why (too many open files), not hang or crash.
        if [[ $st -ne 0 ]]; then
            grep -qi "too many open files\|resource\|unavailable" "$BERTH_TEST_DIR/u$i.out"
        fi
    done
    berth version >/dev/null
    # Retrying one by one succeeds.
    for i in 1 2 3 4; do
        berth -n "ns$i" images import --base-name "u$i" "${t[$i]}" >/dev/null
        run berth -n "ns$i" images check
        [[ $output == *complete*true* ]]
    done
    check_blobs
}
