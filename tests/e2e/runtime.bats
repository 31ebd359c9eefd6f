#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Containers and tasks with real runc: `berth run`, detached tasks (exec,
# pause/resume, metrics, kill statuses), berthd and runtime-plugin crashes
# with tasks running, a shim that dies, bad inputs that must leave nothing
# behind. The image is a busybox-static OCI layout built with umoci and
# imported with `berth images import`.

load lib/daemon.bash
# shellcheck source=lib/runtime.bash
source "$BATS_TEST_DIRNAME/lib/runtime.bash"

setup_file() {
    berth_require_root
    command -v runc >/dev/null || skip "runc not installed (scripts/install-deps.sh)"
    command -v umoci >/dev/null || skip "umoci not installed (scripts/install-deps.sh)"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (scripts/install-deps.sh)"
    # A cgroup parent of our own: other daemons on this host (parallel test
    # runs) may use the same container ids.
    export RT_CGROUP_PARENT=/berth-e2e-$$
    berth_start_daemon "{\"gc\": {\"enabled\": false}, \"runtime-runc\": {\"config\": {\"cgroup_parent\": \"$RT_CGROUP_PARENT\"}}}"
    rt_import_busybox "$BERTH_TEST_DIR" 2
}

teardown_file() {
    # A test may have restarted berthd: stop the one running now.
    if [[ -f ${BERTH_TEST_DIR:-/nonexistent}/berthd.pid ]]; then
        BERTH_PID=$(cat "$BERTH_TEST_DIR/berthd.pid")
    fi
    berth_stop_daemon
    # Containers a failed test left behind (their shims are gone, their
    # processes are not in our temp dir), then their cgroups, deepest first.
    local c f p
    for f in $(find /sys/fs/cgroup/pids/"${RT_CGROUP_PARENT#/}" /sys/fs/cgroup/"${RT_CGROUP_PARENT#/}" \
        -name cgroup.procs 2>/dev/null); do
        for p in $(cat "$f"); do kill -KILL "$p" 2>/dev/null || true; done
    done
    sleep 0.2
    for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ -d $c${RT_CGROUP_PARENT#/} ]] || continue
        find "$c${RT_CGROUP_PARENT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

teardown() {
    if [[ ${BATS_TEST_COMPLETED:-} != 1 ]]; then
        berth_dump_log 80
        berth tasks ls || true
    fi
}

# Nothing of container $1 is left: record, task, snapshot, bundle, FIFOs,
# runc state, mounts.
assert_gone() {
    local id=$1
    rt_assert_records_gone "$id"
    ! grep -q -- "$BERTH_STATE/runtime/default/$id/" /proc/self/mountinfo || false
    # Its cgroups (the shim removes them itself when runc delete has nothing
    # else to do), in every hierarchy.
    local c
    for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ ! -e $c${RT_CGROUP_PARENT#/}/default/$id ]]
    done
}

runtime_restarted() { # OLD-PID
    local p
    p=$(berth_plugin_pid runtime-runc)
    [[ -n $p && $p != null && $p != "$1" ]]
}

@test "run --rm echo hello prints hello, exits 0 and leaves nothing" {
    berth_events_start "$BERTH_TEST_DIR/events-hello.json" --format json /tasks/
    local ev=$BERTH_EVENTS_PID
    run berth run --rm "$IMG" hello1 echo hello
    [[ $status == 0 ]]
    [[ $output == hello ]]
    assert_gone hello1
    # containerd's order, each once (start and delete are done without runc).
    local topics
    berth_wait_for 5 bash -c "grep -q /tasks/delete $BERTH_TEST_DIR/events-hello.json"
    kill "$ev"
    wait "$ev" 2>/dev/null || true
    topics=$(jq -r 'select(.event.container_id == "hello1") | .topic' "$BERTH_TEST_DIR/events-hello.json" | tr '\n' ' ')
    [[ $topics == "/tasks/create /tasks/start /tasks/exit /tasks/delete " ]]
    # Gone means gone: the same id runs again at once.
    run berth run --rm "$IMG" hello1 echo again
    [[ $status == 0 && $output == again ]]
    assert_gone hello1
}

@test "run exits with the container's exit code; stderr and stdin are wired" {
    run berth run --rm "$IMG" code7 sh -c 'echo out; echo err >&2; exit 7'
    [[ $status == 7 ]]
    [[ $output == *out* && $output == *err* ]]
    run bash -c "printf 'line1\nline2\n' | $BERTH run --rm $IMG cat1 cat"
    [[ $status == 0 ]]
    [[ $output == "line1"$'\n'"line2" ]]
    assert_gone code7
    assert_gone cat1
}

@test "run without --rm keeps the container and removes the task" {
    run berth run "$IMG" keep1 true
    [[ $status == 0 ]]
    run berth containers ls -q
    grep -qx keep1 <<<"$output"
    run berth tasks ls -q
    ! grep -qx keep1 <<<"$output" || false
    run berth containers info keep1
    [[ $status == 0 ]]
    [[ $(jq -r '.spec.process.args[0]' <<<"$output") == true ]]
    run berth containers info --spec keep1
    [[ $(jq -r '.linux.cgroupsPath' <<<"$output") == "$RT_CGROUP_PARENT/default/keep1" ]]
    [[ $(jq -r '.process.noNewPrivileges' <<<"$output") == true ]]
    [[ $(jq -r '.linux.seccomp.defaultAction' <<<"$output") == SCMP_ACT_ERRNO ]]
    run berth containers rm keep1
    [[ $status == 0 ]]
    assert_gone keep1
}

@test "options: user, env, cwd, hostname, read-only rootfs, bind mount" {
    mkdir -p "$BERTH_TEST_DIR/data"
    echo host-file >"$BERTH_TEST_DIR/data/f"
    run berth run --rm --user 1000:1000 --env A=b --cwd /tmp --hostname hh --read-only \
        --mount "type=bind,src=$BERTH_TEST_DIR/data,dst=/data,options=rbind:ro" \
        "$IMG" opts1 sh -c 'echo $A; pwd; hostname; id -u; id -G; cat /data/f; touch /x 2>&1; touch /data/y 2>&1; true'
    [[ $status == 0 ]]
    [[ ${lines[0]} == b ]]
    [[ ${lines[1]} == /tmp ]]
    [[ ${lines[2]} == hh ]]
    [[ ${lines[3]} == 1000 ]]
    [[ ${lines[4]} == 1000 ]]
    [[ ${lines[5]} == host-file ]]
    [[ $output == *"Read-only file system"* ]]
    [[ ! -e $BERTH_TEST_DIR/data/y ]]
}

@test "the container's init holds only fds 0, 1 and 2" {
    run berth run --rm "$IMG" fds1 sh -c 'ls /proc/1/fd; true'
    [[ $status == 0 ]]
    [[ $output == $'0\n1\n2' ]]
}

@test "-t gives the container a terminal" {
    command -v script >/dev/null || skip "script (util-linux) not installed"
    run script -qec "$BERTH run --rm -t $IMG tty1 sh -c 'test -t 0 && echo is-a-tty'" /dev/null
    [[ $status == 0 ]]
    [[ $output == *is-a-tty* ]]
    assert_gone tty1
}

@test "signals are forwarded to the container" {
    # $BERTH, not the berth function: $! must be the CLI itself.
    $BERTH run --rm "$IMG" sig1 sh -c 'trap "exit 42" INT; echo ready; sleep 600 & wait' \
        >"$BERTH_TEST_DIR/sig1.out" 2>&1 &
    local pid=$!
    berth_wait_for 10 grep -q ready "$BERTH_TEST_DIR/sig1.out"
    kill -INT "$pid"
    local rc=0
    wait "$pid" || rc=$?
    [[ $rc == 42 ]]
    assert_gone sig1
}

@test "--rm is carried out by the daemon even when the client dies" {
    $BERTH run --rm "$IMG" orphan1 sleep 3 >/dev/null 2>&1 &
    local pid=$!
    wait_status orphan1 RUNNING
    kill -KILL "$pid"
    berth_wait_for 15 bash -c "! $BERTH containers ls -q | grep -qx orphan1"
    assert_gone orphan1
}

@test "detached task: ls, exec, pause/resume, metrics, ps, kill 143, rm" {
    berth_events_start "$BERTH_TEST_DIR/events.json" --format json /tasks/
    local evpid=$BERTH_EVENTS_PID
    run berth run -d "$IMG" det1 sh -c 'trap "exit 143" TERM; sleep 600 & wait'
    [[ $status == 0 ]]
    [[ $(task_status det1) == RUNNING ]]
    local pid
    pid=$(task_field det1 pid)
    [[ $pid -gt 1 ]]
    run berth tasks ls
    [[ ${lines[0]} == *TASK*PID*STATUS* ]]
    [[ $output == *"det1"*"$pid"*RUNNING* ]]

    run berth tasks exec --exec-id e1 det1 sh -c 'echo from-exec; exit 3'
    [[ $status == 3 ]]
    [[ $output == from-exec ]]
    run bash -c "echo piped | $BERTH tasks exec --exec-id e2 det1 cat"
    [[ $output == piped ]]

    run berth tasks pause det1
    [[ $status == 0 ]]
    [[ $(task_status det1) == PAUSED ]]
    run berth tasks resume det1
    [[ $(task_status det1) == RUNNING ]]

    run berth tasks metrics det1
    [[ $status == 0 ]]
    [[ $output == *memory.usage_in_bytes* || $output == *memory.current* ]]
    [[ $output == *pids.current* ]]
    run berth tasks metrics --format json det1
    [[ $(jq -r '.memory.usage' <<<"$output") -gt 0 ]]
    [[ $(jq -r '.pids.current' <<<"$output") -ge 2 ]]
    run berth tasks ps det1
    [[ $output == *"$pid"* ]]

    run berth tasks rm det1
    [[ $status == 1 ]]
    [[ $output == *"must be stopped"* ]]
    run berth containers rm det1
    [[ $status == 1 ]]
    [[ $output == *"has a task"* ]]

    run berth tasks kill det1
    [[ $status == 0 ]]
    wait_status det1 STOPPED
    [[ $(task_field det1 exit_status) == 143 ]]
    run berth tasks rm det1
    [[ $status == 0 ]]
    [[ ! -e $BERTH_STATE/runtime/default/det1 ]]
    ! grep -q -- "$BERTH_STATE/runtime/default/det1/" /proc/self/mountinfo || false
    run berth containers rm det1
    [[ $status == 0 ]]
    assert_gone det1

    # Events in containerd's order; the exit exactly once, before the delete.
    berth_wait_for 5 eval "jq -e 'select(.event.container_id == \"det1\" and .topic == \"/tasks/delete\")' $BERTH_TEST_DIR/events.json"
    kill "$evpid"
    local topics
    topics=$(jq -r 'select(.event.container_id == "det1") | .topic' "$BERTH_TEST_DIR/events.json" | tr '\n' ' ')
    [[ $topics == "/tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/paused /tasks/resumed /tasks/exit /tasks/delete " ]]
}

@test "kill -s KILL gives 137" {
    berth run -d "$IMG" kill9 sleep 600
    run berth tasks kill -s KILL kill9
    [[ $status == 0 ]]
    wait_status kill9 STOPPED
    [[ $(task_field kill9 exit_status) == 137 ]]
    berth tasks rm kill9
    berth containers rm kill9
    assert_gone kill9
}

@test "--runtime crun runs where crun supports the host's cgroups; else crun's own error, nothing left" {
    command -v crun >/dev/null || skip "crun is not installed (scripts/install-deps.sh installs it)"
    run berth run --rm --runtime crun "$IMG" crun1 echo hello
    echo "$output"
    if [[ $status == 0 ]]; then
        [[ $output == *hello* ]]
    else
        # crun 1.8 refuses a hybrid cgroup host like this one: its message,
        # named as crun's, reaches the user.
        [[ $status == 1 && $output == *"crun create: "* ]]
    fi
    assert_gone crun1
}

@test "a container over its memory limit is OOM-killed: status 137 and /tasks/oom" {
    berth_events_start "$BERTH_TEST_DIR/events-oom.json" --format json /tasks/
    local evpid=$BERTH_EVENTS_PID
    # busybox sh doubles a string until the 16 MiB limit (no swap here, or
    # swap limited with it) has the kernel kill it.
    berth run -d --memory-limit 16m "$IMG" oom1 sh -c 'x=aaaaaaaa; while :; do x=$x$x; done'
    wait_status oom1 STOPPED
    [[ $(task_field oom1 exit_status) == 137 ]]
    berth_wait_for 5 bash -c "grep -q /tasks/oom $BERTH_TEST_DIR/events-oom.json"
    kill "$evpid" 2>/dev/null || true
    [[ $(jq -r 'select(.topic == "/tasks/oom") | .event.container_id' \
        "$BERTH_TEST_DIR/events-oom.json" | sort -u) == oom1 ]]
    berth tasks rm oom1
    berth containers rm oom1
    assert_gone oom1
}

@test "kill -9 berthd with 20 tasks running: all still RUNNING, same pids, controllable" {
    local i before after
    for i in $(seq 1 20); do
        berth run -d "$IMG" crash$i sh -c 'trap "exit 143" TERM; sleep 600 & wait'
    done
    before=$(berth tasks ls --format json | jq -c '[.[] | select(.id | startswith("crash")) | [.id, .pid, .status]] | sort')
    [[ $(jq length <<<"$before") == 20 ]]
    kill -KILL "$BERTH_PID"
    # berthd is not our child (setup_file started it): wait for its lock.
    berth_wait_for 10 flock -n "$BERTH_STATE/berthd.lock" true
    "$BERTH_BIN/berthd" --config "$BERTH_CONFIG" >>"$BERTH_LOG" 2>&1 &
    BERTH_PID=$!
    echo "$BERTH_PID" >"$BERTH_TEST_DIR/berthd.pid"
    berth_wait_for 20 berth__ready
    after=$(berth tasks ls --format json | jq -c '[.[] | select(.id | startswith("crash")) | [.id, .pid, .status]] | sort')
    [[ $before == "$after" ]]
    [[ $(jq '[.[] | select(.[2] == "RUNNING")] | length' <<<"$after") == 20 ]]
    run berth tasks exec --exec-id x crash7 echo alive
    [[ $output == alive ]]
    for i in $(seq 1 20); do
        berth tasks kill crash$i
    done
    for i in $(seq 1 20); do
        wait_status crash$i STOPPED
        [[ $(task_field crash$i exit_status) == 143 ]]
        berth tasks rm crash$i
        berth containers rm crash$i
    done
    assert_gone crash20
}

@test "kill -9 of the runtime plugin alone: tasks keep running; an exit meanwhile is reported" {
    berth run -d "$IMG" rt1 sh -c 'trap "exit 143" TERM; sleep 600 & wait'
    berth run -d "$IMG" rt2 sh -c 'trap "exit 143" TERM; sleep 600 & wait'
    local pid1 pid2 rp
    pid1=$(task_field rt1 pid)
    pid2=$(task_field rt2 pid)
    rp=$(berth_plugin_pid runtime-runc)
    # Freeze the plugin, make rt2 exit (TERM from the host to its init),
    # then kill the plugin: nobody was listening when rt2 exited.
    kill -STOP "$rp"
    kill -TERM "$pid2"
    berth_wait_for 10 berth_pid_gone "$pid2"
    kill -KILL "$rp"
    berth_wait_for 20 runtime_restarted "$rp"
    berth_wait_for 20 berth__ready
    wait_status rt2 STOPPED
    [[ $(task_field rt2 exit_status) == 143 ]]
    [[ $(task_status rt1) == RUNNING ]]
    [[ $(task_field rt1 pid) == "$pid1" ]]
    run berth tasks exec --exec-id x rt1 echo alive
    [[ $output == alive ]]
    berth tasks kill rt1
    wait_status rt1 STOPPED
    for i in rt1 rt2; do
        berth tasks rm $i
        berth containers rm $i
        assert_gone $i
    done
}

@test "a task that exits while the runtime plugin is down keeps its real status" {
    berth run -d "$IMG" down1 sh -c 'sleep 1; exit 5'
    local rp
    rp=$(berth_plugin_pid runtime-runc)
    kill -STOP "$rp"
    sleep 2
    kill -KILL "$rp"
    berth_wait_for 20 berth__ready
    wait_status down1 STOPPED
    [[ $(task_field down1 exit_status) == 5 ]]
    berth tasks rm down1
    berth containers rm down1
    assert_gone down1
}

@test "a shim that dies leaves the task STOPPED (137), never a ghost RUNNING" {
    berth run -d "$IMG" ghost1 sleep 600
    local cpid spid
    cpid=$(task_field ghost1 pid)
    spid=$(pgrep -f -- "berth-shim --id ghost1 --namespace default --bundle $BERTH_STATE/")
    [[ -n $spid ]]
    kill -KILL "$spid"
    wait_status ghost1 STOPPED
    [[ $(task_field ghost1 exit_status) == 137 ]]
    berth_wait_for 10 berth_pid_gone "$cpid"
    berth tasks rm ghost1
    berth containers rm ghost1
    assert_gone ghost1
}

@test "a spec with hooks is started and deleted by runc itself (poststop runs)" {
    # Without hooks the shim starts and deletes containers without runc
    # (docs/runtime.md); a hook needs runc: its poststop must run at delete.
    berth containers create "$IMG" hk0 true
    local spec
    spec=$(berth containers info --spec hk0 |
        jq -c --arg m "$BERTH_TEST_DIR/poststop-ran" \
            '.hooks = {poststop: [{path: "/bin/sh", args: ["sh", "-c", ("echo ran > " + $m)]}]}')
    berth containers rm hk0
    berth_rpc call containers.create "$(jq -nc --arg img "$IMG" --arg spec "$spec" \
        '{namespace: "default", id: "hk1", image: $img, spec: $spec}')" >/dev/null
    run berth tasks start hk1
    [[ $status == 0 ]]
    [[ ! -e $BERTH_TEST_DIR/poststop-ran ]]
    berth tasks rm hk1
    [[ $(cat "$BERTH_TEST_DIR/poststop-ran") == ran ]]
    berth containers rm hk1
    assert_gone hk1
    assert_gone hk0
}

@test "bad inputs: escaping bind source, missing source, unknown user, missing image, duplicate id" {
    mkdir -p "$BERTH_TEST_DIR/bm/data"
    ln -s /etc "$BERTH_TEST_DIR/bm/data/evil"
    run berth run --rm --mount "type=bind,src=$BERTH_TEST_DIR/bm/data/evil,dst=/x" "$IMG" bad1 ls /x
    [[ $status == 1 ]]
    [[ $output == *"escapes through the symlink"* ]]
    assert_gone bad1

    run berth run --rm --mount "type=bind,src=$BERTH_TEST_DIR/bm/nope,dst=/x" "$IMG" bad2 true
    [[ $status == 1 ]]
    [[ $output == *"does not exist"* ]]
    assert_gone bad2

    run berth run --rm --user nobody "$IMG" bad3 id
    [[ $status == 1 ]]
    [[ $output == *"unable to find user nobody"* ]]
    assert_gone bad3

    run berth run --rm docker.io/library/missing:latest bad4 true
    [[ $status == 1 ]]
    [[ $output == *"not found"* ]]
    assert_gone bad4

    run berth run --rm "$IMG" bad5 nosuchcmd
    [[ $status == 1 ]]
    [[ $output == *"executable file not found"* ]]
    assert_gone bad5

    berth run -d "$IMG" dup1 sleep 600
    run berth run -d "$IMG" dup1 true
    [[ $status == 1 ]]
    [[ $output == *"already exists"* ]]
    [[ $(task_status dup1) == RUNNING ]]
    berth tasks kill -s KILL dup1
    wait_status dup1 STOPPED
    berth tasks rm dup1
    berth containers rm dup1
    assert_gone dup1
}
