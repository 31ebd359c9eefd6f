#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Garbage collection through the real daemon (issue 7): `berth gc` and
# --status, /gc/run events, collection after deletions without being asked,
# gc.root and leases as roots, expired leases, orphan files, kill -9 of
# berth-content or berth-gc in the middle of a sweep, and with the whole
# stack: import an image, run a container, `images rm --sync` gives the disk
# back; the same image in two namespaces; an export that races `images rm`
# and collections completes (its lease holds what it reads by path).
#
# Each test names what it needs and skips (never passes) when a part of the
# stack is missing.

bats_require_minimum_version 1.5.0

# gc that collects only when asked: no startup or event-driven surprises.
QUIET_GC='{"gc": {"config": {"startup_delay": "0ms", "deletion_threshold": 1000000, "mutation_threshold": 0, "orphan_grace": "2s"}}}'

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    T=$(mktemp -d /tmp/berth-gc-e2e.XXXXXX)
    export T
}

teardown_file() {
    rm -rf "$T"
}

setup() {
    BG_PIDS=()
    STOPPED_PIDS=()
}

teardown() {
    local p
    for p in "${STOPPED_PIDS[@]}"; do
        kill -CONT "$p" 2>/dev/null || true
    done
    for p in "${BG_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n ${REG_STARTED:-} ]]; then
        registry_stop
        REG_STARTED=
    fi
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        [[ -z ${BATS_TEST_COMPLETED:-} ]] && berth_dump_log 80 >&3 || true
        berth_stop_daemon
        DAEMON_STARTED=
    fi
    find "${T:?}" -mindepth 1 -maxdepth 1 ! -name img.tar -exec rm -rf {} +
}

# start PLUGINS-JSON: starts the daemon and checks that gc and the metadata
# methods it needs are served.
start() {
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash b
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins)"
    command -v jq >/dev/null || skip "jq not installed"
    # shellcheck source=/dev/null
    source "$lib"
    for b in berthd berth berth-gc berth-content berth-metadata; do
        [[ -x $BERTH_BIN/$b ]] || skip "$b not built (looked in $BERTH_BIN)"
    done
    berth_start_daemon "${1:-$QUIET_GC}" || return 1
    DAEMON_STARTED=1
    need_method gc.status '{}' "berth-gc"
    need_method meta.gc_collect '{}' "berth-metadata's meta.gc_collect" internal
}

# need_method METHOD PARAMS WHAT [internal]: skips when the method is not
# registered. An internal method refused to a client counts as present.
need_method() {
    local out
    out=$(berth_rpc call "$1" "$2" 2>&1) && return 0
    if [[ $out == *unimplemented* ]]; then
        skip "$3 is not served yet ($1: $out)"
    fi
    if [[ ${4:-} == internal && $out == *permission_denied* ]]; then
        return 0
    fi
    return 0
}

# need_plugin ID: skips unless the plugin is built and running.
need_plugin() {
    [[ -x $BERTH_BIN/berth-$1 ]] || skip "berth-$1 not built"
    local st
    st=$(berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r '.plugins[0].status // "absent"')
    [[ $st == ok ]] || skip "plugin $1 is $st"
}

# need_cli "GROUP SUB" FLAG: skips unless `berth GROUP SUB --help` mentions FLAG.
need_cli() {
    local help
    # shellcheck disable=SC2086
    help=$(berth $1 --help 2>&1) || skip "berth $1 not available"
    [[ -z ${2:-} || $help == *"$2"* ]] || skip "berth $1 has no $2 flag"
}

rpc() { berth_rpc call "$@"; }

blob_file() { echo "$BERTH_ROOT/content/blobs/sha256/${1#sha256:}"; }

# ingest NS REF TEXT [LABEL...]: stores TEXT as a blob, prints its digest.
ingest() {
    local ns=$1 ref=$2 text=$3
    shift 3
    local args=()
    for l in "$@"; do args+=(--label "$l"); done
    printf '%s' "$text" | berth -n "$ns" content ingest "$ref" "${args[@]}"
}

digest_of_text() { printf '%s' "$1" | sha256sum | sed 's/ .*//; s/^/sha256:/'; }

content_count() { rpc content.list "{\"namespace\": \"${1:-default}\"}" | jq '.infos | length'; }
snapshot_count() { rpc snapshots.list "{\"namespace\": \"${1:-default}\"}" | jq '.infos | length'; }
blob_files() { find "$BERTH_ROOT/content/blobs" -type f 2>/dev/null | wc -l; }

# Predicates for berth_wait_for (which re-runs a command, so values must be
# computed inside it).
content_count_is() { [ "$(content_count "${2:-default}")" -eq "$1" ]; }
plugin_restarted() { # ID OLD-PID
    local p
    p=$(berth_plugin_pid "$1")
    [[ -n $p && $p != null && $p != 0 && $p != "$2" ]]
}
plugin_ok() {
    [[ $(berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r '.plugins[0].status') == ok ]]
}
export_lease_holds() { # N: the one lease holds N resources
    local id
    id=$(rpc leases.list '{}' | jq -r 'select(.leases | length == 1) | .leases[0].id')
    [[ -n $id ]] && [ "$(rpc leases.list_resources "{\"id\": \"$id\"}" | jq '.resources | length')" -ge "$1" ]
}
collections_gt() { [ "$(gc_status | jq .collections)" -gt "$1" ]; }
last_deleted_is() { gc_status | jq -e ".last.content_deleted == $1" >/dev/null; }
gc_last_clean() { gc_status | jq -e '.last.error == null and .last.pending == 0' >/dev/null; }
garbage_gone() { [ "$(garbage_files_left)" -eq 0 ]; }
no_containers() { [ "$(rpc containers.list '{}' | jq '.containers | length')" -eq 0 ]; }

gc_json() { berth gc --format json; }
gc_status() { berth gc --status --format json; }

# Bytes under the root except metadata (LMDB files keep their size when
# records are deleted; the freed pages are reused).
root_kib() {
    du -sk --exclude=metadata "$BERTH_ROOT" | cut -f1
}

# An OCI archive with a busybox image, named docker.io/berth/gctest:v1.
make_image() {
    [[ -f $T/img.tar ]] && return 0
    command -v umoci >/dev/null || skip "umoci not installed (image fixture)"
    command -v skopeo >/dev/null || skip "skopeo not installed (image fixture)"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (image fixture)"
    local d=$T/fixture
    mkdir -p "$d"
    umoci init --layout "$d/oci"
    umoci new --image "$d/oci:v1"
    umoci unpack --image "$d/oci:v1" "$d/bundle" >/dev/null
    mkdir -p "$d/bundle/rootfs/bin"
    cp /bin/busybox "$d/bundle/rootfs/bin/busybox"
    local l
    for l in sh true echo sleep; do ln -s busybox "$d/bundle/rootfs/bin/$l"; done
    umoci repack --image "$d/oci:v1" "$d/bundle"
    umoci config --image "$d/oci:v1" --config.cmd /bin/sh
    skopeo copy -q "oci:$d/oci:v1" "oci-archive:$T/img.tar:docker.io/berth/gctest:v1"
    rm -rf "$d"
}
IMG=docker.io/berth/gctest:v1

import_image() { # NS
    make_image
    berth -n "${1:-default}" images import "$T/img.tar" >/dev/null
    berth -n "${1:-default}" images ls -q | grep -qx "$IMG"
}

need_image_stack() {
    need_plugin transfer
    need_plugin snapshot-overlay
    need_cli "images import"
    need_cli "images rm" --sync
}

@test "berth gc --help, and flag errors, need no daemon" {
    [[ -x $BERTH_BIN/berth ]] || skip "berth not built"
    run "$BERTH_BIN/berth" gc --help
    [ "$status" -eq 0 ]
    [[ $output == *"Usage: berth gc [--status] [--format json]"* ]]
    run "$BERTH_BIN/berth" gc --frobnicate
    [ "$status" -ne 0 ]
    [[ $output == *"--frobnicate"* ]]
    run "$BERTH_BIN/berth" gc extra-arg
    [ "$status" -ne 0 ]
    [[ $output == *"takes no arguments"* ]]
}

@test "berth gc runs a collection, prints what it freed, --status and /gc/run report it" {
    start
    berth_events_start "$T/events"
    BG_PIDS+=("$BERTH_EVENTS_PID")
    run berth gc
    [ "$status" -eq 0 ]
    [[ $output == *"content deleted:    0"* ]]
    [[ $output == *"snapshots deleted:  0"* ]]
    [[ $output == *"bytes freed:"* ]]
    [[ $output == *"metadata lock held"* ]]
    run gc_json
    [ "$status" -eq 0 ]
    jq -e '.stats | (.duration_ns > 0) and (.content_deleted == 0) and has("lock_ns") and has("mark_ns") and has("bytes_freed")' <<<"$output"
    run berth gc --status
    [ "$status" -eq 0 ]
    [[ $output == *"result:             ok"* ]]
    [[ $output == *"since start"* ]]
    st=$(gc_status)
    jq -e '(.running == false) and (.collections >= 2) and (.last.error == null) and (.last.finished_at > 0)' <<<"$st"
    berth_wait_for 5 grep -q /gc/run "$T/events"
}

@test "unreferenced content is deleted from disk; gc.root content is kept" {
    start
    keep=$(ingest default keep-1 "keep me" berth.io/gc.root=1)
    junk=$(ingest default junk-1 "garbage")
    [ -f "$(blob_file "$keep")" ]
    [ -f "$(blob_file "$junk")" ]
    run gc_json
    [ "$status" -eq 0 ]
    jq -e '.stats.content_deleted == 1 and .stats.bytes_freed == 7' <<<"$output"
    [ ! -e "$(blob_file "$junk")" ]
    [ -f "$(blob_file "$keep")" ]
    [ "$(berth content get "$keep")" = "keep me" ]
    [ "$(content_count)" -eq 1 ]
    # Without its root label and once removed, it goes too.
    berth content rm "$keep"
    run gc_json
    jq -e '.stats.content_deleted == 1' <<<"$output"
    [ ! -e "$(blob_file "$keep")" ]
    [ "$(content_count)" -eq 0 ]
    # A blob collected earlier can be stored again (its tombstone is gone).
    again=$(ingest default junk-2 "garbage" berth.io/gc.root=1)
    [ "$again" = "$junk" ]
    [ -f "$(blob_file "$junk")" ]
}

@test "a deletion schedules a collection by itself (scheduler), respecting schedule_delay" {
    start '{"gc": {"config": {"startup_delay": "0ms", "deletion_threshold": 0, "schedule_delay": "2s", "pause_threshold": 0, "mutation_threshold": 0}}}'
    d=$(ingest default auto-1 "collected without asking" berth.io/gc.root=1)
    before=$(gc_status | jq .collections)
    berth content rm "$d"
    # schedule_delay: not at once (2 s; a loaded machine may stretch this)...
    sleep 0.2
    [ -f "$(blob_file "$d")" ]
    # ...but soon, without `berth gc`.
    berth_wait_for 10 test ! -e "$(blob_file "$d")"
    berth_wait_for 5 collections_gt "$before"
    berth_wait_for 5 last_deleted_is 1
}

@test "a lease keeps its content until it is deleted; an expired lease's content is collected when it expires" {
    start
    need_method leases.create '{"id": "probe"}' "leases (berth-metadata)"
    rpc leases.delete '{"id": "probe"}' >/dev/null
    rpc leases.create '{"id": "hold"}' >/dev/null
    d=$(ingest default leased-1 "held by a lease")
    rpc leases.add_resource "{\"id\": \"hold\", \"resource\": {\"id\": \"$d\", \"type\": \"content\"}}" >/dev/null
    exp=$(( $(date +%s%N) + 2000000000 ))
    rpc leases.create "{\"id\": \"short\", \"expire\": $exp}" >/dev/null
    e=$(ingest default leased-2 "held by a lease that expires")
    rpc leases.add_resource "{\"id\": \"short\", \"resource\": {\"id\": \"$e\", \"type\": \"content\"}}" >/dev/null
    run gc_json
    jq -e '.stats.content_deleted == 0' <<<"$output"
    [ -f "$(blob_file "$d")" ]
    [ -f "$(blob_file "$e")" ]
    # Expired: collected soon after the expiry without asking (gc schedules
    # a collection for it; event-driven collection is off in QUIET_GC),
    # while the other lease still holds its blob.
    berth_wait_for 8 test ! -e "$(blob_file "$e")"
    [ "$(date +%s%N)" -ge "$exp" ]
    [ -f "$(blob_file "$d")" ]
    berth_wait_for 5 last_deleted_is 1
    # Deleting the lease releases it.
    if berth leases rm --help 2>&1 | grep -q -- --sync; then
        berth leases rm --sync hold
    else
        rpc leases.delete '{"id": "hold"}' >/dev/null
        berth gc >/dev/null
    fi
    [ ! -e "$(blob_file "$d")" ]
    [ "$(content_count)" -eq 0 ]
}

@test "an orphan blob file (no record) older than the last mark is collected; a fresh one is not" {
    start
    need_method meta.gc_orphans '{}' "berth-metadata's meta.gc_orphans" internal
    mkdir -p "$BERTH_ROOT/content/blobs/sha256"
    old=$(digest_of_text "orphan from the past")
    printf '%s' "orphan from the past" >"$(blob_file "$old")"
    chmod 0444 "$(blob_file "$old")"
    # Orphan age is the later of mtime and ctime (a blob linked into place
    # from an old file is new), so age it for real: past orphan_grace (2s in
    # QUIET_GC) and before a completed mark.
    sleep 2.2
    berth gc >/dev/null
    fresh=$(digest_of_text "orphan just written")
    printf '%s' "orphan just written" >"$(blob_file "$fresh")"
    chmod 0444 "$(blob_file "$fresh")"
    run gc_json
    [ "$status" -eq 0 ]
    [ ! -e "$(blob_file "$old")" ]
    [ -f "$(blob_file "$fresh")" ]
    # Later the fresh one is old enough too.
    sleep 2.2
    berth gc >/dev/null
    berth gc >/dev/null
    [ ! -e "$(blob_file "$fresh")" ]
}

# Stores N garbage blobs and one blob kept by gc.root; sets GARBAGE and KEEP.
make_garbage() {
    local n=$1 i
    GARBAGE=()
    for ((i = 0; i < n; i++)); do
        GARBAGE+=("$(ingest default "junk-$i" "garbage number $i")")
    done
    KEEP=$(ingest default keep "precious" berth.io/gc.root=1)
}

garbage_files_left() {
    local d n=0
    for d in "${GARBAGE[@]}"; do
        [[ -e $(blob_file "$d") ]] && n=$((n + 1))
    done
    echo $n
}

@test "kill -9 berth-content in the middle of a sweep: the next collection completes it" {
    start "$(jq -c '.gc.config.max_concurrent_deletes = 1' <<<"$QUIET_GC")"
    make_garbage 40
    cpid=$(berth_plugin_pid content)
    # Freeze content so the sweep is certainly in flight when it dies.
    kill -STOP "$cpid"
    STOPPED_PIDS+=("$cpid")
    berth gc >"$T/gc1.out" 2>&1 &
    gc1=$!
    BG_PIDS+=("$gc1")
    # Metadata swept and tombstoned the records: the sweep has started.
    berth_wait_for 10 content_count_is 1
    [ "$(garbage_files_left)" -eq 40 ]
    kill -9 "$cpid"
    berth_wait_for 20 plugin_restarted content "$cpid"
    berth_wait_for 20 plugin_ok content
    # The interrupted run reports the failure (or was retried by the core);
    # either way the collection is finished by a later run without help:
    # a failed run is retried with backoff.
    run wait "$gc1"
    cat "$T/gc1.out"
    berth_wait_for 30 garbage_gone
    berth_wait_for 10 gc_last_clean
    # Nothing referenced was lost, and tombstones were dropped: the same
    # bytes can be stored again.
    [ "$(berth content get "$KEEP")" = "precious" ]
    again=$(ingest default junk-again "garbage number 7" berth.io/gc.root=1)
    [ "$again" = "${GARBAGE[7]}" ]
    [ -f "$(blob_file "$again")" ]
    run gc_json
    [ "$status" -eq 0 ]
    jq -e '.stats.failed == 0' <<<"$output"
}

@test "an ingest of a blob a running collection is deleting waits for the deletion, then stores it again" {
    # gc pauses after its first deletion: every other victim is tombstoned
    # but still on disk. An ingest that expects one of them gets `aborted`
    # from metadata; content retries until the sweep is done (the design's
    # "the caller retries after the backend deletion"), so the writer never
    # sees the race.
    export BERTH_FAILPOINTS="gc.sweep.after_first_delete=once:pause=1200"
    start "$(jq -c '.gc.config.max_concurrent_deletes = 1' <<<"$QUIET_GC")"
    make_garbage 3
    berth gc >"$T/gc.out" 2>&1 &
    gc1=$!
    BG_PIDS+=("$gc1")
    # The sweep started: the records are tombstoned (only KEEP is listed).
    berth_wait_for 10 content_count_is 1
    local i d
    for i in 0 1 2; do
        d=$(printf '%s' "garbage number $i" | berth content ingest "again-$i" \
            --expected-digest "${GARBAGE[$i]}" --label berth.io/gc.root=1)
        [ "$d" = "${GARBAGE[$i]}" ]
    done
    wait "$gc1"
    # At least one ingest had to wait for the deletion.
    grep -q 'msg="blob is being collected; ingest retried"' "$BERTH_LOG"
    for i in 0 1 2; do
        [ "$(berth content get "${GARBAGE[$i]}")" = "garbage number $i" ]
    done
    content_count_is 4
    # They are roots now: another collection keeps them.
    berth gc >/dev/null
    for i in 0 1 2; do
        [ -f "$(blob_file "${GARBAGE[$i]}")" ]
    done
}

@test "kill -9 berth-gc in the middle of a sweep: the restarted gc completes it at startup" {
    start "$(jq -c '.gc.config.max_concurrent_deletes = 1' <<<"$QUIET_GC")"
    make_garbage 40
    cpid=$(berth_plugin_pid content)
    gpid=$(berth_plugin_pid gc)
    kill -STOP "$cpid"
    STOPPED_PIDS+=("$cpid")
    berth gc >"$T/gc1.out" 2>&1 &
    gc1=$!
    BG_PIDS+=("$gc1")
    berth_wait_for 10 content_count_is 1
    kill -9 "$gpid"
    kill -CONT "$cpid"
    berth_wait_for 20 plugin_restarted gc "$gpid"
    berth_wait_for 20 plugin_ok gc
    # No `berth gc` here: the new instance's startup collection finishes.
    berth_wait_for 30 garbage_gone
    berth_wait_for 10 gc_last_clean
    [ "$(berth content get "$KEEP")" = "precious" ]
    again=$(ingest default junk-again "garbage number 3" berth.io/gc.root=1)
    [ "$again" = "${GARBAGE[3]}" ]
    # gc.run is idempotent: the interrupted `berth gc` was re-sent to the new
    # instance and succeeded.
    run wait "$gc1"
    cat "$T/gc1.out"
    [ "$status" -eq 0 ]
}

@test "import an image, images rm --sync: content, snapshots and disk usage are back to the start" {
    start
    need_image_stack
    base=$(root_kib)
    import_image default
    [ "$(content_count)" -ge 3 ]
    [ "$(snapshot_count)" -ge 1 ]
    grown=$(root_kib)
    [ "$grown" -gt $((base + 500)) ] # busybox is about 1 MiB
    berth images rm --sync "$IMG"
    [ "$(content_count)" -eq 0 ]
    [ "$(snapshot_count)" -eq 0 ]
    [ "$(blob_files)" -eq 0 ]
    now=$(root_kib)
    echo "root: before $base KiB, with the image $grown KiB, after $now KiB"
    [ "$now" -le $((base + 16)) ]
}

@test "pull or import, run and remove a container, images rm --sync: everything is freed" {
    start
    need_image_stack
    need_plugin runtime-runc
    need_cli run --rm
    base=$(root_kib)
    import_image default
    run berth run --rm "$IMG" gc-c1 /bin/echo hello
    [ "$status" -eq 0 ]
    [[ $output == *hello* ]]
    berth_wait_for 10 no_containers
    berth images rm --sync "$IMG"
    [ "$(content_count)" -eq 0 ]
    [ "$(snapshot_count)" -eq 0 ]
    [ "$(blob_files)" -eq 0 ]
    [ -z "$(ls -A "$BERTH_ROOT/snapshot-overlay/snapshots" 2>/dev/null)" ]
    now=$(root_kib)
    echo "root: before $base KiB, after $now KiB"
    [ "$now" -le $((base + 16)) ]
}

@test "the same image in two namespaces: removing it from one keeps what the other needs" {
    start
    need_image_stack
    import_image ns-a
    import_image ns-b
    files=$(blob_files)
    snaps_b=$(snapshot_count ns-b)
    berth -n ns-a images rm --sync "$IMG"
    [ "$(content_count ns-a)" -eq 0 ]
    [ "$(snapshot_count ns-a)" -eq 0 ]
    # ns-b still has every blob on disk and every snapshot.
    [ "$(blob_files)" -eq "$files" ]
    [ "$(snapshot_count ns-b)" -eq "$snaps_b" ]
    for d in $(rpc content.list '{"namespace": "ns-b"}' | jq -r '.infos[].digest'); do
        [ -f "$(blob_file "$d")" ]
    done
    # And transfer agrees that the image is complete there.
    rpc images.check '{"namespace": "ns-b"}' | jq -e '(.images | length == 1) and (.images[0].status == "complete") and (.images[0].complete == .images[0].total)'
    berth -n ns-b images rm --sync "$IMG"
    [ "$(blob_files)" -eq 0 ]
    [ "$(snapshot_count ns-b)" -eq 0 ]
}

gc_forever() {
    while :; do
        "$BERTH_BIN/berth" -a "$BERTH_SOCK" gc >/dev/null 2>&1 || true
    done
}

@test "a pull in progress (holding its lease) is never collected by collections running during it" {
    start
    need_plugin transfer
    need_plugin snapshot-overlay
    need_cli "images pull" --plain-http
    # shellcheck source=/dev/null
    source "$BATS_TEST_DIRNAME/lib/registry.bash"
    registry_start
    REG_STARTED=1
    # Four layers, three of them with 8 MiB of random data: the pull takes a
    # while, and collections run back to back the whole time.
    registry_build_image "$T/reg-img" 4 8
    registry_push "$T/reg-img" berth/gcpull:v1
    before=$(gc_status | jq .collections)
    gc_forever &
    BG_PIDS+=($!)
    run berth images pull --plain-http "$REG/berth/gcpull:v1"
    kill "${BG_PIDS[-1]}"
    wait "${BG_PIDS[-1]}" 2>/dev/null || true
    [ "$status" -eq 0 ]
    during=$(( $(gc_status | jq .collections) - before ))
    echo "collections during the pull: $during"
    [ "$during" -ge 2 ]
    # Everything the image needs is there and intact.
    rpc images.check '{}' | jq -e '(.images | length == 1) and (.images[0].status == "complete") and (.images[0].complete == .images[0].total)'
    for d in $(rpc content.list '{}' | jq -r '.infos[].digest'); do
        [ "$(sha256sum <"$(blob_file "$d")" | cut -d' ' -f1)" = "${d#sha256:}" ]
    done
    # And a collection now keeps it all (the image is the root).
    run gc_json
    jq -e '.stats.content_deleted == 0 and .stats.snapshots_deleted == 0' <<<"$output"
    berth images rm --sync "$REG/berth/gcpull:v1"
    [ "$(content_count)" -eq 0 ]
    [ "$(snapshot_count)" -eq 0 ]
    [ "$(blob_files)" -eq 0 ]
}

@test "an export racing images rm and collections completes: its lease holds the blobs it reads" {
    start
    need_image_stack
    need_cli "images export"
    local t
    for t in umoci skopeo; do
        command -v $t >/dev/null || skip "$t not installed (image fixture)"
    done
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (image fixture)"
    # shellcheck source=/dev/null
    source "$BATS_TEST_DIRNAME/lib/registry.bash"
    # Busybox and three layers of 8 MiB of random data: far more than the
    # export reads ahead of a reader that stopped reading.
    registry_build_image "$T/big" 4 8
    skopeo copy -q "oci:$T/big:t" "oci-archive:$T/big.tar:docker.io/berth/gcexport:v1"
    local big=docker.io/berth/gcexport:v1
    berth images import --no-unpack "$T/big.tar" >/dev/null
    mapfile -t digests < <(berth content ls -q | sort)
    files=$(blob_files)
    # The export writes into a pipe that nobody reads yet: it stops once
    # the pipe and the buffers on the way are full, with blob files still
    # to open, and waits there.
    mkfifo "$T/pipe"
    berth images export - "$big" >"$T/pipe" &
    xpid=$!
    BG_PIDS+=("$xpid")
    exec {rfd}<"$T/pipe"
    berth_wait_for 20 export_lease_holds 5 # config and four layers
    lease=$(rpc leases.list '{}' | jq -r '.leases[0].id')
    # The image goes, and collections run: what the export reads stays.
    berth images rm "$big"
    run gc_json
    echo "$output"
    [ "$status" -eq 0 ]
    run gc_json
    [ "$status" -eq 0 ]
    for d in "${digests[@]}"; do
        if rpc leases.list_resources "{\"id\": \"$lease\"}" | jq -e --arg d "$d" '.resources | any(.id == $d)' >/dev/null; then
            [ -f "$(blob_file "$d")" ]
        fi
    done
    # Now read the tar: the export completes.
    timeout 120 cat <&"$rfd" >"$T/out.tar"
    exec {rfd}<&-
    run wait "$xpid"
    echo "$output"
    [ "$status" -eq 0 ]
    # Every blob in the tar is whole; all the image's layers are there.
    mkdir "$T/out"
    tar -xf "$T/out.tar" -C "$T/out"
    n=0
    for f in "$T/out/blobs/sha256/"*; do
        [ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$(basename "$f")" ]
        n=$((n + 1))
    done
    echo "blobs in the tar: $n, blob files before: $files"
    [ "$n" -eq "$files" ]
    for d in "${digests[@]}"; do
        [ -f "$T/out/blobs/sha256/${d#sha256:}" ]
    done
    # The lease went with the export: the next collection frees it all.
    [ "$(rpc leases.list '{}' | jq '.leases | length')" -eq 0 ]
    run gc_json
    [ "$status" -eq 0 ]
    [ "$(content_count)" -eq 0 ]
    [ "$(blob_files)" -eq 0 ]
}
