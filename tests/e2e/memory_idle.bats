#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Idle memory (issue 2): the libraries transfer and snapshot-overlay load for
# an import, a pull or a layer apply are given back once the plugin has been
# idle for `unload_idle_ms` (1 s here). snapshot-overlay dlclose's its
# extraction library (same pid); transfer, whose libraries cannot all be
# unloaded (OpenSSL is linked -z nodelete), asks berthd to recycle it
# (plugin.recycle: a new pid, not counted as a restart). The next request
# loads them again: imports, pulls and runs keep working, an import that
# outlasts the idle period is not cut short, and requests that arrive while
# transfer is being recycled wait for the new instance.
#
# Failpoints of the daemon: the first layer apply pauses 2.5 s once it is
# done (the import outlasts the idle period), and every transfer instance
# takes 1.5 s to stop (the recycle lasts long enough to send requests into it).

bats_require_minimum_version 1.5.0

load lib/daemon.bash
load lib/registry.bash

IDLE_MS=1000

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    [[ $(id -u) == 0 ]] || return 0
    command -v runc >/dev/null && command -v umoci >/dev/null && [[ -x /bin/busybox ]] || return 0
    [[ -x $BERTH_BIN/berthd && -x $BERTH_BIN/berth-transfer ]] || return 0
    export FIX
    FIX=$(mktemp -d /tmp/berth-memidle.XXXXXX)
    export CG_PARENT=/berth-memidle-$$
    registry_build_image "$FIX/img1" 1
    tar -C "$FIX/img1" -cf "$FIX/img1.tar" .
    # A second image with a layer of its own (the first may be img1's: builds
    # in the same second make the same tar).
    registry_build_image "$FIX/img2" 2
    tar -C "$FIX/img2" -cf "$FIX/img2.tar" .
    BERTH_FAILPOINTS="overlay.apply.after_done=once:pause=2500;transfer.fini=pause=1500" \
        berth_start_daemon "{\"gc\": {\"enabled\": false},
        \"transfer\": {\"config\": {\"unload_idle_ms\": $IDLE_MS}},
        \"snapshot-overlay\": {\"config\": {\"unload_idle_ms\": $IDLE_MS}},
        \"runtime-runc\": {\"config\": {\"cgroup_parent\": \"$CG_PARENT\"}}}"
    berth_save_daemon "$FIX/daemon.env"
    for id in content metadata snapshot-overlay runtime-runc transfer; do
        echo "$id $(berth_plugin_pid "$id")"
    done >"$FIX/pids0"
}

teardown_file() {
    [[ -n ${FIX:-} && -d $FIX ]] || return 0
    berth_stop_saved_daemon "$FIX/daemon.env"
    [[ -n ${REG_PID:-} ]] && registry_stop
    local c
    for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ -d $c${CG_PARENT#/} ]] || continue
        find "$c${CG_PARENT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    rm -rf "$FIX"
}

setup() {
    [[ $(id -u) == 0 ]] || skip "needs root"
    command -v runc >/dev/null || skip "runc not installed (scripts/install-deps.sh)"
    command -v umoci >/dev/null || skip "umoci not installed (scripts/install-deps.sh)"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (scripts/install-deps.sh)"
    [[ -n ${FIX:-} && -f $FIX/daemon.env ]] || skip "fixture setup failed (berthd or berth-transfer not built?)"
    berth_load_daemon "$FIX/daemon.env"
}

teardown() {
    if [[ ${BATS_TEST_COMPLETED:-} != 1 ]]; then
        berth_dump_log 60
    fi
    stop_extra_daemon
}

# The last test starts daemons of its own: stopped here even when it fails.
stop_extra_daemon() {
    [[ -f $FIX/extra.env ]] || return 0
    (
        read -r BERTH_TEST_DIR BERTH_PID <"$FIX/extra.env"
        export BERTH_TEST_DIR BERTH_PID
        berth_stop_daemon
    )
    rm -f "$FIX/extra.env"
}

start_extra_daemon() { # PLUGINS-JSON (env BERTH_WAIT_READY)
    local rc=0
    berth_start_daemon "$1" || rc=$?
    echo "$BERTH_TEST_DIR $BERTH_PID" >"$FIX/extra.env"
    return $rc
}

plugin_field() { # ID FIELD
    berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r ".plugins[0].$2"
}

pid0() { awk -v id="$1" '$1 == id {print $2}' "$FIX/pids0"; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Neither of the plugin's libraries (nor what they pull in) is mapped.
transfer_restarting() { [[ $(plugin_field transfer status) == restarting ]]; }

transfer_released() {
    local p
    p=$(plugin_field transfer pid)
    [[ $(plugin_field transfer status) == ok && -n $p && $p != 0 && $p != "$1" ]] || return 1
    ! grep -qE 'berth-transfer-(impl|archive)\.so|libcurl|libarchive|libcrypto' "/proc/$p/maps" || false
}

overlay_released() {
    ! grep -qE 'berth-snapshot-overlay-apply\.so|libarchive|libxml2|libicuuc' \
        "/proc/$(plugin_field snapshot-overlay pid)/maps" || false
}

log_count() { # PATTERN: lines of the daemon log matching it (fixed string)
    grep -cF -- "$1" "$BERTH_LOG" || true
}

image_by_name() { # SUBSTRING
    berth images ls -q | grep -F -- "$1" | head -n 1
}

@test "an import that outlasts the idle period is not cut short; the image runs" {
    local t0
    t0=$(pid0 transfer)
    # The layer apply pauses 2.5 s: transfer's idle timer fires during the
    # import and berthd refuses the recycle (the import is in flight).
    run berth images import --base-name memidle/one "$FIX/img1.tar"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    grep -q "plugin=transfer pid=$t0 msg=\"implementation loaded\"" "$BERTH_LOG"
    grep -q "plugin=transfer pid=$t0 msg=\"archive support loaded\"" "$BERTH_LOG"
    grep -q "plugin=transfer pid=$t0 msg=\"recycle refused; retrying when idle\".*busy" "$BERTH_LOG"
    [ "$(log_count 'msg="extraction library loaded"')" -ge 1 ]
    # The pause ran with the library held: it was not unloaded under the apply.
    local applied unloaded
    applied=$(grep -n 'msg="layer applied"' "$BERTH_LOG" | head -n 1 | cut -d: -f1)
    unloaded=$(grep -n 'msg="extraction library unloaded"' "$BERTH_LOG" | head -n 1 | cut -d: -f1)
    [[ -z $unloaded || $unloaded -gt $applied ]]
    IMG=$(image_by_name memidle/one)
    [ -n "$IMG" ]
    run berth run --rm "$IMG" memidle-1 echo hi
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$output" = hi ]
}

@test "idle: transfer is recycled and snapshot-overlay unloads its library; both back near idle size" {
    local t0 o0 p rss
    t0=$(pid0 transfer)
    o0=$(pid0 snapshot-overlay)
    berth_wait_for 20 transfer_released "$t0"
    berth_wait_for 20 overlay_released
    grep -q 'msg="recycle done" plugin=transfer' "$BERTH_LOG"
    # A recycle is neither a crash nor a restart.
    [ "$(plugin_field transfer restarts)" = 0 ]
    [ "$(plugin_field snapshot-overlay restarts)" = 0 ]
    run ! grep -q 'msg="plugin exited; restarting"' "$BERTH_LOG"
    # snapshot-overlay unloaded in place; nothing else moved.
    for id in content metadata snapshot-overlay runtime-runc; do
        [ "$(plugin_field "$id" pid)" = "$(pid0 "$id")" ]
    done
    [ "$(plugin_field snapshot-overlay pid)" = "$o0" ]
    # Idle sizes: transfer 2.0-2.3 MiB fresh; snapshot-overlay 2.4 MiB fresh,
    # plus about 1.7 MiB that dlclose cannot give back (libstdc++, which ICU
    # loaded and which pins itself, libm, libgcc_s). Loaded: 14 and 6.5 MiB.
    p=$(plugin_field transfer pid)
    rss=$(rss_kib "$p")
    echo "transfer RSS ${rss} KiB"
    [ "$rss" -lt 4096 ]
    rss=$(rss_kib "$o0")
    echo "snapshot-overlay RSS ${rss} KiB"
    [ "$rss" -lt 5120 ]
}

@test "after the unload, a second import and a pull load the libraries again and their images run" {
    local loaded0 impl0 p
    loaded0=$(log_count 'msg="extraction library loaded"')
    impl0=$(log_count 'msg="implementation loaded"')
    p=$(plugin_field transfer pid)
    run berth images import --base-name memidle/two "$FIX/img2.tar"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$(log_count 'msg="extraction library loaded"')" -gt "$loaded0" ]
    grep -q "plugin=transfer pid=$p msg=\"archive support loaded\"" "$BERTH_LOG"
    IMG=$(image_by_name memidle/two)
    [ -n "$IMG" ]
    run berth run --rm "$IMG" memidle-2 echo hi
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    [ "$output" = hi ]

    if command -v docker-registry >/dev/null && command -v skopeo >/dev/null; then
        registry_start
        registry_build_image "$FIX/img3" 3
        registry_push "$FIX/img3" memidle:3
        berth_wait_for 20 transfer_released "$p"
        p=$(plugin_field transfer pid)
        run berth images pull --plain-http "$REG/memidle:3"
        [ "$status" -eq 0 ] || { echo "$output"; false; }
        grep -q "plugin=transfer pid=$p msg=\"implementation loaded\"" "$BERTH_LOG"
        run berth run --rm "$REG/memidle:3" memidle-3 cat /etc/motd
        [ "$status" -eq 0 ] || { echo "$output"; false; }
        [ "$output" = "hello from layer 3" ]
        registry_stop
    fi
    [ "$(log_count 'msg="implementation loaded"')" -gt "$impl0" ]
    # And it all goes away again.
    berth_wait_for 20 transfer_released "$p"
    berth_wait_for 20 overlay_released
    [ "$(plugin_field transfer restarts)" = 0 ]
}

@test "requests sent while transfer is being recycled wait for the new instance" {
    local p i
    berth_wait_for 20 transfer_released "$(pid0 transfer)"
    p=$(plugin_field transfer pid)
    # Load its library, then catch the recycle: the old instance takes 1.5 s
    # to stop (failpoint), berthd queues what arrives meanwhile.
    run berth images check
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    berth_wait_for 20 transfer_restarting
    for i in 1 2 3; do
        berth images check >"$FIX/check.$i" 2>&1 &
        echo $! >"$FIX/check.$i.pid"
    done
    run berth images export "$FIX/out.tar" "$(image_by_name memidle/one)"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    tar -tf "$FIX/out.tar" | grep -q '^index.json$'
    for i in 1 2 3; do
        wait "$(cat "$FIX/check.$i.pid")" || { cat "$FIX/check.$i"; false; }
        grep -q 'memidle/one' "$FIX/check.$i"
    done
    # Served by the new instance.
    [ "$(plugin_field transfer pid)" != "$p" ]
    grep -q "old_pid=$p" "$BERTH_LOG"
    [ "$(plugin_field transfer restarts)" = 0 ]
}

@test "unload_idle_ms is validated; 0 keeps the libraries loaded" {
    # Bad values: each plugin refuses to start, naming the key.
    BERTH_WAIT_READY=0 start_extra_daemon '{"gc": {"enabled": false},
        "transfer": {"config": {"unload_idle_ms": "soon"}},
        "snapshot-overlay": {"config": {"unload_idle_ms": -5}}}'
    berth_wait_for 15 grep -q 'transfer config: unload_idle_ms must be an integer' "$BERTH_LOG"
    berth_wait_for 15 grep -q 'plugin=snapshot-overlay .*init failed.*unload_idle_ms' "$BERTH_LOG"
    stop_extra_daemon

    # 0: never unloaded (the daemon of this file unloads after 1 s).
    start_extra_daemon '{"gc": {"enabled": false},
        "transfer": {"config": {"unload_idle_ms": 0}},
        "snapshot-overlay": {"config": {"unload_idle_ms": 0}},
        "runtime-runc": {"config": {"cgroup_parent": "'"$CG_PARENT"'"}}}'
    local t o
    t=$(berth_plugin_pid transfer)
    o=$(berth_plugin_pid snapshot-overlay)
    berth images import --base-name memidle/zero "$FIX/img1.tar" >/dev/null
    sleep 2.5
    grep -q 'berth-transfer-archive.so' "/proc/$t/maps"
    grep -q 'berth-snapshot-overlay-apply.so' "/proc/$o/maps"
    [ "$(berth_plugin_pid transfer)" = "$t" ]
    run ! grep -q 'plugin.recycle\|recycle requested\|library unloaded' "$BERTH_LOG"
}
