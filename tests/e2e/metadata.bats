#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# berth-metadata through the real daemon: namespaces and leases with the CLI,
# namespace deletion refused while non-empty, namespace isolation, kill -9 of
# the plugin during a burst of 1,000 acknowledged label updates (every one
# survives, the plugin comes back by itself), request_id replays, a corrupted
# database refused, snapshot records over the overlay backend, a slow filtered
# listing that does not hold up other requests.

bats_require_minimum_version 1.5.0

setup() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    [[ -x $BERTH_BIN/berthd ]] || skip "berthd not built (looked in $BERTH_BIN)"
    [[ -x $BERTH_BIN/berth-metadata ]] || skip "berth-metadata not built"
    [[ -x $BERTH_BIN/berth ]] || skip "berth CLI not built"
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins)"
    command -v jq >/dev/null || skip "jq not installed"
    # shellcheck source=/dev/null
    source "$lib"
    PLUGINS='{"content": {"enabled": false}, "snapshot-overlay": {"enabled": false},
              "transfer": {"enabled": false}, "runtime-runc": {"enabled": false},
              "gc": {"enabled": false}}'
}

teardown() {
    if [[ -n ${BERTH_PID:-} ]]; then
        [[ -z ${BATS_TEST_COMPLETED:-} ]] && berth_dump_log 80
        berth_stop_daemon
    fi
}

D1=sha256:0000000000000000000000000000000000000000000000000000000000000001

create_image() { # NS NAME
    berth_rpc call images.create "{\"namespace\": \"$1\", \"image\": {\"name\": \"$2\",
        \"target\": {\"media_type\": \"application/vnd.oci.image.manifest.v1+json\",
                     \"digest\": \"$D1\", \"size\": 1}}}" >/dev/null
}

@test "namespaces: create, ls, label, rm like ctr" {
    berth_start_daemon "$PLUGINS"
    run -0 berth namespaces ls
    [[ ${lines[0]} =~ ^NAME\ +LABELS ]]
    [[ ${lines[1]} =~ ^default ]]
    run -0 berth ns create dev team=web tier=1
    [[ -z $output ]]
    run -0 berth namespace ls
    [[ $output == *"dev     team=web,tier=1"* ]] || [[ $output =~ dev\ +team=web,tier=1 ]]
    run -1 berth ns create dev
    [[ $output == *"namespace dev already exists"* ]]
    run -1 berth ns create Bad_Name
    [[ $output == *"invalid namespace name"* ]]

    # label: sets and removes only the named labels
    run -0 berth ns label dev tier=2 owner=me
    [[ $output == "owner=me,team=web,tier=2" ]]
    run -0 berth ns label dev owner=
    [[ $output == "team=web,tier=2" ]]
    run -0 berth ns ls -q
    [[ $output == $'default\ndev' ]]
    run -0 berth ns ls --format json
    [[ $(jq -r '.[] | select(.name == "dev") | .labels.tier' <<<"$output") == 2 ]]

    run -0 berth ns rm dev
    [[ $output == dev ]]
    run -0 berth ns ls -q
    [[ $output == default ]]
    # an absent namespace counts as removed (ctr's behaviour)
    run -0 berth ns rm dev
    # each mutation published its event (the core logs them at debug level)
    grep -q 'topic=/namespaces/create ns=dev publisher=metadata' "$BERTH_LOG"
    grep -q 'topic=/namespaces/update ns=dev publisher=metadata' "$BERTH_LOG"
    grep -q 'topic=/namespaces/delete ns=dev publisher=metadata' "$BERTH_LOG"
}

@test "namespaces: delete refused while the namespace holds anything, listing what" {
    berth_start_daemon "$PLUGINS"
    create_image full img:1
    berth -n full leases create --id keep >/dev/null
    run -1 berth ns rm full
    [[ $output == *"namespace full must be empty, but it still has images, leases"* ]]
    berth_rpc call images.delete '{"namespace": "full", "name": "img:1"}' >/dev/null
    run -1 berth ns rm full
    [[ $output == *"still has leases"* ]]
    [[ $output != *images* ]]
    berth -n full leases rm keep
    run -0 berth ns rm full
    [[ $output == full ]]
    # a namespace whose name extends another's is not counted for it
    create_image full2 img:1
    berth ns create full
    run -0 berth ns rm full
}

@test "leases: create with --id and expiry label, ls, rm, generated ids" {
    berth_start_daemon "$PLUGINS"
    run -0 berth leases create --id demo
    [[ $output == demo ]]
    run -0 berth leases ls
    [[ ${lines[0]} =~ ^ID\ +CREATED\ AT\ +LABELS ]]
    [[ ${lines[1]} =~ ^demo\ +20[0-9-]+T[0-9:]+Z\ +berth.io/gc.expire=20[0-9-]+T[0-9:]+Z ]]
    # the default expiry is 24 h after creation
    local created expire
    created=$(berth leases ls --format json | jq -r '.[0].created_at')
    expire=$(berth leases ls --format json | jq -r '.[0].expire')
    (( (expire - created) / 1000000000 > 86390 && (expire - created) / 1000000000 < 86410 ))

    run -0 berth lease create -x 0 app=x
    local gen=$output
    [[ $gen =~ ^[0-9]+-[0-9a-f]{10}$ ]]
    run -0 berth leases ls
    [[ $output =~ $gen\ +[0-9TZ:-]+\ +app=x ]]
    run -0 berth leases ls -q
    [[ $(sort <<<"$output") == $(printf '%s\n' "$gen" demo | sort) ]]
    run -0 berth leases ls 'labels.app==x'
    [[ ${#lines[@]} == 2 && ${lines[1]} == "$gen"* ]]
    run -1 berth leases ls 'labels.==x'
    [[ $output == *"invalid filter"*"position 8"* ]]
    run -1 berth leases create --id demo
    [[ $output == *"already exists"* ]]
    run -1 berth leases create --id 'bad id'
    [[ $output == *"invalid lease id"* ]]

    # resources, through the raw API
    berth_rpc call leases.add_resource "{\"id\": \"demo\", \"resource\": {\"type\": \"content\", \"id\": \"$D1\"}}"
    run -0 berth_rpc call leases.list_resources '{"id": "demo"}'
    [[ $(jq -r '.resources[0].id' <<<"$output") == "$D1" ]]

    run -0 berth leases rm demo "$gen"
    [[ $output == $'demo\n'"$gen" ]]
    run -1 berth leases rm demo
    [[ $output == *"lease demo not found in namespace default"* ]]
    run -0 berth leases ls -q
    [[ -z $output ]]
    # --sync without a gc plugin: nothing to wait for, still succeeds
    berth leases create --id s >/dev/null
    run -0 berth leases rm --sync s
}

@test "leases and images are isolated per namespace" {
    berth_start_daemon "$PLUGINS"
    berth -n a leases create --id only-a >/dev/null
    create_image a img:1
    run -0 berth -n b leases ls -q
    [[ -z $output ]]
    run -1 berth -n b leases rm only-a
    [[ $output == *"lease only-a not found in namespace b"* ]]
    run -1 berth_rpc call images.get '{"namespace": "b", "name": "img:1"}'
    run -0 berth_rpc call images.get '{"namespace": "a", "name": "img:1"}'
    run -0 berth -n a leases ls -q
    [[ $output == only-a ]]
    run -1 berth_rpc call leases.add_resource \
        "{\"namespace\": \"b\", \"id\": \"only-a\", \"resource\": {\"type\": \"content\", \"id\": \"$D1\"}}"
    [[ $output == *not_found* ]]
}

@test "request_id: a repeated mutation gets the recorded result" {
    berth_start_daemon "$PLUGINS"
    local p='{"image": {"name": "r:1", "target": {"media_type": "m", "digest": "'$D1'", "size": 1}}, "request_id": "req-42"}'
    run -0 berth_rpc call images.create "$p"
    local first=$output
    run -0 berth_rpc call images.create "$p"
    [[ $output == "$first" ]]
    # without the request id it is a new request: already exists
    run -1 berth_rpc call images.create '{"image": {"name": "r:1", "target": {"media_type": "m", "digest": "'$D1'", "size": 1}}}'
    [[ $output == *already_exists* ]]
}

# The burst client: 1,000 namespaces.update calls, one at a time, each with
# its own request_id. An acknowledged update is appended to ACKED. It
# kill -9s berth-metadata right after sending update 300 (in flight: it may
# or may not have committed) and, once the plugin is back, after the ack of
# update 700. A call that fails `unavailable` is re-sent with the same
# request_id until acknowledged (answered from the replay table if it had
# committed). Prints "done N retries=R".
burst_client() {
    /usr/bin/python3 - "$BERTH_SOCK" "$1" "$2" <<'EOF'
import os, signal, socket, struct, sys, time
import msgpack

sock_path, acked_path, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock_path)
buf = b""

def plugin_pid():
    global buf
    data = msgpack.packb([0, 999999, "plugins.list", {"id": "metadata"}], use_bin_type=True)
    s.sendall(struct.pack(">I", len(data)) + data)
    err, res = wait(999999)
    p = res["plugins"][0]
    return p.get("pid", 0), p.get("status")

def call(msgid, method, params, kill=0):
    data = msgpack.packb([0, msgid, method, params], use_bin_type=True)
    s.sendall(struct.pack(">I", len(data)) + data)
    if kill:
        os.kill(kill, signal.SIGKILL)
    return wait(msgid)

def wait(msgid):
    global buf
    while True:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            buf += chunk
        n = struct.unpack(">I", buf[:4])[0]
        msg = msgpack.unpackb(buf[4:4 + n], raw=False)
        buf = buf[4 + n:]
        if msg[0] == 1 and msg[1] == msgid:
            return msg[2], msg[3]

acked = open(acked_path, "w")
retries = 0
msgid = 0
for i in range(1000):
    params = {"name": "burst", "labels": {"k%d" % i: "v%d" % i},
              "fields": ["labels.k%d" % i], "request_id": "burst-%d" % i}
    kill = pid if i == 300 else 0
    if i == 700:
        # Wait until the restarted plugin is up, then kill it again.
        while True:
            p2, st = plugin_pid()
            if st == "ok" and p2 and p2 != pid:
                break
            time.sleep(0.05)
        kill = p2
    while True:
        msgid += 1
        err, res = call(msgid, "namespaces.update", params, kill)
        kill = 0
        if err is None:
            break
        if err["code"] != "unavailable":
            raise SystemExit("update %d failed: %s" % (i, err))
        retries += 1
        time.sleep(0.01)
    acked.write("%d\n" % i)
    acked.flush()
print("done %d retries=%d" % (i + 1, retries))
EOF
}

@test "kill -9 during 1,000 label updates: every acknowledged update survives, plugin restarts" {
    berth_start_daemon "$PLUGINS"
    berth ns create burst
    local pid1 acked=$BERTH_TEST_DIR/acked
    pid1=$(berth_plugin_pid metadata)
    [[ $pid1 =~ ^[0-9]+$ ]]
    run -0 burst_client "$acked" "$pid1"
    echo "$output"
    [[ $output == "done 1000 retries="* ]]
    # The plugin came back by itself, as a new process, and is healthy.
    berth_wait_for 20 bash -c "[[ \$($BERTH_RPCTOOL -a $BERTH_SOCK call plugins.list '{\"id\": \"metadata\"}' | jq -r '.plugins[0].status') == ok ]]"
    local pid2
    pid2=$(berth_plugin_pid metadata)
    [[ $pid2 =~ ^[0-9]+$ && $pid2 != "$pid1" ]]
    run -0 berth_rpc call plugins.list '{"id": "metadata"}'
    (( $(jq -r '.plugins[0].restarts' <<<"$output") >= 2 ))
    ! kill -0 "$pid1" 2>/dev/null || false
    # Every acknowledged update is present.
    [[ $(wc -l <"$acked") == 1000 ]]
    local labels
    labels=$(berth_rpc call namespaces.get '{"name": "burst"}' | jq -c '.namespace.labels')
    run jq -r 'length' <<<"$labels"
    [[ $output == 1000 ]]
    local missing
    missing=$(while read -r i; do
        [[ $(jq -r --arg k "k$i" '.[$k]' <<<"$labels") == "v$i" ]] || echo "$i"
    done <"$acked" | head -5)
    [[ -z $missing ]] || { echo "missing acknowledged updates: $missing"; false; }
    # The database opened cleanly after the kill (no recovery complaints).
    ! grep -q "refuses to start" "$BERTH_LOG" || false
}

@test "a slow filtered listing runs off the plugin's loop: other requests are answered meanwhile" {
    berth_start_daemon "$PLUGINS"
    berth ns create slow
    # 120 images with a 4 KiB label: a regex at the size limit (.{0,999}x)
    # costs tens of ms per label, seconds for the listing.
    local big i
    big=$(head -c 4000 /dev/zero | tr '\0' a)
    for i in $(seq 1 120); do
        berth_rpc call images.create "{\"namespace\": \"slow\", \"image\": {\"name\": \"img$i\",
            \"labels\": {\"big\": \"$big\"}, \"target\": {\"media_type\":
            \"application/vnd.oci.image.manifest.v1+json\", \"digest\": \"$D1\", \"size\": 1}}}" >/dev/null
    done
    local t0 list_ms get_ms lpid
    t0=$(date +%s%N)
    berth_rpc call images.list '{"namespace": "slow", "filters": ["labels.big~=\".{0,999}x\""]}' \
        >"$BERTH_TEST_DIR/list.out" &
    lpid=$!
    sleep 0.3
    local g0
    g0=$(date +%s%N)
    run -0 berth_rpc call images.get '{"namespace": "slow", "name": "img7"}'
    get_ms=$((($(date +%s%N) - g0) / 1000000))
    # The listing is still running: the get did not wait for it.
    kill -0 "$lpid"
    wait "$lpid"
    list_ms=$((($(date +%s%N) - t0) / 1000000))
    echo "list ${list_ms} ms, get during it ${get_ms} ms"
    [[ $(jq '.images | length' "$BERTH_TEST_DIR/list.out") == 0 ]]
    ((list_ms > 1000))
    ((get_ms * 4 < list_ms))
}

@test "a corrupted database is refused with a clear message, never recreated" {
    berth_start_daemon "$PLUGINS"
    berth ns create keepme
    local db=$BERTH_ROOT/metadata/meta.lmdb
    [[ -f $db ]]
    local pid
    pid=$(berth_plugin_pid metadata)
    kill -STOP "$pid"
    # Garbage over the meta pages, then kill: the restart must refuse the file.
    dd if=/dev/urandom of="$db" bs=4096 count=2 conv=notrunc status=none
    local size_before
    size_before=$(stat -c %s "$db")
    kill -KILL "$pid"
    berth_wait_for 20 grep -q "refuses to start" "$BERTH_LOG"
    grep "refuses to start" "$BERTH_LOG" | head -1 | grep -q "meta.lmdb"
    [[ $(stat -c %s "$db") == "$size_before" ]]
    run -1 berth --timeout 2s ns ls
}

@test "snapshots: records over the overlay backend (prepare, commit, view, rm)" {
    [[ -x $BERTH_BIN/berth-snapshot-overlay ]] || skip "berth-snapshot-overlay not built"
    berth_start_daemon '{"content": {"enabled": false}, "transfer": {"enabled": false},
                         "runtime-runc": {"enabled": false}, "gc": {"enabled": false}}'
    run -0 berth_rpc call snapshots.prepare '{"key": "a"}'
    [[ $(jq -r '.mounts | length' <<<"$output") == 1 ]]
    run -0 berth_rpc call snapshots.commit '{"key": "a", "name": "A"}'
    run -0 berth_rpc call snapshots.prepare '{"key": "b", "parent": "A"}'
    [[ $(jq -r '.mounts[0].type' <<<"$output") == overlay ]]
    run -0 berth_rpc call snapshots.stat '{"key": "b"}'
    [[ $(jq -r '.info.parent' <<<"$output") == A && $(jq -r '.info.kind' <<<"$output") == active ]]
    # isolation: another namespace sees none of it
    run -0 berth_rpc call snapshots.list '{"namespace": "other"}'
    [[ $(jq -r '.infos | length' <<<"$output") == 0 ]]
    run -1 berth_rpc call snapshots.remove '{"key": "A"}'
    [[ $output == *"other snapshots use it as their parent"* ]]
    local bid
    bid=$(berth_rpc call snapshots.stat '{"key": "b"}' | jq -r .info.id)
    [[ -d $BERTH_ROOT/snapshot-overlay/snapshots/$bid ]]
    run -0 berth_rpc call snapshots.remove '{"key": "b"}'
    # the backend directory is gone when remove answers
    [[ ! -e $BERTH_ROOT/snapshot-overlay/snapshots/$bid ]]
    run -0 berth_rpc call snapshots.remove '{"key": "A"}'
    run -0 berth_rpc call snapshots.list '{}'
    [[ $(jq -r '.infos | length' <<<"$output") == 0 ]]
}
