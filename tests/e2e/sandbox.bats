#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Plugin sandboxes and sockets (issue 9, "Processes and sockets"): every
# thread of the sandboxed plugins runs under seccomp; a forbidden syscall
# (execve, mount, ptrace, socket) kills only that plugin with SIGSYS and the
# core restarts it while everything else keeps serving; no berth process owns
# an abstract unix socket (CVE-2020-15257 class). The forbidden calls are
# made by test hooks armed with BERTH_FAILPOINTS (content.sandbox_probe,
# gc.sandbox_probe, metadata.sandbox_probe, transfer.sandbox_probe), see
# docs/security.md.

bats_require_minimum_version 1.5.0

SIGSYS_EXIT='killed by signal 31 (Bad system call)'

setup() {
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash b
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins)"
    command -v jq >/dev/null || skip "jq not installed"
    # shellcheck source=/dev/null
    source "$lib"
    for b in berthd berth berth-content berth-metadata berth-gc; do
        [[ -x $BERTH_BIN/$b ]] || skip "$b not built (looked in $BERTH_BIN)"
    done
    BG_PIDS=()
}

teardown() {
    local p
    for p in "${BG_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        [[ ${BATS_TEST_COMPLETED:-} == 1 ]] || berth_dump_log 60 >&3 || true
        berth_stop_daemon
        DAEMON_STARTED=
    fi
    if [[ -n ${REG_STARTED:-} ]]; then
        registry_stop
        REG_STARTED=
    fi
    unset BERTH_FAILPOINTS
    if [[ -n ${CG:-} ]]; then
        local c
        for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
            [[ -d $c${CG#/} ]] && rmdir "$c${CG#/}"/* "$c${CG#/}" 2>/dev/null || true
        done
        CG=
    fi
}

start() {
    # Set first: a daemon whose plugins never got ready must still be stopped.
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

# Prints "TID MODE FILTERS" for every thread of PID (Seccomp 2 = filter mode).
thread_seccomp() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(awk '/^Seccomp:/ {m=$2} /^Seccomp_filters:/ {f=$2} END {print m, f}' "$t/status")"
    done
}

# Asserts that every thread of plugin ID runs under at least MIN filters.
assert_sandboxed() { # ID MIN-FILTERS
    local pid n=0 tid mode filters
    pid=$(plugin_field "$1" pid)
    [[ $pid =~ ^[0-9]+$ ]]
    while read -r tid mode filters; do
        n=$((n + 1))
        if [[ $mode != 2 || $filters -lt $2 ]]; then
            echo "plugin $1 pid $pid thread $tid: Seccomp=$mode filters=$filters (want 2, >= $2)"
            return 1
        fi
    done < <(thread_seccomp "$pid")
    echo "plugin $1 pid $pid: $n threads sandboxed"
    [[ $n -ge 1 ]]
}

@test "content, gc and snapshot-overlay run every thread under seccomp" {
    start
    # Make content start its thread pool (threads created after the filter
    # was loaded inherit it).
    head -c 3000000 /dev/urandom >"$BERTH_TEST_DIR/blob"
    d=$(berth content ingest sbx-1 --label berth.io/gc.root=1 <"$BERTH_TEST_DIR/blob")
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/blob"
    # content and gc: the SDK allowlist plus a denylist on top.
    assert_sandboxed content 2
    assert_sandboxed gc 2
    [[ $(thread_seccomp "$(plugin_field content pid)" | wc -l) -gt 1 ]]
    grep -q 'plugin=content .*msg="sandbox applied" mode=allowlist' "$BERTH_LOG"
    grep -q 'plugin=gc .*msg="sandbox applied" mode=allowlist' "$BERTH_LOG"
    if [[ $(plugin_field snapshot-overlay status) == ok ]]; then
        assert_sandboxed snapshot-overlay 1
    fi
    # The core itself is not confined by these filters (it spawns plugins).
    [[ $(awk '/^Seccomp:/ {print $2}' /proc/"$BERTH_PID"/status) == 0 ]]
}

@test "content: execve, mount, ptrace and fork (clone without CLONE_THREAD) each kill only content (SIGSYS); the core restarts it" {
    export BERTH_FAILPOINTS="content.sandbox_probe=error"
    start
    head -c 1000000 /dev/urandom >"$BERTH_TEST_DIR/before"
    # gc.root: unreferenced content would be collected by gc meanwhile.
    d=$(berth content ingest before-1 --label berth.io/gc.root=1 <"$BERTH_TEST_DIR/before")
    declare -A others
    for id in metadata gc snapshot-overlay transfer runtime-runc; do
        [[ $(plugin_field "$id" status) == ok ]] && others[$id]=$(plugin_field "$id" pid)
    done
    restarts0=$(plugin_field content restarts)
    n=0
    for sc in execve mount ptrace fork; do
        old=$(plugin_field content pid)
        run berth content abort "sandbox-probe-$sc"
        echo "$sc: $output"
        [ "$status" -ne 0 ]
        # The probe must not have come back: that would mean the call was allowed.
        [[ $output != *"not stopped by the sandbox"* ]]
        berth_wait_for 20 grep -qF "msg=\"plugin exited\" plugin=content pid=$old exit=\"$SIGSYS_EXIT\"" "$BERTH_LOG"
        berth_wait_for 20 plugin_restarted content "$old"
        n=$((n + 1))
    done
    [ "$(plugin_field content restarts)" -eq $((restarts0 + n)) ]
    [ "$(plugin_field content status)" = ok ]
    # The others never noticed: same pids, no restarts.
    for id in "${!others[@]}"; do
        [ "$(plugin_field "$id" pid)" = "${others[$id]}" ]
        [ "$(plugin_field "$id" restarts)" = 0 ]
    done
    # The daemon and the restarted content keep serving.
    berth version >/dev/null
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/before"
    head -c 2000000 /dev/urandom >"$BERTH_TEST_DIR/after"
    d2=$(berth content ingest after-1 --label berth.io/gc.root=1 <"$BERTH_TEST_DIR/after")
    berth content get "$d2" | cmp - "$BERTH_TEST_DIR/after"
    # An ordinary abort still behaves as before.
    run berth content abort no-such-ref
    [ "$status" -ne 0 ]
    [[ $output == *"no ingest with ref no-such-ref"* ]]
}

@test "gc: a forbidden execve kills only gc (SIGSYS); the core restarts it" {
    export BERTH_FAILPOINTS="gc.sandbox_probe=error"
    start '{"gc": {"config": {"startup_delay": "0ms"}}}'
    old=$(plugin_field gc pid)
    content_pid=$(plugin_field content pid)
    meta_pid=$(plugin_field metadata pid)
    # Any event gc subscribed to triggers the probe: a namespace deletion.
    berth namespaces create sbx-ns >/dev/null
    berth namespaces rm sbx-ns >/dev/null
    berth_wait_for 20 grep -qF "msg=\"plugin exited\" plugin=gc pid=$old exit=\"$SIGSYS_EXIT\"" "$BERTH_LOG"
    berth_wait_for 20 plugin_restarted gc "$old"
    [ "$(plugin_field gc restarts)" -ge 1 ]
    [ "$(plugin_field content pid)" = "$content_pid" ]
    [ "$(plugin_field metadata pid)" = "$meta_pid" ]
    # The restarted gc serves a collection.
    run berth gc --format json
    echo "$output"
    [ "$status" -eq 0 ]
    run ! grep -q "not stopped by the sandbox" "$BERTH_LOG"
}

# ---- metadata and transfer --------------------------------------------------------

# Records "ID=PID" of every running plugin except EXCEPT in OTHERS.
others_except() { # EXCEPT
    local id
    OTHERS=()
    for id in content metadata gc snapshot-overlay transfer runtime-runc; do
        [[ $id == "$1" ]] && continue
        if [[ $(plugin_field "$id" status) == ok ]]; then
            OTHERS+=("$id=$(plugin_field "$id" pid)")
        fi
    done
    echo "others: ${OTHERS[*]}"
}

# The plugins recorded by others_except kept their pids and never restarted.
others_unchanged() {
    local e
    for e in "${OTHERS[@]}"; do
        [ "$(plugin_field "${e%%=*}" pid)" = "${e#*=}" ]
        [ "$(plugin_field "${e%%=*}" restarts)" = 0 ]
    done
}

# probe_kills ID METHOD PARAM-KEY SYSCALL...: each request `METHOD
# {PARAM-KEY: "sandbox-probe-SYSCALL"}` must kill plugin ID with SIGSYS (not
# come back saying the call was allowed), and the core must restart it.
probe_kills() {
    local id=$1 method=$2 key=$3 sc old n=0 restarts0
    shift 3
    restarts0=$(plugin_field "$id" restarts)
    for sc in "$@"; do
        old=$(plugin_field "$id" pid)
        run berth_rpc call "$method" "{\"$key\": \"sandbox-probe-$sc\"}"
        echo "$id $sc: $output"
        [ "$status" -ne 0 ]
        [[ $output != *"not stopped by the sandbox"* ]]
        berth_wait_for 20 grep -qF "msg=\"plugin exited\" plugin=$id pid=$old exit=\"$SIGSYS_EXIT\"" "$BERTH_LOG"
        berth_wait_for 20 plugin_restarted "$id" "$old"
        n=$((n + 1))
    done
    [ "$(plugin_field "$id" restarts)" -eq $((restarts0 + n)) ]
    [ "$(plugin_field "$id" status)" = ok ]
}

# An OCI image in a local registry as $REG/sbx:1 (skips without the tools).
registry_image() {
    # shellcheck source=/dev/null
    source "$BATS_TEST_DIRNAME/lib/registry.bash"
    registry_require_tools
    [[ -x /bin/busybox ]] || skip "busybox-static not installed"
    registry_build_image "$BERTH_TEST_DIR/img" 2
    registry_start
    REG_STARTED=1
    registry_push "$BERTH_TEST_DIR/img" sbx:1
}

@test "metadata and transfer run every thread under seccomp; transfer loads its libraries under it" {
    [[ -x $BERTH_BIN/berth-transfer ]] || skip "berth-transfer not built"
    start '{"runtime-runc": {"enabled": false}}'
    [[ $(plugin_field transfer status) == ok ]] || skip "transfer is not running"
    grep -q 'plugin=metadata .*msg="sandbox applied" mode=allowlist' "$BERTH_LOG"
    grep -q 'plugin=transfer .*msg="sandbox applied" mode=allowlist' "$BERTH_LOG"
    # Writes start metadata's writer thread (libuv pool) after the filters.
    for i in 1 2 3; do berth namespaces create "sbx-$i" >/dev/null; done
    assert_sandboxed metadata 2
    [[ $(thread_seccomp "$(plugin_field metadata pid)" | wc -l) -gt 1 ]]
    # transfer is idle: sandboxed, and its libraries are not loaded yet.
    tpid=$(plugin_field transfer pid)
    assert_sandboxed transfer 2
    run ! grep -q 'berth-transfer-impl.so' "/proc/$tpid/maps"
    # A pull loads berth-transfer-impl.so (libcurl, OpenSSL) under the
    # filters; an import loads berth-transfer-archive.so.
    registry_image
    berth images pull --plain-http "$REG/sbx:1" >/dev/null
    run berth images check "$REG/sbx:1"
    echo "$output"
    [[ $output == *complete*true* ]]
    tar -C "$BERTH_TEST_DIR/img" -cf "$BERTH_TEST_DIR/img.tar" .
    berth images import --base-name sbx-import "$BERTH_TEST_DIR/img.tar" >/dev/null
    grep -q 'berth-transfer-impl.so' "/proc/$tpid/maps"
    grep -q 'berth-transfer-archive.so' "/proc/$tpid/maps"
    # Host names go through glibc's resolver (nss files, then DNS over UDP:
    # socket, connect, sendmmsg, recvfrom) inside the sandbox. A name that
    # resolves nowhere fails that pull only.
    run berth images pull --plain-http "berth-sbx-no-such-host.invalid:$REG_PORT/sbx:1"
    echo "$output"
    [ "$status" -ne 0 ]
    [[ $output == *berth-sbx-no-such-host.invalid* ]]
    # A name from /etc/hosts (this machine's own name, when it is loopback).
    h=$(hostname)
    if getent ahostsv4 "$h" | grep -q '^127\.'; then
        berth images pull --plain-http "$h:$REG_PORT/sbx:1" >/dev/null
    fi
    # Still the same process, every thread (curl's, the pool's) confined.
    [ "$(plugin_field transfer pid)" = "$tpid" ]
    [ "$(plugin_field transfer restarts)" = 0 ]
    [ "$(plugin_field metadata restarts)" = 0 ]
    assert_sandboxed transfer 2
    assert_sandboxed metadata 2
    run ! grep -q "$SIGSYS_EXIT" "$BERTH_LOG"
}

@test "metadata: execve, mount, ptrace and socket each kill only metadata (SIGSYS); the core restarts it" {
    export BERTH_FAILPOINTS="metadata.sandbox_probe=error"
    start '{"runtime-runc": {"enabled": false}}'
    berth namespaces create sbx-keep >/dev/null
    berth namespaces label sbx-keep sbx=1 >/dev/null
    head -c 100000 /dev/urandom >"$BERTH_TEST_DIR/before"
    d=$(berth content ingest before-1 --label berth.io/gc.root=1 <"$BERTH_TEST_DIR/before")
    others_except metadata
    probe_kills metadata namespaces.create name execve mount ptrace socket
    others_unchanged
    # What was committed before the kills is there; the probes wrote nothing.
    berth namespaces ls | grep -q '^sbx-keep .*sbx=1'
    run ! bash -c "$BERTH namespaces ls -q | grep -q sandbox-probe"
    # The restarted metadata serves reads and writes, also for content.
    berth content ls -q | grep -qx "$d"
    berth content get "$d" | cmp - "$BERTH_TEST_DIR/before"
    berth namespaces create sbx-after >/dev/null
    berth namespaces ls -q | grep -qx sbx-after
    head -c 200000 /dev/urandom >"$BERTH_TEST_DIR/after"
    d2=$(berth content ingest after-1 --label berth.io/gc.root=1 <"$BERTH_TEST_DIR/after")
    berth content get "$d2" | cmp - "$BERTH_TEST_DIR/after"
    assert_sandboxed metadata 2
}

@test "transfer: execve, mount and ptrace each kill only transfer (SIGSYS); the core restarts it and it pulls again" {
    [[ -x $BERTH_BIN/berth-transfer ]] || skip "berth-transfer not built"
    export BERTH_FAILPOINTS="transfer.sandbox_probe=error"
    start '{"runtime-runc": {"enabled": false}}'
    [[ $(plugin_field transfer status) == ok ]] || skip "transfer is not running"
    registry_image
    # The first instance has loaded its libraries before it is killed.
    berth images pull --plain-http "$REG/sbx:1" >/dev/null
    others_except transfer
    probe_kills transfer images.pull ref execve mount ptrace
    others_unchanged
    # The restarted transfer loads its libraries again (under its sandbox),
    # pulls and imports; the image pulled before is intact.
    berth images pull --plain-http "$REG/sbx:1" >/dev/null
    tar -C "$BERTH_TEST_DIR/img" -cf "$BERTH_TEST_DIR/img.tar" .
    berth images import --base-name sbx-import "$BERTH_TEST_DIR/img.tar" >/dev/null
    run berth images check
    echo "$output"
    [ "$(grep -c 'complete.*true' <<<"$output")" -eq 2 ]
    tpid=$(plugin_field transfer pid)
    grep -q 'berth-transfer-archive.so' "/proc/$tpid/maps"
    assert_sandboxed transfer 2
}

# ---- abstract unix sockets ----------------------------------------------------

# Prints the pids of berthd, all its descendants and every process whose
# command line names our temp dir (shims are re-parented to init).
berth_pids() {
    local all p ppid
    declare -A kids
    while read -r p ppid; do
        kids[$ppid]+=" $p"
    done < <(ps -e -o pid=,ppid=)
    local queue=("$BERTH_PID") seen=" "
    while ((${#queue[@]})); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        [[ $seen == *" $p "* ]] && continue
        seen+="$p "
        echo "$p"
        # shellcheck disable=SC2206
        queue+=(${kids[$p]:-})
    done
    berth__leftover_pids
}

# Prints "INODE PATH" for every unix socket in /proc/net/unix whose path is
# abstract (starts with @) and that is held open by one of the given pids.
abstract_sockets_of() {
    local p f l
    declare -A mine
    for p in "$@"; do
        for f in /proc/"$p"/fd/*; do
            l=$(readlink "$f" 2>/dev/null) || continue
            [[ $l =~ ^socket:\[([0-9]+)\]$ ]] && mine[${BASH_REMATCH[1]}]=$p
        done
    done
    awk 'NR > 1 && $8 ~ /^@/ {print $7, $8}' /proc/net/unix | while read -r ino path; do
        [[ -n ${mine[$ino]:-} ]] && echo "$ino $path pid=${mine[$ino]}"
    done
    # How many of our sockets /proc/net/unix knows at all (sanity: > 0).
    local n=0 ino
    while read -r ino; do
        [[ -n ${mine[$ino]:-} ]] && n=$((n + 1))
    done < <(awk 'NR > 1 {print $7}' /proc/net/unix)
    echo "known $n" >&2
}

@test "abstract socket detection works (self-check with a python abstract socket)" {
    command -v python3 >/dev/null || skip "python3 not installed"
    python3 -c 'import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0berth-abstract-selfcheck-%d" % __import__("os").getpid())
s.listen(1)
time.sleep(30)' &
    BG_PIDS+=($!)
    berth_wait_for 20 eval 'abstract_sockets_of "${BG_PIDS[0]}" | grep -q berth-abstract-selfcheck'
    run abstract_sockets_of "${BG_PIDS[0]}"
    echo "$output"
    [[ $output == *"@berth-abstract-selfcheck"* ]]
}

@test "no berth process (core, plugins, shim) holds an abstract unix socket" {
    CG=/berth-e2e-sbx-$$
    start "{\"runtime-runc\": {\"config\": {\"cgroup_parent\": \"$CG\"}}}"
    local pids
    # A running container adds a shim (and runc's own sockets) when the
    # runtime stack is available.
    if [[ $(plugin_field runtime-runc status) == ok && $(plugin_field transfer status) == ok ]] &&
        command -v runc >/dev/null && command -v umoci >/dev/null && [[ -x /bin/busybox ]]; then
        # shellcheck source=/dev/null
        source "$BATS_TEST_DIRNAME/lib/registry.bash"
        registry_build_image "$BERTH_TEST_DIR/img" 1
        tar -C "$BERTH_TEST_DIR/img" -cf "$BERTH_TEST_DIR/img.tar" .
        berth images import --base-name busybox "$BERTH_TEST_DIR/img.tar" >/dev/null
        img=$(berth images ls -q | head -n 1)
        berth run -d "$img" sbx-ctr sleep 600
        berth_wait_for 20 test -S "$BERTH_STATE/runtime/default/sbx-ctr/shim.sock"
        SHIM=1
    fi
    # Some traffic on every plugin so lazily created sockets exist too.
    printf 'x' | berth content ingest sock-1 >/dev/null
    berth gc >/dev/null || true
    mapfile -t pids < <(berth_pids | sort -u)
    echo "berth pids: ${pids[*]}"
    [ "${#pids[@]}" -ge 4 ]
    if [[ -n ${SHIM:-} ]]; then
        # The shim: a berth-shim process with files open in our temp dir.
        shim=$(for p in /proc/[0-9]*; do
            [[ $(readlink "$p/exe" 2>/dev/null) == */berth-shim ]] || continue
            ls -l "$p/cwd" "$p/fd" 2>/dev/null | grep -qF "$BERTH_TEST_DIR" && echo "${p#/proc/}"
        done | head -n 1)
        echo "shim pid: $shim"
        [ -n "$shim" ]
        [[ " ${pids[*]} " == *" $shim "* ]]
    fi
    run --separate-stderr abstract_sockets_of "${pids[@]}"
    echo "abstract: $output"
    echo "$stderr"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    # The check looked at real sockets (berth.sock, plugin socketpairs).
    [[ $stderr =~ known\ ([0-9]+) ]]
    [ "${BASH_REMATCH[1]}" -ge 3 ]
    if [[ -n ${SHIM:-} ]]; then
        berth tasks kill -s KILL sbx-ctr
        berth_wait_for 20 task_stopped sbx-ctr
        berth tasks rm sbx-ctr
        berth containers rm sbx-ctr
    fi
}

task_stopped() {
    [[ $(berth tasks ls --format json | jq -r --arg id "$1" '.[] | select(.id == $id) | .status') == STOPPED ]]
}
