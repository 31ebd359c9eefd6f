#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Faults and resource limits, short version (issue 9; the long one is
# scripts/torture.sh). Crash points are reached with failpoints
# (BERTH_FAILPOINTS in berthd's environment reaches every plugin): a
# `pause=MS` failpoint holds the plugin at exactly that point and the test
# kills it with SIGKILL there, so the restarted instance runs without dying
# again at the same place (a `crash` action would fire in every instance).
# After each crash: no wrong blob committed, nothing half-made listed, stale
# ingests and snapshots reconciled, the interrupted operation retried
# successfully. Then resource limits: idle connections, a client that never
# reads, slow event subscribers, a full disk; and a damaged LMDB file.
#
# Knobs (scripts/torture.sh sets them for the long run):
#   TORTURE_SCALE   multiplies sizes and counts (default 1)

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export SCALE=${TORTURE_SCALE:-1}
    export FIX
    FIX=$(mktemp -d /tmp/berth-torture.XXXXXX)
}

teardown_file() {
    [[ -n ${FIX:-} && -d $FIX ]] && rm -rf "$FIX"
}

setup() {
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash b
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins)"
    command -v jq >/dev/null || skip "jq not installed"
    # shellcheck source=/dev/null
    source "$lib"
    for b in berthd berth berth-content berth-metadata; do
        [[ -x $BERTH_BIN/$b ]] || skip "$b not built (looked in $BERTH_BIN)"
    done
    BG_PIDS=()
    TMPFS=
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
    if [[ -n ${TMPFS:-} ]]; then
        umount -l "$TMPFS" 2>/dev/null || true
        rmdir "$TMPFS" 2>/dev/null || true
        TMPFS=
    fi
    unset BERTH_FAILPOINTS BERTH_CONFIG_EXTRA
}

CONTENT_ONLY='{"snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
               "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
NO_RUNTIME='{"runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'

start() {
    # First: a daemon whose plugins never got ready must still be stopped.
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

need_plugin() {
    [[ -x $BERTH_BIN/berth-$1 ]] || skip "berth-$1 not built"
    [[ $(plugin_field "$1" status) == ok ]] || skip "plugin $1 is not running"
}

# How many times the daemon log says failpoint NAME was hit.
fp_hits() {
    grep -c "msg=\"failpoint hit\" failpoint=$1 " "$BERTH_LOG" || true
}

fp_hits_ge() { # NAME N
    [[ $(fp_hits "$1") -ge $2 ]]
}

# kill -9 of plugin ID once failpoint NAME has been hit N times (it is
# paused there), then wait for the core to restart it. Prints nothing.
kill_at() { # ID NAME N
    berth_wait_for 60 fp_hits_ge "$2" "$3" || {
        echo "failpoint $2 was not hit $3 times"
        return 1
    }
    local old
    old=$(plugin_field "$1" pid)
    kill -9 "$old"
    berth_wait_for 30 plugin_restarted "$1" "$old"
}

digest_of() {
    echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"
}

blob_file() {
    echo "$BERTH_ROOT/content/blobs/sha256/${1#sha256:}"
}

# No wrong blob: every committed blob's bytes hash to its name.
check_blobs() {
    local f n=0
    for f in "$BERTH_ROOT"/content/blobs/sha256/*; do
        [[ -e $f ]] || continue
        n=$((n + 1))
        if [[ $(sha256sum "$f" | cut -d' ' -f1) != "${f##*/}" ]]; then
            echo "blob $f does not match its digest"
            return 1
        fi
    done
    echo "$n blobs verified"
}

# wait PID, which must fail (`! wait` would not fail a bats test).
wait_fails() {
    local st=0
    wait "$1" || st=$?
    [ "$st" -ne 0 ]
}

listed() { # DIGEST: recorded in the default namespace
    berth content ls -q | grep -qx "$1"
}

active_refs() {
    berth content active --format json | jq -r '.[].ref'
}

# A busybox OCI image archive with LAYERS layers (built once per file).
image_tar() { # NAME LAYERS [SIZE_MB]
    local out=$FIX/$1.tar
    if [[ ! -f $out ]]; then
        command -v umoci >/dev/null || skip "umoci not installed"
        [[ -x /bin/busybox ]] || skip "busybox-static not installed"
        # shellcheck source=/dev/null
        source "$BATS_TEST_DIRNAME/lib/registry.bash"
        registry_build_image "$FIX/$1" "$2" "${3:-0}"
        tar -C "$FIX/$1" -cf "$out" .
    fi
    echo "$out"
}

# Snapshot directories on disk, excluding committed ones.
uncommitted_snapshot_dirs() {
    local d
    for d in "$BERTH_ROOT"/snapshot-overlay/snapshots/*; do
        [[ -d $d ]] || continue
        [[ -e $d/committed ]] || echo "${d##*/}"
    done
}

temp_snapshot_dirs() {
    find "$BERTH_ROOT/snapshot-overlay/snapshots" -mindepth 1 -maxdepth 1 \( -name 'new-*' -o -name 'rm-*' \) 2>/dev/null
}

# kill -9 berthd (its plugins die with it: PR_SET_PDEATHSIG) and start it
# again on the same root and state, without failpoints.
restart_berthd_hard() {
    local old=$BERTH_PID kids p
    mapfile -t kids < <(ps -o pid= --ppid "$old" | tr -d ' ')
    kill -9 "$old"
    wait "$old" 2>/dev/null || true
    for p in "${kids[@]}"; do
        berth_wait_for 15 berth_pid_gone "$p" || {
            echo "plugin pid $p survived berthd"
            return 1
        }
    done
    unset BERTH_FAILPOINTS
    start_berthd_again
}

start_berthd_again() {
    echo "---- berthd restarted by the test ----" >>"$BERTH_LOG"
    "$BERTH_BIN/berthd" --config "$BERTH_CONFIG" >>"$BERTH_LOG" 2>&1 &
    BERTH_PID=$!
    berth_wait_for 15 berth_rpc call version
    [[ ${1:-} == noready ]] && return 0
    berth_wait_for 45 berth__ready
}

# ---- content crash points ---------------------------------------------------

@test "content: kill -9 between linking the blob and recording it; both retries record it once" {
    export BERTH_FAILPOINTS="content.commit.after_link=pause=5000"
    start "$CONTENT_ONLY"
    head -c $((5 * SCALE * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/a"
    head -c $((3 * SCALE * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/b"
    da=$(digest_of "$BERTH_TEST_DIR/a")
    db=$(digest_of "$BERTH_TEST_DIR/b")
    berth content ingest link-a <"$BERTH_TEST_DIR/a" >"$BERTH_TEST_DIR/a.out" 2>&1 3>&- &
    pa=$!
    berth content ingest link-b --expected-digest "$db" <"$BERTH_TEST_DIR/b" >"$BERTH_TEST_DIR/b.out" 2>&1 3>&- &
    pb=$!
    BG_PIDS+=($pa $pb)
    kill_at content content.commit.after_link 2
    wait_fails "$pa"
    wait_fails "$pb"
    cat "$BERTH_TEST_DIR/a.out" "$BERTH_TEST_DIR/b.out"
    grep -q "restarted\|unavailable" "$BERTH_TEST_DIR/a.out"
    # The blobs are on disk and correct, but not recorded: not visible.
    [ -f "$(blob_file "$da")" ]
    [ -f "$(blob_file "$db")" ]
    check_blobs
    run ! listed "$da"
    run ! listed "$db"
    run berth content get "$da"
    [ "$status" -ne 0 ]
    [[ $output == *"not found"* ]]
    # The ingests stayed (their data is a second name of the blob).
    [[ $(active_refs) == *link-a* ]]
    # Retry A without a digest: the ingest starts over (never written through
    # the blob's second name) and the commit finds the blob.
    run berth content ingest link-a <"$BERTH_TEST_DIR/a"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$output" = "$da" ]
    # Retry B with its digest: nothing is sent again, the record is made.
    run berth content ingest link-b --expected-digest "$db" </dev/null
    [ "$status" -eq 0 ]
    [ "$output" = "$db" ]
    listed "$da"
    listed "$db"
    berth content get "$da" | cmp - "$BERTH_TEST_DIR/a"
    berth content get "$db" | cmp - "$BERTH_TEST_DIR/b"
    [ -z "$(active_refs)" ]
    [ -z "$(ls -A "$BERTH_ROOT/content/ingest")" ]
    check_blobs
    [ "$(stat -c %h "$(blob_file "$da")")" = 1 ]
}

@test "content: kill -9 after the data is verified, before the link: no blob, resumable, retried" {
    export BERTH_FAILPOINTS="content.commit.before_link=pause=5000"
    start "$CONTENT_ONLY"
    head -c $((20 * SCALE * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/c"
    d=$(digest_of "$BERTH_TEST_DIR/c")
    size=$(stat -c %s "$BERTH_TEST_DIR/c")
    berth content ingest pre-link --expected-digest "$d" <"$BERTH_TEST_DIR/c" >"$BERTH_TEST_DIR/c.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    kill_at content content.commit.before_link 1
    wait_fails "${BG_PIDS[0]}"
    [ ! -e "$(blob_file "$d")" ]
    run ! listed "$d"
    off=$(berth content active --format json | jq -r '.[] | select(.ref == "pre-link") | .offset')
    echo "resumable at $off of $size"
    [ "$off" -le "$size" ]
    run berth content ingest pre-link --expected-digest "$d" <"$BERTH_TEST_DIR/c"
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/c"
    [ -z "$(active_refs)" ]
    check_blobs
}

@test "content: kill -9 mid-write right after a durable offset; resumes from it" {
    export BERTH_FAILPOINTS="content.ingest.after_sync=once:pause=5000"
    start "$CONTENT_ONLY"
    head -c $((24 * SCALE * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/m"
    d=$(digest_of "$BERTH_TEST_DIR/m")
    berth content ingest mid-1 --expected-digest "$d" <"$BERTH_TEST_DIR/m" >/dev/null 2>&1 3>&- &
    BG_PIDS+=($!)
    kill_at content content.ingest.after_sync 1
    wait_fails "${BG_PIDS[0]}"
    off=$(berth content active --format json | jq -r '.[] | select(.ref == "mid-1") | .offset')
    echo "durable offset: $off"
    # The first sync happens at sync_bytes (8 MiB).
    [ "$off" -eq 8388608 ]
    [ ! -e "$(blob_file "$d")" ]
    run berth content ingest mid-1 --expected-digest "$d" <"$BERTH_TEST_DIR/m"
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/m"
    grep -q 'msg="ingest open".*ref="mid-1".*offset=8388608' "$BERTH_LOG"
    check_blobs
}

@test "content: an I/O error mid-write fails that write only; the ingest resumes" {
    export BERTH_FAILPOINTS="content.ingest.write=once:error"
    start "$CONTENT_ONLY"
    head -c $((6 * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/e"
    d=$(digest_of "$BERTH_TEST_DIR/e")
    run berth content ingest io-1 --expected-digest "$d" <"$BERTH_TEST_DIR/e"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ $output == *"write data of ref io-1"* ]]
    [ "$(plugin_field content restarts)" = 0 ]
    [[ $(active_refs) == *io-1* ]]
    run berth content ingest io-1 --expected-digest "$d" <"$BERTH_TEST_DIR/e"
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    check_blobs
}

# ---- snapshot-overlay crash points ---------------------------------------------

@test "snapshot-overlay: kill -9 between apply and commit; the re-sent commit completes the import" {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    tar=$(image_tar img2 2)
    export BERTH_FAILPOINTS="overlay.commit.before=pause=3000"
    start "$NO_RUNTIME"
    need_plugin transfer
    berth images import --base-name torture "$tar" >"$BERTH_TEST_DIR/imp.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    kill_at snapshot-overlay overlay.commit.before 1
    # overlayfs.commit is idempotent: the core re-sends it to the new
    # instance and the import goes on by itself.
    st=0
    wait "${BG_PIDS[0]}" || st=$?
    cat "$BERTH_TEST_DIR/imp.out"
    [ "$st" -eq 0 ]
    [ "$(plugin_field snapshot-overlay restarts)" = 1 ]
    img=$(berth images ls -q | head -n 1)
    [ -n "$img" ]
    run berth images check "$img"
    echo "$output"
    [[ $output == *complete*true* ]]
    [ -z "$(temp_snapshot_dirs)" ]
    [ -z "$(uncommitted_snapshot_dirs)" ]
    check_blobs
}

@test "snapshot-overlay: kill -9 after a layer is applied, before its caller hears: import retried, leftovers reconciled" {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    [[ -x $BERTH_BIN/berth-gc ]] || skip "berth-gc not built"
    tar=$(image_tar img2 2)
    export BERTH_FAILPOINTS="overlay.apply.after_done=once:pause=4000"
    start '{"runtime-runc": {"enabled": false}}'
    need_plugin transfer
    berth images import --base-name torture "$tar" >"$BERTH_TEST_DIR/imp.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    kill_at snapshot-overlay overlay.apply.after_done 1
    st=0
    wait "${BG_PIDS[0]}" || st=$?
    cat "$BERTH_TEST_DIR/imp.out"
    if [[ $st -ne 0 ]]; then
        # The interrupted import failed: no half-made image is listed.
        grep -q "unavailable\|restarted" "$BERTH_TEST_DIR/imp.out"
        run berth images check
        echo "$output"
        [[ $output != *torture* ]] || [[ $output == *torture*complete*true* ]]
        # Retry.
        run berth images import --base-name torture "$tar"
        echo "$output"
        [ "$status" -eq 0 ]
    fi
    img=$(berth images ls -q | head -n 1)
    [ -n "$img" ]
    run berth images check "$img"
    echo "$output"
    [[ $output == *complete*true* ]]
    # The snapshot the killed apply left behind is reconciled: collected.
    berth gc >/dev/null
    echo "uncommitted: $(uncommitted_snapshot_dirs | tr '\n' ' ')"
    [ -z "$(uncommitted_snapshot_dirs)" ]
    [ -z "$(temp_snapshot_dirs)" ]
    check_blobs
}

@test "berthd: kill -9 mid-pull; after restart no half-pulled image is listed, the pull completes" {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    # shellcheck source=/dev/null
    source "$BATS_TEST_DIRNAME/lib/registry.bash"
    registry_require_tools
    [[ -f $FIX/pull/index.json ]] || registry_build_image "$FIX/pull" 3 $((2 * SCALE))
    registry_start
    REG_STARTED=1
    registry_push "$FIX/pull" torture:1
    # Hold the pull after its first layer is unpacked, then kill the daemon.
    export BERTH_FAILPOINTS="overlay.apply.after_done=pause=4000"
    start '{"runtime-runc": {"enabled": false}}'
    need_plugin transfer
    berth images pull --plain-http "$REG/torture:1" >"$BERTH_TEST_DIR/pull.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    berth_wait_for 60 fp_hits_ge overlay.apply.after_done 1
    restart_berthd_hard
    wait_fails "${BG_PIDS[0]}"
    # Not listed as an image, or listed only if complete.
    run berth images check
    echo "$output"
    [[ $output != *torture* ]] || [[ $output == *torture*complete*true* ]]
    run berth images pull --plain-http "$REG/torture:1"
    echo "$output"
    [ "$status" -eq 0 ]
    run berth images check "$REG/torture:1"
    echo "$output"
    [[ $output == *complete*true* ]]
    # Leftovers of the killed pull: no temp dirs, no stale ingests.
    [ -z "$(temp_snapshot_dirs)" ]
    [ -z "$(active_refs)" ]
    check_blobs
}

# ---- a damaged metadata database -------------------------------------------------

# Stops berthd (SIGTERM), keeping root and state.
stop_berthd_keep() {
    kill -TERM "$BERTH_PID"
    wait "$BERTH_PID" 2>/dev/null || true
}

# Deterministic garbage: COUNT pages of bytes from a seeded generator.
garbage_pages() { # SEED COUNT
    /usr/bin/python3 -c 'import random, sys
random.seed(int(sys.argv[1]))
sys.stdout.buffer.write(bytes(random.getrandbits(8) for _ in range(4096 * int(sys.argv[2]))))' "$1" "$2"
}

# damaged_db_case truncate|meta|data SEED...: fills a database, stops the
# daemon, then for each SEED damages a pristine copy of meta.lmdb that way and
# starts berthd on it.
damaged_db_case() {
    local kind=$1
    shift
    start '{"snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
            "runtime-runc": {"enabled": false},
            "gc": {"config": {"orphan_grace": "0s", "startup_delay": "0ms"}}}'
    local i
    for i in $(seq 1 40); do
        berth namespaces create "ns-$i" >/dev/null
    done
    # Roots: gc must keep them; with metadata gone it must not take them
    # for orphans either.
    printf 'keep me' | berth content ingest keep-1 --label berth.io/gc.root=1 >/dev/null
    head -c 100000 /dev/urandom | berth content ingest keep-2 --label berth.io/gc.root=1 >/dev/null
    local blobs_before db=$BERTH_ROOT/metadata/meta.lmdb
    blobs_before=$(ls "$BERTH_ROOT/content/blobs/sha256" | sort)
    [ "$(wc -l <<<"$blobs_before")" -ge 2 ]
    stop_berthd_keep
    cp "$db" "$BERTH_TEST_DIR/pristine.lmdb"
    local size pages seed from bad=0
    size=$(stat -c %s "$db")
    pages=$((size / 4096))
    echo "meta.lmdb: $size bytes ($pages pages)"
    for seed in "${@:-0}"; do
        cat "$BERTH_TEST_DIR/pristine.lmdb" >"$db"
        case $kind in
        truncate) truncate -s 8192 "$db" ;;
        meta) garbage_pages "$seed" 2 | dd of="$db" bs=4096 conv=notrunc status=none ;;
        data)
            [ "$pages" -ge 4 ]
            garbage_pages "$seed" $((pages - 2)) | dd of="$db" bs=4096 seek=2 conv=notrunc status=none
            ;;
        esac
        local sum_damaged ino
        sum_damaged=$(sha256sum "$db" | cut -d' ' -f1)
        ino=$(stat -c %i "$db")
        from=$(($(wc -l <"$BERTH_LOG") + 1))
        start_berthd_again noready
        # Refused with a clear message naming the file (not a crash loop).
        # Wait for the verdict: the message, or metadata dying three times.
        berth_wait_for 20 bash -c "tail -n +$from '$BERTH_LOG' | grep -q 'refuses to start' ||
            [ \$(tail -n +$from '$BERTH_LOG' | grep -c 'msg=\"plugin exited\" plugin=metadata') -ge 3 ]" || true
        if tail -n +"$from" "$BERTH_LOG" | grep -q 'refuses to start'; then
            tail -n +"$from" "$BERTH_LOG" | grep "refuses to start" | head -1 | grep -q "meta.lmdb"
            echo "seed $seed: refused: $(tail -n +"$from" "$BERTH_LOG" | grep -o 'err="[^;]*' | head -1)"
        else
            echo "seed $seed: NOT refused with a message; metadata exits: $(tail -n +"$from" "$BERTH_LOG" |
                grep -o 'plugin=metadata pid=[0-9]* exit="[^"]*"' | sort -u | head -3 | tr '\n' ' ')"
            bad=1
        fi
        # The core keeps serving, and the other plugins run.
        berth version >/dev/null
        [ "$(plugin_field content status)" = ok ]
        [ "$(plugin_field metadata status)" != ok ]
        # Requests that need metadata fail instead of hanging.
        run berth --timeout 3s namespaces ls
        [ "$status" -ne 0 ]
        # GC cannot collect without metadata, and never deletes content
        # because metadata went missing.
        run berth --timeout 3s gc
        [ "$status" -ne 0 ]
        sleep 1
        [ "$(ls "$BERTH_ROOT/content/blobs/sha256" | sort)" = "$blobs_before" ]
        # Never recreated, never rewritten.
        [ "$(stat -c %i "$db")" = "$ino" ]
        [ "$(sha256sum "$db" | cut -d' ' -f1)" = "$sum_damaged" ]
        stop_berthd_keep
    done
    # berth_stop_daemon in teardown: start once more on the pristine copy.
    cat "$BERTH_TEST_DIR/pristine.lmdb" >"$db"
    start_berthd_again
    [ "$(berth namespaces ls -q | grep -c '^ns-')" -eq 40 ]
    [ "$bad" -eq 0 ]
}

@test "metadata: a truncated meta.lmdb is refused with a clear message; the rest keeps serving" {
    [[ -x $BERTH_BIN/berth-gc ]] || skip "berth-gc not built"
    damaged_db_case truncate 0
}

@test "metadata: garbage over the meta pages is refused; the rest keeps serving" {
    [[ -x $BERTH_BIN/berth-gc ]] || skip "berth-gc not built"
    damaged_db_case meta 1 2
}

@test "metadata: garbage over the data pages is refused with a message, never a crash loop" {
    [[ -x $BERTH_BIN/berth-gc ]] || skip "berth-gc not built"
    damaged_db_case data 1 2 3
}

# ---- resource limits -------------------------------------------------------------

# The raw client (tests/e2e/tools/berth_stress.py) needs Debian's
# python3-msgpack; its shebang names /usr/bin/python3 for that reason.
need_stress() {
    STRESS=$BATS_TEST_DIRNAME/tools/berth_stress.py
    /usr/bin/python3 -c 'import msgpack' 2>/dev/null || skip "python3-msgpack not installed"
}

fd_count() {
    ls /proc/"$1"/fd | wc -l
}

@test "1,000 idle (and half-framed) connections: others are served, berthd stays under its fd limit" {
    need_stress
    start "$CONTENT_ONLY"
    local n=$((1000 * SCALE)) limit
    limit=$(awk '/^Max open files/ {print $5}' /proc/"$BERTH_PID"/limits)
    echo "berthd hard fd limit: $limit"
    [ "$limit" -le 20000 ]
    fds0=$(fd_count "$BERTH_PID")
    mkfifo "$BERTH_TEST_DIR/hold"
    "$STRESS" "$BERTH_SOCK" idle "$n" 120 \
        <"$BERTH_TEST_DIR/hold" >"$BERTH_TEST_DIR/idle.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    exec 5>"$BERTH_TEST_DIR/hold"
    berth_wait_for 60 grep -q "^open $n" "$BERTH_TEST_DIR/idle.out"
    # connect() returns once the kernel queued the connection; wait for
    # berthd to have accepted them all.
    berth_wait_for 30 bash -c "[ \$(ls /proc/$BERTH_PID/fd | wc -l) -ge $((fds0 + n)) ]" || true
    fds=$(fd_count "$BERTH_PID")
    echo "berthd fds: $fds0 before, $fds with $n idle connections"
    [ "$fds" -ge $((fds0 + n)) ]
    [ "$fds" -lt 20000 ]
    # Others are served promptly meanwhile.
    t0=$(date +%s%N)
    for i in $(seq 1 20); do berth version >/dev/null; done
    printf 'served' | berth content ingest idle-1 >/dev/null
    t1=$(date +%s%N)
    echo "20 calls and an ingest: $(((t1 - t0) / 1000000)) ms"
    [ $(((t1 - t0) / 1000000)) -lt 10000 ]
    # Idle clients are not dropped for being idle.
    exec 5>&-
    berth_wait_for 30 grep -q "^still-open" "$BERTH_TEST_DIR/idle.out"
    cat "$BERTH_TEST_DIR/idle.out"
    grep -q "^still-open $n" "$BERTH_TEST_DIR/idle.out"
    # Their fds are released once they are gone.
    wait "${BG_PIDS[0]}" || true
    berth_wait_for 20 bash -c "[ \$(ls /proc/$BERTH_PID/fd | wc -l) -le $((fds0 + 10)) ]"
}

@test "a client that never reads a large stream: closed past the write-queue limit, others served" {
    need_stress
    start "$CONTENT_ONLY"
    head -c $((16 * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/big"
    d=$(berth content ingest big-1 <"$BERTH_TEST_DIR/big")
    # Flow control alone keeps a non-reading client at 8 chunks per stream;
    # 12 streams (96 MiB) exceed the 64 MiB write queue of its connection.
    "$STRESS" "$BERTH_SOCK" noread "$d" 12 30 \
        >"$BERTH_TEST_DIR/noread.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    # A hostile one acknowledging chunks it never read is closed too (6
    # streams: 48 MiB would fit under flow control, 96 MiB do not).
    "$STRESS" "$BERTH_SOCK" noread "$d" 6 30 --ack \
        >"$BERTH_TEST_DIR/noread-ack.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    # Meanwhile others are served.
    for i in 1 2 3; do
        berth content get "$d" | cmp - "$BERTH_TEST_DIR/big"
    done
    wait "${BG_PIDS[0]}"
    wait "${BG_PIDS[1]}"
    cat "$BERTH_TEST_DIR/noread.out" "$BERTH_TEST_DIR/noread-ack.out"
    grep -q "^closed" "$BERTH_TEST_DIR/noread.out"
    grep -q "^closed" "$BERTH_TEST_DIR/noread-ack.out"
    grep -q "write queue over its limit, closing connection" "$BERTH_LOG"
    # The reads of the closed clients were cancelled in content; it serves on.
    [ "$(plugin_field content restarts)" = 0 ]
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/big"
    berth_wait_for 10 bash -c "[ \$(ls /proc/\$(berth_plugin_pid content)/fd | wc -l) -lt 40 ]"
}

@test "16 concurrent reads of a 32 MiB blob all complete; content keeps its connection to the core" {
    start "$CONTENT_ONLY"
    head -c $((32 * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/r"
    d=$(berth content ingest r-1 <"$BERTH_TEST_DIR/r")
    local pids=() i st=0
    for i in $(seq 1 $((16 * SCALE))); do
        berth content get "$d" >"$BERTH_TEST_DIR/r.$i" 2>"$BERTH_TEST_DIR/r.$i.err" 3>&- &
        pids+=($!)
    done
    BG_PIDS+=("${pids[@]}")
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { st=1; cat "$BERTH_TEST_DIR/r.$((i + 1)).err"; }
    done
    for i in $(seq 1 $((16 * SCALE))); do
        cmp "$BERTH_TEST_DIR/r" "$BERTH_TEST_DIR/r.$i"
    done
    [ "$st" -eq 0 ]
    # Many streams each within their window must not add up to a plugin
    # closing its own connection to the core (and crash-looping on the
    # re-sent reads).
    run ! grep -q "write queue over its limit" "$BERTH_LOG"
    [ "$(plugin_field content restarts)" = 0 ]
}

@test "200 slow event subscribers never stall a plugin; they are told what they missed" {
    need_stress
    start "$CONTENT_ONLY"
    local n=$((200 * SCALE)) ev=$((600 * SCALE)) upd='{"name": "default", "labels": {"k": "v"}}'
    # Each namespaces.update publishes /namespaces/update. Baseline latency
    # with no subscriber:
    base=$(berth_rpc lat namespaces.update 100 "$upd")
    echo "alone: $base"
    mkfifo "$BERTH_TEST_DIR/hold"
    "$STRESS" "$BERTH_SOCK" subscribe "$n" 120 \
        <"$BERTH_TEST_DIR/hold" >"$BERTH_TEST_DIR/subs.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    exec 5>"$BERTH_TEST_DIR/hold"
    berth_wait_for 30 grep -q "^subscribed $n" "$BERTH_TEST_DIR/subs.out"
    loaded=$(berth_rpc lat namespaces.update "$ev" "$upd")
    echo "with $n stalled subscribers: $loaded"
    [[ $loaded == *"failed=0 "* ]]
    bm=$(sed 's/.*median_us=\([0-9]*\).*/\1/' <<<"$base")
    lm=$(sed 's/.*median_us=\([0-9]*\).*/\1/' <<<"$loaded")
    # Publishing to 200 stalled subscribers costs the publisher little.
    [ "$lm" -le $((10 * bm + 5000)) ]
    [ "$(plugin_field metadata restarts)" = 0 ]
    exec 5>&-
    berth_wait_for 30 grep -q "^subs [0-9]" "$BERTH_TEST_DIR/subs.out"
    cat "$BERTH_TEST_DIR/subs.out"
    read -r _ subs _ events _ dropped _ closed < <(grep "^subs [0-9]" "$BERTH_TEST_DIR/subs.out")
    [ "$subs" -eq "$n" ]
    # Each got its window and backlog; what did not fit was counted, and the
    # count reached the subscriber.
    [ "$events" -ge "$n" ]
    [ "$dropped" -gt 0 ]
    [ "$closed" -eq 0 ]
}

@test "a full disk during an ingest: resource_exhausted, partial ingest removed, daemon serves on" {
    TMPFS=$(mktemp -d /tmp/berth-torture-fs.XXXXXX)
    mount -t tmpfs -o size=48m,mode=0711 tmpfs "$TMPFS" || skip "cannot mount tmpfs"
    export BERTH_CONFIG_EXTRA="{\"root\": \"$TMPFS/root\"}"
    start "$CONTENT_ONLY"
    BERTH_ROOT=$TMPFS/root
    [ "$(stat -f -c %T "$BERTH_ROOT")" = tmpfs ]
    head -c $((64 * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/huge"
    run berth content ingest full-1 <"$BERTH_TEST_DIR/huge"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ $output == *"No space left on device"* ]]
    [[ $output == *"removed to free its space"* ]]
    # Partial state cleaned: no ingest, no blob, the space is free again.
    [ -z "$(active_refs)" ]
    [ -z "$(ls -A "$BERTH_ROOT/content/ingest")" ]
    [ -z "$(ls -A "$BERTH_ROOT/content/blobs/sha256")" ]
    used=$(df -k --output=used "$TMPFS" | tail -1)
    echo "used after: $used KiB"
    [ "$used" -lt 8192 ]
    # The daemon keeps serving: a blob that fits is stored and read back.
    head -c $((8 * 1024 * 1024)) /dev/urandom >"$BERTH_TEST_DIR/fits"
    d=$(berth content ingest fits-1 <"$BERTH_TEST_DIR/fits")
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/fits"
    [ "$(plugin_field content restarts)" = 0 ]
    [ "$(plugin_field metadata restarts)" = 0 ]
    check_blobs
}

# ---- metadata, transfer and gc crash points ----------------------------------------

D_TX=sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03

# images.create PARAMS for image NAME in namespace NS (optionally with a
# request_id RID). The target need not exist in content.
img_params() { # NS NAME [RID]
    local p
    p="{\"namespace\": \"$1\", \"image\": {\"name\": \"$2\", \"target\": {\"media_type\": \"application/vnd.oci.image.manifest.v1+json\", \"digest\": \"$D_TX\", \"size\": 1}}"
    [[ -n ${3:-} ]] && p+=", \"request_id\": \"$3\""
    echo "$p}"
}

images_in() { # NS
    berth_rpc call images.list "{\"namespace\": \"$1\"}" | jq -r '.images[].name'
}

# 30 namespaces with a label each and an image in each: acknowledged writes
# made by a daemon without failpoints, which is then stopped (root kept).
metadata_baseline() {
    start "$CONTENT_ONLY"
    local i
    for i in $(seq 1 30); do
        berth namespaces create "base-$i" "n=$i" >/dev/null
        berth_rpc call images.create "$(img_params "base-$i" "docker.io/base/img:$i")" >/dev/null
    done
    stop_berthd_keep
}

metadata_baseline_intact() {
    local i
    [ "$(berth namespaces ls -q | grep -c '^base-')" -eq 30 ]
    for i in 1 17 30; do
        berth namespaces ls | grep -q "^base-$i .*n=$i"
        [ "$(images_in "base-$i")" = "docker.io/base/img:$i" ]
    done
}

@test "metadata: kill -9 mid-transaction (before commit): the batch is all-or-nothing, nothing committed is lost" {
    metadata_baseline
    export BERTH_FAILPOINTS="metadata.txn.before_commit=once:pause=4000"
    start_berthd_again
    # A: an image in a new namespace, one write of two records (namespace
    # and image). It waits at the commit of its batch...
    berth_rpc call images.create "$(img_params tx-new docker.io/new/img:1)" >"$BERTH_TEST_DIR/a.out" 2>&1 3>&- &
    pa=$!
    BG_PIDS+=($pa)
    berth_wait_for 30 fp_hits_ge metadata.txn.before_commit 1
    # ... B (with a request_id) is queued behind it, then metadata dies.
    berth_rpc call images.create "$(img_params tx-b docker.io/b/img:1 rid-b-1)" >"$BERTH_TEST_DIR/b.out" 2>&1 3>&- &
    pb=$!
    BG_PIDS+=($pb)
    # B is in the plugin (A and B in flight) before the kill.
    berth_wait_for 20 eval '(($(plugin_field metadata in_flight) >= 2))'
    kill_at metadata metadata.txn.before_commit 1
    # A was not acknowledged and is not applied, neither of its records.
    wait_fails "$pa"
    cat "$BERTH_TEST_DIR/a.out"
    grep -q "unavailable.*may have been partly applied" "$BERTH_TEST_DIR/a.out"
    run ! bash -c "$BERTH namespaces ls -q | grep -qx tx-new"
    [ -z "$(images_in tx-new)" ]
    # B carried a request_id: the core re-sent it to the new instance.
    st=0
    wait "$pb" || st=$?
    cat "$BERTH_TEST_DIR/b.out"
    [ "$st" -eq 0 ]
    [ "$(images_in tx-b)" = "docker.io/b/img:1" ]
    grep -q 'msg="re-sending request to the next instance" plugin=metadata method=images.create' "$BERTH_LOG"
    # Everything acknowledged before the crash is there; the file is sound
    # (metadata reads every page at start).
    metadata_baseline_intact
    [ "$(plugin_field metadata restarts)" = 1 ]
    # The interrupted write, retried, applies once.
    berth_rpc call images.create "$(img_params tx-new docker.io/new/img:1)" >/dev/null
    [ "$(images_in tx-new)" = "docker.io/new/img:1" ]
    berth namespaces ls -q | grep -qx tx-new
}

@test "metadata: kill -9 right after a commit: the unacknowledged batch is kept whole, its re-sent request answered from the replay record" {
    metadata_baseline
    export BERTH_FAILPOINTS="metadata.txn.after_commit=once:pause=4000"
    start_berthd_again
    berth_rpc call images.create "$(img_params tx-after docker.io/after/img:1 rid-after-1)" >"$BERTH_TEST_DIR/a.out" 2>&1 3>&- &
    pa=$!
    BG_PIDS+=($pa)
    kill_at metadata metadata.txn.after_commit 1
    # Committed before the kill: the namespace and the image both exist, and
    # the re-sent request got the recorded result (executing it again would
    # have failed with already_exists).
    st=0
    wait "$pa" || st=$?
    cat "$BERTH_TEST_DIR/a.out"
    [ "$st" -eq 0 ]
    jq -e '.image.name == "docker.io/after/img:1"' "$BERTH_TEST_DIR/a.out"
    grep -q 'msg="re-sending request to the next instance" plugin=metadata method=images.create' "$BERTH_LOG"
    [ "$(images_in tx-after)" = "docker.io/after/img:1" ]
    berth namespaces ls -q | grep -qx tx-after
    # Without the request_id it is a new request: already there.
    run berth_rpc call images.create "$(img_params tx-after docker.io/after/img:1)"
    [ "$status" -ne 0 ]
    [[ $output == *already_exists* ]]
    metadata_baseline_intact
}

# A 3-layer image in a local registry (built once per file) as $REG/torture:1.
registry_fixture() {
    [[ -x $BERTH_BIN/berth-transfer && -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "transfer/snapshot-overlay not built"
    # shellcheck source=/dev/null
    source "$BATS_TEST_DIRNAME/lib/registry.bash"
    registry_require_tools
    [[ -f $FIX/pull/index.json ]] || registry_build_image "$FIX/pull" 3 $((2 * SCALE))
    registry_start
    REG_STARTED=1
    registry_push "$FIX/pull" torture:1
}

# After a pull was killed: nothing half-made is listed and every blob is
# right; then the retried pull completes.
pull_killed_then_retried() {
    wait_fails "${BG_PIDS[0]}"
    cat "$BERTH_TEST_DIR/pull.out"
    grep -q "unavailable\|restarted" "$BERTH_TEST_DIR/pull.out"
    [ -z "$(berth images ls -q)" ]
    check_blobs
    [ "$(plugin_field transfer restarts)" = 1 ]
    run berth images pull --plain-http "$REG/torture:1"
    echo "$output"
    [ "$status" -eq 0 ]
    run berth images check "$REG/torture:1"
    echo "$output"
    [[ $output == *complete*true* ]]
    [ -z "$(active_refs)" ]
    [ -z "$(temp_snapshot_dirs)" ]
    check_blobs
}

# Starts a pull that stops at transfer's failpoint FP, and kills transfer there.
pull_killed_at() { # FP
    registry_fixture
    export BERTH_FAILPOINTS="$1=once:pause=3000"
    start "$NO_RUNTIME"
    need_plugin transfer
    berth images pull --plain-http "$REG/torture:1" >"$BERTH_TEST_DIR/pull.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    kill_at transfer "$1" 1
}

@test "transfer: kill -9 after a layer is committed: no half-pulled image listed, the retried pull completes" {
    pull_killed_at transfer.pull.after_layer
    # The layer is committed in content: correct, not part of any image.
    [ "$(berth content ls -q | wc -l)" -ge 1 ]
    pull_killed_then_retried
}

@test "transfer: kill -9 with every layer unpacked, before the image is recorded: nothing listed, the retry records it" {
    pull_killed_at transfer.pull.before_image_create
    # All blobs (index or manifest, config, 3 layers) are in, the image is not.
    [ "$(berth content ls -q | wc -l)" -ge 5 ]
    pull_killed_then_retried
}

@test "gc: kill -9 mid-sweep after the first deletion: referenced content intact, the next collection completes" {
    [[ -x $BERTH_BIN/berth-gc ]] || skip "berth-gc not built"
    export BERTH_FAILPOINTS="gc.sweep.after_first_delete=once:pause=3000"
    start '{"snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
            "runtime-runc": {"enabled": false},
            "gc": {"config": {"startup_delay": "0ms", "deletion_threshold": 1000000,
                              "mutation_threshold": 0, "max_concurrent_deletes": 1}}}'
    local i garbage=() keep=()
    for i in $(seq 1 12); do
        garbage+=("$(printf 'garbage %d' "$i" | berth content ingest "junk-$i")")
    done
    for i in 1 2; do
        head -c 200000 /dev/urandom >"$BERTH_TEST_DIR/keep-$i"
        keep+=("$(berth content ingest "keep-$i" --label berth.io/gc.root=1 <"$BERTH_TEST_DIR/keep-$i")")
    done
    old=$(plugin_field gc pid)
    berth gc >"$BERTH_TEST_DIR/gc1.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    kill_at gc gc.sweep.after_first_delete 1
    # One blob was deleted before the kill, the rest not yet.
    left() {
        local d n=0
        for d in "${garbage[@]}"; do
            [[ -e $(blob_file "$d") ]] && n=$((n + 1))
        done
        echo "$n"
    }
    echo "garbage left at the kill: $(left)"
    [ "$(left)" -lt 12 ]
    # The restarted gc's startup collection finishes the sweep by itself.
    none_left() { [ "$(left)" -eq 0 ]; }
    berth_wait_for 30 none_left
    # gc.run is idempotent: the interrupted `berth gc` was re-sent and passed.
    st=0
    wait "${BG_PIDS[0]}" || st=$?
    cat "$BERTH_TEST_DIR/gc1.out"
    [ "$st" -eq 0 ]
    # Referenced content is intact and listed; only it is left.
    for i in 1 2; do
        berth content get "${keep[$((i - 1))]}" | cmp - "$BERTH_TEST_DIR/keep-$i"
    done
    [ "$(berth content ls -q | sort)" = "$(printf '%s\n' "${keep[@]}" | sort)" ]
    check_blobs
    # The next collection completes clean: no tombstone left pending.
    run berth gc --format json
    echo "$output"
    [ "$status" -eq 0 ]
    jq -e '.stats.failed == 0 and .stats.pending == 0' <<<"$output"
    # Tombstones were dropped: the same bytes can be stored again.
    again=$(printf 'garbage 5' | berth content ingest junk-again --label berth.io/gc.root=1)
    [ "$again" = "${garbage[4]}" ]
    [ "$(plugin_field gc pid)" != "$old" ]
}
