#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Snapshots through the real daemon: the `berth snapshots` CLI (metadata
# records + the overlayfs backend), real mounts from the printed commands,
# layer apply via diff.apply (content.path + extraction), which reads the
# blob only under a lease that holds it, refused commits of failed or
# interrupted applies, crash reconciliation, a 128-layer chain.

load lib/daemon.bash

setup() {
    berth_start_daemon '{"gc": {"enabled": false}, "transfer": {"enabled": false}, "runtime-runc": {"enabled": false}}'
    SNAPS=$BERTH_ROOT/snapshot-overlay/snapshots
    MNT=$BERTH_TEST_DIR/mnt
    mkdir -p "$MNT"
}

teardown() {
    umount "$MNT" 2>/dev/null || true
    [ -n "${BERTH_TEST_DIR:-}" ] && { [ -n "${BATS_TEST_COMPLETED:-}" ] || berth_dump_log; }
    berth_stop_daemon
}

# Backend id of a snapshot key (its directory under $SNAPS).
snap_id() {
    berth_rpc call snapshots.stat "{\"key\": \"$1\"}" >/dev/null || return 1
    berth snapshots mounts /x "$1" | grep -o 'snapshots/[0-9]*/\(fs\|work\)' | head -1 | cut -d/ -f2
}

make_layer() { # make_layer OUT.tar.gz: a small layer with a whiteout and an opaque dir
    python3 - "$1" <<'PY'
import gzip, io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    def add(name, typ=tarfile.REGTYPE, data=b"", mode=0o644, link=""):
        i = tarfile.TarInfo(name); i.type = typ; i.mode = mode; i.linkname = link
        i.size = len(data) if typ == tarfile.REGTYPE else 0
        t.addfile(i, io.BytesIO(data) if data else None)
    add("etc", tarfile.DIRTYPE, mode=0o755)
    add("etc/hello", data=b"hello from the layer\n")
    add("etc/.wh.gone")
    add("opq", tarfile.DIRTYPE, mode=0o755)
    add("opq/.wh..wh..opq")
    add("bin/sh", tarfile.SYMTYPE, link="busybox", mode=0o777)
open(sys.argv[1], "wb").write(gzip.compress(buf.getvalue()))
PY
}

# lease_holding DIGEST [NAMESPACE]: creates a lease that holds DIGEST and
# prints its id. diff.apply reads the layer by path, and content.path gives a
# path only to a request whose lease holds the blob.
lease_holding() {
    local id=apply-$RANDOM$RANDOM ns=${2:-default}
    berth_rpc call leases.create "{\"namespace\": \"$ns\", \"id\": \"$id\"}" >/dev/null || return 1
    berth_rpc call leases.add_resource "{\"namespace\": \"$ns\", \"id\": \"$id\", \"resource\": {\"type\": \"content\", \"id\": \"$1\"}}" >/dev/null || return 1
    echo "$id"
}

# apply_desc KEY DIGEST SIZE MEDIATYPE [LEASE]: diff.apply, with LEASE if given.
apply_desc() {
    local l=""
    [ -n "${5:-}" ] && l=", \"lease\": \"$5\""
    berth_rpc call diff.apply "{\"key\": \"$1\", \"desc\": {\"media_type\": \"$4\", \"digest\": \"$2\", \"size\": $3}$l}"
}

apply_layer() { # apply_layer KEY FILE MEDIATYPE
    local d sz lease
    d=$(berth content ingest "ing-$RANDOM" <"$2") || return 1
    sz=$(stat -c %s "$2")
    lease=$(lease_holding "$d") || return 1
    apply_desc "$1" "$d" "$sz" "$3" "$lease"
}

@test "snapshots: prepare, commit, view, ls, tree, info, label, usage, rm like ctr" {
    run berth snapshots prepare base-active
    [ "$status" -eq 0 ]
    id=$(snap_id base-active)
    [ -n "$id" ]
    [ "$(stat -c %a "$SNAPS")" = 700 ]
    [ "$(stat -c %a "$SNAPS/$id")" = 700 ]
    echo data >"$SNAPS/$id/fs/file"
    berth snapshots commit base base-active
    berth snapshots prepare child base
    berth snapshots view ro-view base
    run berth snapshots ls
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "${lines[0]}" =~ ^KEY\ +PARENT\ +KIND ]]
    [[ "$output" =~ base\ +Committed ]]
    [[ "$output" =~ child\ +base\ +Active ]]
    [[ "$output" =~ ro-view\ +base\ +View ]]
    run berth snapshots ls --format json
    [ "$(echo "$output" | jq length)" -eq 3 ]
    run berth snapshots tree
    echo "$output"
    [ "${lines[0]}" = " base" ]
    [[ "$output" == *"  \\_ child"* ]]
    run berth snapshots info base
    echo "$output"
    [ "$(echo "$output" | jq -r .Kind)" = Committed ]
    [ "$(echo "$output" | jq -r .Name)" = base ]
    run berth snapshots label base team=storage
    [ "$output" = "team=storage" ]
    run berth snapshots usage base
    echo "$output"
    [[ "${lines[1]}" =~ ^base\ +[0-9.]+\ KiB\ +2 ]]
    run berth snapshots usage --b
    [ "${#lines[@]}" -eq 4 ]
    # a parent with children cannot be removed
    run berth snapshots rm base
    [ "$status" -ne 0 ]
    [[ "$output" == *"parent"* ]]
    berth snapshots rm child ro-view
    berth snapshots rm base
    [ ! -e "$SNAPS/$id" ]
    run berth snapshots --snapshotter overlayfs ls
    [ "$status" -eq 0 ]
    run berth snapshots --snapshotter btrfs ls
    [ "$status" -ne 0 ]
    [[ "$output" == *"not available"* ]]
}

@test "snapshots: printed mount commands mount for real (bind, overlay, read-only view)" {
    berth snapshots prepare --target "$MNT" a | tee "$BERTH_TEST_DIR/m1"
    grep -q "^mount -t bind .* $MNT -o rw,rbind$" "$BERTH_TEST_DIR/m1"
    sh "$BERTH_TEST_DIR/m1"
    echo one >"$MNT/one"
    umount "$MNT"
    berth snapshots commit a1 a
    berth snapshots prepare b a1
    berth snapshots mounts "$MNT" b >"$BERTH_TEST_DIR/m2"
    grep -q "^mount -t overlay overlay $MNT -o .*upperdir=" "$BERTH_TEST_DIR/m2"
    sh "$BERTH_TEST_DIR/m2"
    [ "$(cat "$MNT/one")" = one ]
    echo two >"$MNT/two"
    rm "$MNT/one"
    umount "$MNT"
    bid=$(snap_id b)
    [ -f "$SNAPS/$bid/fs/two" ]
    [ -c "$SNAPS/$bid/fs/one" ] # overlay's own whiteout
    berth snapshots commit b1 b
    berth snapshots view v b1
    berth snapshots mounts "$MNT" v >"$BERTH_TEST_DIR/m3"
    sh "$BERTH_TEST_DIR/m3"
    [ -f "$MNT/two" ] && [ ! -e "$MNT/one" ]
    run touch "$MNT/three"
    [ "$status" -ne 0 ]
    umount "$MNT"
}

@test "snapshots: a 128-layer chain mounts (relative lowerdirs, options within a page)" {
    parent=""
    for i in $(seq 1 128); do
        berth snapshots prepare "k$i" $parent >/dev/null
        echo "$i" >"$SNAPS/$(snap_id "k$i")/fs/layer$i"
        berth snapshots commit "c$i" "k$i"
        parent="c$i"
    done
    berth snapshots prepare top c128 >/dev/null
    berth snapshots mounts "$MNT" top >"$BERTH_TEST_DIR/m"
    cat "$BERTH_TEST_DIR/m"
    grep -q "^(cd $SNAPS && mount -t overlay" "$BERTH_TEST_DIR/m"
    opts=$(sed 's/.* -o \(.*\))$/\1/' "$BERTH_TEST_DIR/m")
    [ "${#opts}" -lt 4096 ]
    sh "$BERTH_TEST_DIR/m"
    [ "$(cat "$MNT/layer1")" = 1 ]
    [ "$(cat "$MNT/layer128")" = 128 ]
    [ "$(ls "$MNT" | wc -l)" -eq 128 ]
    umount "$MNT"
}

@test "diff.apply: a gzip layer lands in the snapshot with whiteouts, then commits" {
    make_layer "$BERTH_TEST_DIR/l.tgz"
    berth snapshots prepare extract-1
    run apply_layer extract-1 "$BERTH_TEST_DIR/l.tgz" application/vnd.docker.image.rootfs.diff.tar.gzip
    echo "$output"
    [ "$status" -eq 0 ]
    want="sha256:$(gzip -dc "$BERTH_TEST_DIR/l.tgz" | sha256sum | cut -d' ' -f1)"
    [ "$(echo "$output" | jq -r .diff_id)" = "$want" ]
    id=$(snap_id extract-1)
    [ "$(cat "$SNAPS/$id/fs/etc/hello")" = "hello from the layer" ]
    [ -c "$SNAPS/$id/fs/etc/gone" ]
    [ "$(python3 -c "import os;print(os.getxattr('$SNAPS/$id/fs/opq','trusted.overlay.opaque').decode())")" = y ]
    [ "$(readlink "$SNAPS/$id/fs/bin/sh")" = busybox ]
    grep -q "^done $want" "$SNAPS/$id/apply"
    berth snapshots commit layer-1 extract-1
    run berth snapshots ls
    [[ "$output" =~ layer-1\ +Committed ]]
}

@test "diff.apply: content.path needs a lease that holds the layer; refused without, then applies with it" {
    make_layer "$BERTH_TEST_DIR/l.tgz"
    d=$(berth content ingest lease-layer <"$BERTH_TEST_DIR/l.tgz")
    sz=$(stat -c %s "$BERTH_TEST_DIR/l.tgz")
    mt=application/vnd.oci.image.layer.v1.tar+gzip
    berth snapshots prepare leased-1
    id=$(snap_id leased-1)
    # No lease on the request.
    run apply_desc leased-1 "$d" "$sz" $mt
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"permission_denied"* ]]
    [[ "$output" == *"content.path needs the lease that holds $d (leases.add_resource): the request has no lease"* ]]
    # A lease that holds something else.
    berth_rpc call leases.create '{"id": "empty-lease"}'
    run apply_desc leased-1 "$d" "$sz" $mt empty-lease
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"permission_denied"* ]]
    [[ "$output" == *"lease empty-lease of namespace default is unknown, expired or does not hold it"* ]]
    # A lease of another namespace that holds it (leases are per namespace).
    other=$(lease_holding "$d" other-ns)
    run apply_desc leased-1 "$d" "$sz" $mt "$other"
    [ "$status" -ne 0 ]
    [[ "$output" == *"lease $other of namespace default is unknown"* ]]
    # An expired lease that holds it.
    berth_rpc call leases.create '{"id": "old-lease", "expire": 1000000000}'
    berth_rpc call leases.add_resource "{\"id\": \"old-lease\", \"resource\": {\"type\": \"content\", \"id\": \"$d\"}}"
    run apply_desc leased-1 "$d" "$sz" $mt old-lease
    [ "$status" -ne 0 ]
    [[ "$output" == *"permission_denied"* ]]
    # Nothing was extracted by the refused calls; the right lease applies.
    [ ! -e "$SNAPS/$id/fs/etc/hello" ]
    good=$(lease_holding "$d")
    run apply_desc leased-1 "$d" "$sz" $mt "$good"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(cat "$SNAPS/$id/fs/etc/hello")" = "hello from the layer" ]
    berth snapshots commit leased leased-1
    # Once the lease no longer holds it, the next apply is refused again.
    berth snapshots prepare leased-2 leased
    berth_rpc call leases.delete_resource "{\"id\": \"$good\", \"resource\": {\"type\": \"content\", \"id\": \"$d\"}}"
    run apply_desc leased-2 "$d" "$sz" $mt "$good"
    [ "$status" -ne 0 ]
    [[ "$output" == *"lease $good of namespace default is unknown, expired or does not hold it"* ]]
}

@test "diff.apply: bad layers fail clearly, cannot be committed, the daemon keeps serving" {
    berth snapshots prepare bad-1
    echo "not a tar at all" >"$BERTH_TEST_DIR/junk"
    run apply_layer bad-1 "$BERTH_TEST_DIR/junk" application/vnd.oci.image.layer.v1.tar
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"not a tar archive"* ]]
    run berth snapshots commit bad bad-1
    [ "$status" -ne 0 ]
    [[ "$output" == *"layer apply failed"* ]]
    run apply_layer bad-1 "$BERTH_TEST_DIR/junk" application/x-rar
    [ "$status" -ne 0 ]
    [[ "$output" == *"unsupported layer media type"* ]]
    # a hostile layer: confined or refused, nothing written outside the root
    python3 - "$BERTH_TEST_DIR/evil.tar" "$BERTH_TEST_DIR" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    i = tarfile.TarInfo("../../../../../../" + sys.argv[2].lstrip("/") + "/pwned"); i.size = 1
    t.addfile(i, io.BytesIO(b"x"))
PY
    berth snapshots prepare bad-2
    run apply_layer bad-2 "$BERTH_TEST_DIR/evil.tar" application/vnd.oci.image.layer.v1.tar
    [ "$status" -ne 0 ]
    [[ "$output" == *'".."'* ]]
    [ ! -e "$BERTH_TEST_DIR/pwned" ]
    run berth snapshots ls
    [ "$status" -eq 0 ]
    [[ "$output" == *"bad-2"* ]]
}

@test "crash safety: kill -9 mid-apply leaves an uncommittable snapshot; restart cleans temp dirs" {
    # Restart the daemon with a failpoint that stalls extraction after 3 entries.
    berth_stop_daemon
    export BERTH_FAILPOINTS=overlay.apply.pause_after_entries=3
    berth_start_daemon '{"gc": {"enabled": false}, "transfer": {"enabled": false}, "runtime-runc": {"enabled": false}}'
    SNAPS=$BERTH_ROOT/snapshot-overlay/snapshots
    make_layer "$BERTH_TEST_DIR/l.tgz"
    d=$(berth content ingest crash-layer <"$BERTH_TEST_DIR/l.tgz")
    sz=$(stat -c %s "$BERTH_TEST_DIR/l.tgz")
    berth snapshots prepare crash-1
    id=$(snap_id crash-1)
    pid=$(berth_plugin_pid snapshot-overlay)
    lease=$(lease_holding "$d")
    # (fd 3 closed: bats must not wait for this background call)
    apply_desc crash-1 "$d" "$sz" application/vnd.oci.image.layer.v1.tar+gzip "$lease" \
        >"$BERTH_TEST_DIR/apply.out" 2>&1 3>&- &
    bg=$!
    berth_wait_for 20 test -e "$SNAPS/$id/fs/etc/hello"
    grep -q running "$SNAPS/$id/apply"
    kill -9 "$pid"
    wait "$bg" || true
    cat "$BERTH_TEST_DIR/apply.out"
    grep -q "unavailable\|restarted" "$BERTH_TEST_DIR/apply.out"
    berth_wait_for 20 berth snapshots ls
    [ "$(berth_plugin_pid snapshot-overlay)" != "$pid" ]
    grep -q running "$SNAPS/$id/apply"
    run berth snapshots commit crashed crash-1
    echo "$output"
    [ "$status" -ne 0 ]
    [[ "$output" == *"interrupted"* ]]
    grep -q "unfinished layer apply" "$BERTH_LOG"
    # leftovers of a prepare and a remove that were cut short
    mkdir -p "$SNAPS/new-900-deadbeef/fs/x" "$SNAPS/rm-901-deadbeef/fs/y"
    pid=$(berth_plugin_pid snapshot-overlay)
    kill -9 "$pid"
    berth_wait_for 20 test ! -e "$SNAPS/new-900-deadbeef"
    [ ! -e "$SNAPS/rm-901-deadbeef" ]
    berth_wait_for 10 grep -q "removed leftover of an interrupted remove" "$BERTH_LOG"
    berth_wait_for 20 berth snapshots rm crash-1
    [ ! -e "$SNAPS/$id" ]
}
