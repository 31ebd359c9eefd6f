#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# berth-content through the real daemon and the CLI: ingest/get round trips,
# kill -9 of the plugin in the middle of a 200 MiB ingest and resume from the
# durable offset, digest mismatch, ref locking, namespace isolation and
# concurrent ingests of the same bytes.

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export T=$(mktemp -d /tmp/berth-content-e2e.XXXXXX)
}

teardown_file() {
    rm -rf "$T"
}

setup() {
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    [[ -x $BERTH_BIN/berthd ]] || skip "berthd not built (looked in $BERTH_BIN)"
    [[ -x $BERTH_BIN/berth ]] || skip "berth (CLI) not built"
    [[ -x $BERTH_BIN/berth-content ]] || skip "berth-content not built"
    [[ -x $BERTH_BIN/berth-metadata ]] || skip "berth-metadata not built"
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins)"
    command -v jq >/dev/null || skip "jq not installed"
    # shellcheck source=/dev/null
    source "$lib"
    # Only the core, content and metadata: these tests need nothing else.
    berth_start_daemon '{"snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
                         "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
    DAEMON_STARTED=1
    BG_PIDS=()
}

teardown() {
    local p
    for p in "${BG_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        berth_stop_daemon
        DAEMON_STARTED=
    fi
    rm -f "$T"/fifo* "$T"/*.out "$T"/*.err
}

digest_of() {
    echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"
}

content_pid() {
    $BERTH plugins ls --format json | jq -r '.[] | select(.id == "content") | .pid // 0'
}

content_status() {
    $BERTH plugins ls --format json | jq -r '.[] | select(.id == "content") | .status'
}

# Waits (up to $2 tenths of a second) for a command to succeed.
wait_for() {
    local cmd=$1 n=${2:-100}
    while ((n-- > 0)); do
        if eval "$cmd"; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for: $cmd" >&2
    return 1
}

# Feeds file $1 into fifo $2 in 4 MiB pieces with a pause after each, so an
# ingest reading the fifo is still running when a test interferes.
slow_feed() {
    local f=$1 fifo=$2 pause=${3:-0.1}
    local size n i
    size=$(stat -c %s "$f")
    n=$(((size + 4194303) / 4194304))
    (
        for ((i = 0; i < n; i++)); do
            dd if="$f" bs=4M skip=$i count=1 status=none || exit 0
            sleep "$pause"
        done
    ) >"$fifo" &
    BG_PIDS+=($!)
}

@test "content ingest, ls, get: identical bytes, digest printed, listed in the namespace" {
    head -c 3000000 /dev/urandom >"$T/small"
    d=$(digest_of "$T/small")
    run $BERTH content ingest small-1 --expected-digest "$d" --expected-size 3000000 <"$T/small"
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    $BERTH content get "$d" >"$T/small.out"
    cmp "$T/small" "$T/small.out"
    run $BERTH content ls
    [ "$status" -eq 0 ]
    [[ ${lines[0]} == DIGEST*SIZE*AGE*LABELS* ]]
    [[ $output == *"$d"*"3MB"* ]]
    run $BERTH content ls -q
    [[ $output == *"$d"* ]]
    [ "$($BERTH content ls --format json | jq -r --arg d "$d" '.[] | select(.digest == $d) | .size')" = 3000000 ]
    # Committed blobs are read-only files named by their digest.
    [ "$(stat -c %a "$BERTH_ROOT/content/blobs/sha256/${d#sha256:}")" = 444 ]
    # Nothing is left in progress.
    [ "$($BERTH content active --format json | jq length)" = 0 ]
    # A second ingest of the same digest does not send the bytes again.
    run $BERTH content ingest small-2 --expected-digest "$d" </dev/null
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    # Partial reads are not exposed by the CLI; an unknown digest is an error.
    run $BERTH content get sha256:0000000000000000000000000000000000000000000000000000000000000000
    [ "$status" -ne 0 ]
    [[ $output == *"not found"* ]]
    run $BERTH content get sha512:abcd
    [ "$status" -ne 0 ]
    [[ $output == *"sha256"* ]]
}

@test "kill -9 of berth-content half way through a 200 MiB ingest: resumes from its durable offset" {
    head -c $((200 * 1024 * 1024)) /dev/urandom >"$T/big"
    d=$(digest_of "$T/big")
    size=$(stat -c %s "$T/big")
    mkfifo "$T/fifo"
    slow_feed "$T/big" "$T/fifo" 0.1
    $BERTH content ingest big-1 --expected-digest "$d" --expected-size "$size" \
        <"$T/fifo" >"$T/ingest1.out" 2>"$T/ingest1.err" &
    ingest_pid=$!
    BG_PIDS+=($ingest_pid)
    # Half way: at least 100 MiB written by the plugin.
    wait_for '[ "$($BERTH content active --format json | jq -r ".[] | select(.ref == \"big-1\") | .offset")" -ge 104857600 ] 2>/dev/null' 300
    old_pid=$(content_pid)
    [ "$old_pid" -gt 0 ]
    kill -9 "$old_pid"
    # The interrupted client fails (it cannot know what was applied).
    run wait "$ingest_pid"
    [ "$status" -ne 0 ]
    cat "$T/ingest1.err"
    # The core restarts the plugin by itself.
    wait_for '[ "$(content_status)" = ok ] && [ "$(content_pid)" != "$old_pid" ] && [ "$(content_pid)" -gt 0 ]' 200
    # The ingest is there, at its durable offset: a multiple of the 8 MiB sync
    # interval, more than nothing, less than the whole.
    run $BERTH content active
    [ "$status" -eq 0 ]
    [[ ${lines[0]} == REF*SIZE*AGE* ]]
    [[ $output == *big-1* ]]
    off=$($BERTH content active --format json | jq -r '.[] | select(.ref == "big-1") | .offset')
    echo "durable offset after kill: $off"
    [ "$off" -gt 0 ]
    [ "$off" -lt "$size" ]
    [ $((off % 8388608)) -eq 0 ]
    [ "$($BERTH content active --format json | jq -r '.[] | select(.ref == "big-1") | .expected')" = "$d" ]
    # The recorded offset never claims more than the data file holds (what
    # follows it may be a torn tail: truncated when the ingest resumes).
    datafile=$(grep -l -x big-1 "$BERTH_ROOT"/content/ingest/*/ref | head -1)
    [ "$(stat -c %s "$(dirname "$datafile")/data")" -ge "$off" ]
    # Resume from the file (seekable) and commit.
    run $BERTH content ingest big-1 --expected-digest "$d" --expected-size "$size" <"$T/big"
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    $BERTH content get "$d" | cmp - "$T/big"
    [ "$($BERTH content active --format json | jq length)" = 0 ]
    [ ! -e "$(dirname "$datafile")" ]
}

@test "resume through a pipe: the skipped prefix is read and dropped" {
    head -c $((40 * 1024 * 1024)) /dev/urandom >"$T/mid"
    d=$(digest_of "$T/mid")
    # Leave an ingest behind: Ctrl-C equivalent (SIGINT) after some bytes.
    mkfifo "$T/fifo2"
    slow_feed "$T/mid" "$T/fifo2" 0.3
    $BERTH content ingest pipe-1 <"$T/fifo2" >/dev/null 2>&1 &
    ipid=$!
    BG_PIDS+=($ipid)
    wait_for '[ "$($BERTH content active --format json | jq -r ".[] | select(.ref == \"pipe-1\") | .offset")" -ge 8388608 ] 2>/dev/null' 200
    kill -INT "$ipid"
    run wait "$ipid"
    [ "$status" -ne 0 ]
    off=$($BERTH content active --format json | jq -r '.[] | select(.ref == "pipe-1") | .offset')
    [ "$off" -gt 0 ]
    run bash -c "cat '$T/mid' | $BERTH content ingest pipe-1 --expected-digest $d"
    [ "$status" -eq 0 ]
    [ "$output" = "$d" ]
    $BERTH content get "$d" | cmp - "$T/mid"
}

@test "wrong expected digest: error names both digests, no blob, ingest removed" {
    printf 'hello world' >"$T/hello"
    good=$(digest_of "$T/hello")
    wrong=sha256:$(printf 'something else' | sha256sum | cut -d' ' -f1)
    run $BERTH content ingest wrong-1 --expected-digest "$wrong" <"$T/hello"
    [ "$status" -ne 0 ]
    [[ $output == *"$good"* ]]
    [[ $output == *"$wrong"* ]]
    [[ $output == *"unexpected commit digest"* ]]
    [ ! -e "$BERTH_ROOT/content/blobs/sha256/${good#sha256:}" ]
    [ ! -e "$BERTH_ROOT/content/blobs/sha256/${wrong#sha256:}" ]
    [ "$($BERTH content active --format json | jq '[.[] | select(.ref == "wrong-1")] | length')" = 0 ]
    run $BERTH content get "$good"
    [ "$status" -ne 0 ]
    # A wrong size is refused too, naming both sizes.
    run $BERTH content ingest wrong-2 --expected-size 5 <"$T/hello"
    [ "$status" -ne 0 ]
    [[ $output == *"11"* ]] && [[ $output == *"5"* ]]
    run $BERTH content ingest wrong-3 --expected-digest sha1:abc <"$T/hello"
    [ "$status" -ne 0 ]
    [[ $output == *"sha256"* ]]
}

@test "a second writer on the same ref is refused while the first is active" {
    head -c $((32 * 1024 * 1024)) /dev/urandom >"$T/lk"
    mkfifo "$T/fifo3"
    slow_feed "$T/lk" "$T/fifo3" 0.8
    $BERTH content ingest lock-1 <"$T/fifo3" >"$T/lk1.out" 2>&1 &
    BG_PIDS+=($!)
    first=$!
    wait_for '$BERTH content active --format json | jq -e ".[] | select(.ref == \"lock-1\")" >/dev/null' 100
    run $BERTH content ingest lock-1 <"$T/lk"
    [ "$status" -ne 0 ]
    [[ $output == *"ref lock-1 is locked"* ]]
    # The same ref in another namespace is another ingest.
    $BERTH namespaces create ns-lock >/dev/null 2>&1 || true
    run $BERTH -n ns-lock content ingest lock-1 <"$T/lk"
    [ "$status" -eq 0 ]
    # Active with a regex, table and json.
    run $BERTH content active '^lock-'
    [[ $output == *lock-1* ]]
    run $BERTH content active '^nomatch'
    [[ $output != *lock-1* ]]
    run $BERTH content active '(('
    [ "$status" -ne 0 ]
    [[ $output == *"invalid regular expression"* ]]
    # Abort is refused while the writer holds the ref.
    run $BERTH content abort lock-1
    [ "$status" -ne 0 ]
    [[ $output == *"locked"* ]]
    wait "$first"
    [ "$(cat "$T/lk1.out")" = "$(digest_of "$T/lk")" ]
}

@test "namespaces: ns2 cannot read content ingested only in default" {
    head -c 100000 /dev/urandom >"$T/nsfile"
    d=$(digest_of "$T/nsfile")
    $BERTH content ingest ns-1 <"$T/nsfile"
    $BERTH namespaces create ns2 >/dev/null 2>&1 || true
    run $BERTH -n ns2 content get "$d"
    [ "$status" -ne 0 ]
    [[ $output == *"not found"* ]]
    run $BERTH -n ns2 content ls -q
    [[ $output != *"$d"* ]]
    # Ingests are per namespace too.
    mkfifo "$T/fifo4"
    head -c $((40 * 1024 * 1024)) /dev/urandom >"$T/ns-big"
    slow_feed "$T/ns-big" "$T/fifo4" 0.5
    $BERTH content ingest ns-ingest <"$T/fifo4" >/dev/null 2>&1 &
    BG_PIDS+=($!)
    wait_for '$BERTH content active --format json | jq -e ".[] | select(.ref == \"ns-ingest\")" >/dev/null' 100
    [ "$($BERTH -n ns2 content active --format json | jq '[.[] | select(.ref == "ns-ingest")] | length')" = 0 ]
    # Committing the same bytes in ns2 makes them visible there (shared blob).
    run $BERTH -n ns2 content ingest ns-2 <"$T/nsfile"
    [ "$status" -eq 0 ]
    $BERTH -n ns2 content get "$d" | cmp - "$T/nsfile"
    [ "$(ls "$BERTH_ROOT/content/blobs/sha256" | grep -c "${d#sha256:}")" = 1 ]
}

@test "concurrent ingests of the same bytes under different refs both succeed, one blob" {
    head -c $((32 * 1024 * 1024)) /dev/urandom >"$T/same"
    d=$(digest_of "$T/same")
    $BERTH content ingest same-a <"$T/same" >"$T/a.out" 2>"$T/a.err" &
    pa=$!
    $BERTH content ingest same-b <"$T/same" >"$T/b.out" 2>"$T/b.err" &
    pb=$!
    BG_PIDS+=($pa $pb)
    wait "$pa" || { cat "$T/a.err"; false; }
    wait "$pb" || { cat "$T/b.err"; false; }
    [ "$(cat "$T/a.out")" = "$d" ]
    [ "$(cat "$T/b.out")" = "$d" ]
    [ "$(ls "$BERTH_ROOT/content/blobs/sha256" | grep -c "${d#sha256:}")" = 1 ]
    [ "$($BERTH content active --format json | jq '[.[] | select(.ref | startswith("same-"))] | length')" = 0 ]
    $BERTH content get "$d" | cmp - "$T/same"
}

@test "content abort removes a resumable ingest" {
    head -c $((40 * 1024 * 1024)) /dev/urandom >"$T/ab"
    mkfifo "$T/fifo5"
    slow_feed "$T/ab" "$T/fifo5" 0.5
    $BERTH content ingest abort-1 <"$T/fifo5" >/dev/null 2>&1 &
    ipid=$!
    BG_PIDS+=($ipid)
    wait_for '[ "$($BERTH content active --format json | jq -r ".[] | select(.ref == \"abort-1\") | .offset")" -ge 8388608 ] 2>/dev/null' 200
    kill -INT "$ipid"
    wait "$ipid" || true
    run $BERTH content abort abort-1
    [ "$status" -eq 0 ]
    [ "$($BERTH content active --format json | jq '[.[] | select(.ref == "abort-1")] | length')" = 0 ]
    run $BERTH content abort abort-1
    [ "$status" -ne 0 ]
    [[ $output == *"no ingest with ref abort-1"* ]]
}

@test "content label and rm" {
    printf 'label me' >"$T/lbl"
    d=$(digest_of "$T/lbl")
    $BERTH content ingest lbl-1 <"$T/lbl"
    run $BERTH content label "$d" a=b c=d
    [ "$status" -eq 0 ]
    [[ $output == *"a=b"* ]] && [[ $output == *"c=d"* ]]
    run $BERTH content ls
    [[ $output == *"$d"*"a=b,c=d"* ]]
    run $BERTH content label "$d" a=
    [[ $output != *"a=b"* ]]
    run $BERTH content rm "$d"
    [ "$status" -eq 0 ]
    run $BERTH content ls -q
    [[ $output != *"$d"* ]]
    run $BERTH content get "$d"
    [ "$status" -ne 0 ]
}
