#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Crashes of the runtime at the worst moments of tasks.create (issue 9,
# "Faults"): between runc create and the runtime's confirm, a kill -9 of the
# runtime plugin, of the shim, or of berthd with all its plugins. Failpoints
# hold the process at exactly that point (BERTH_FAILPOINTS in berthd's
# environment reaches the plugins and, through the launcher, the shims):
#   runtime.tasks.create.after_shim   runtime: the shim created the container,
#                                     the runtime has not confirmed it
#   shim.create.after_runc_create     shim: runc create returned, nobody has
#                                     heard of the container yet
# After each crash: no ghost RUNNING task, no leaked mount, bundle, FIFO,
# runc state, cgroup or shim; the container can be started and removed, and
# its id run again.

bats_require_minimum_version 1.5.0

# shellcheck source=lib/runtime.bash
source "$BATS_TEST_DIRNAME/lib/runtime.bash"

setup_file() {
    rt_setup_file torture-rt
}

teardown_file() {
    rt_teardown_file
}

setup() {
    rt_setup
    BG_PIDS=()
}

teardown() {
    local p id
    for p in "${BG_PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        [[ ${BATS_TEST_COMPLETED:-} == 1 ]] || berth_dump_log 80 >&3 || true
        # Containers of a failed test: kill what runs in their cgroups.
        rt_kill_containers
        for p in $(pgrep -f "berth-shim --id [^ ]+ --namespace default --bundle $BERTH_STATE/"); do
            kill -9 "$p" 2>/dev/null || true
        done
        berth_stop_daemon
        DAEMON_STARTED=
    fi
    unset BERTH_FAILPOINTS
}

fp_hits_ge() { # NAME N: in the daemon log (plugins)
    [[ $(grep -c "msg=\"failpoint hit\" failpoint=$1 " "$BERTH_LOG" || true) -ge $2 ]]
}

shim_fp_hit() { # ID NAME: in the shim's own log
    grep -q "msg=\"failpoint hit\" failpoint=$2 " "$BERTH_STATE/runtime/default/$1/shim.log" 2>/dev/null
}

# berthd again on the same root and state, without failpoints.
start_berthd_again() {
    unset BERTH_FAILPOINTS
    echo "---- berthd restarted by the test ----" >>"$BERTH_LOG"
    "$BERTH_BIN/berthd" --config "$BERTH_CONFIG" >>"$BERTH_LOG" 2>&1 &
    BERTH_PID=$!
    berth_wait_for 15 berth_rpc call version
    berth_wait_for 45 berth__ready
}

restart_berthd() {
    kill -TERM "$BERTH_PID"
    wait "$BERTH_PID" 2>/dev/null || true
    start_berthd_again
}

# Nothing of the task $1 is left (the container record may stay).
no_task_leftovers() { # ID
    local id=$1 c
    [[ -z $(task_status "$id") ]] || { echo "task $id still listed: $(task_status "$id")"; return 1; }
    [[ ! -e $BERTH_STATE/runtime/default/$id ]] || { echo "bundle of $id left"; return 1; }
    [[ ! -e $BERTH_STATE/fifo/default/$id ]] || { echo "FIFOs of $id left"; return 1; }
    [[ ! -e $BERTH_STATE/runc/default/$id ]] || { echo "runc state of $id left"; return 1; }
    ! grep -q -- "$BERTH_STATE/runtime/default/$id/" /proc/self/mountinfo || { echo "mount of $id left"; return 1; }
    for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ ! -e $c${RT_CGROUP_PARENT#/}/default/$id ]] || { echo "cgroup $c of $id left"; return 1; }
    done
    [[ -z $(shim_pid "$id") ]] || { echo "shim of $id still running"; return 1; }
}

# The container can be started, stopped and removed, and its id run again.
container_usable() { # ID
    local id=$1
    berth tasks start -d "$id"
    [[ $(task_status "$id") == RUNNING ]]
    berth tasks kill -s KILL "$id"
    berth_wait_for 10 bash -c "[[ \$($BERTH tasks ls --format json | jq -r '.[] | select(.id == \"$id\") | .status') == STOPPED ]]"
    berth tasks rm "$id" >/dev/null
    berth containers rm "$id"
    no_task_leftovers "$id"
    run berth run --rm "$IMG" "$id" echo again
    [[ $status == 0 && $output == again ]]
    no_task_leftovers "$id"
    run berth containers ls -q
    ! grep -qx -- "$id" <<<"$output" || false
}

@test "runtime: kill -9 between the shim's create and the confirm; the shim rolls back, nothing is left" {
    export BERTH_FAILPOINTS="runtime.tasks.create.after_shim=pause=4000"
    rt_start
    berth containers create "$IMG" rt1 sleep 600
    berth tasks start -d rt1 >"$BERTH_TEST_DIR/start.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    berth_wait_for 30 fp_hits_ge runtime.tasks.create.after_shim 1
    # The container exists in runc, its shim waits for the confirm.
    [[ -n $(shim_pid rt1) ]]
    [[ -e $BERTH_STATE/runc/default/rt1/state.json ]]
    old=$(plugin_field runtime-runc pid)
    kill -9 "$old"
    berth_wait_for 30 plugin_restarted runtime-runc "$old"
    st=0
    wait "${BG_PIDS[0]}" || st=$?
    cat "$BERTH_TEST_DIR/start.out"
    [ "$st" -ne 0 ]
    # The shim lost its runtime before the confirm: it removed the container,
    # or the restarted runtime had it aborted. Never a task.
    berth_wait_for 15 no_task_leftovers rt1
    run ! grep -q 'status=RUNNING' <<<"$(berth tasks ls)"
    container_usable rt1
}

@test "shim: kill -9 right after runc create; the runtime's janitor removes the container" {
    export BERTH_FAILPOINTS="shim.create.after_runc_create=pause=30000"
    rt_start
    berth containers create "$IMG" sh1 sleep 600
    berth tasks start -d sh1 >"$BERTH_TEST_DIR/start.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    berth_wait_for 30 shim_fp_hit sh1 shim.create.after_runc_create
    # runc's container (its init waiting on the exec FIFO) and cgroups exist.
    [[ -e $BERTH_STATE/runc/default/sh1/state.json ]]
    [[ -d /sys/fs/cgroup/pids/${RT_CGROUP_PARENT#/}/default/sh1 ]]
    init=$(cat /sys/fs/cgroup/pids/"${RT_CGROUP_PARENT#/}"/default/sh1/cgroup.procs)
    [[ -n $init ]]
    rt=$(plugin_field runtime-runc pid)
    kill -9 "$(shim_pid sh1)"
    st=0
    wait "${BG_PIDS[0]}" || st=$?
    cat "$BERTH_TEST_DIR/start.out"
    [ "$st" -ne 0 ]
    no_task_leftovers sh1
    # runc's init of the half-made container is gone too.
    berth_wait_for 10 berth_pid_gone "$init"
    # Only the shim died: the runtime plugin kept running.
    [ "$(plugin_field runtime-runc pid)" = "$rt" ]
    # With the failpoint still armed every create would pause: without it now.
    restart_berthd
    container_usable sh1
}

@test "berthd: kill -9 with all plugins while the shim pauses after runc create; no ghost after restart" {
    export BERTH_FAILPOINTS="shim.create.after_runc_create=pause=3000"
    rt_start
    berth containers create "$IMG" bd1 sleep 600
    berth run -d "$IMG" bd0 sleep 600 # a running task that must survive
    pid0=$(berth tasks ls --format json | jq -r '.[] | select(.id == "bd0") | .pid')
    berth tasks start -d bd1 >"$BERTH_TEST_DIR/start.out" 2>&1 3>&- &
    BG_PIDS+=($!)
    berth_wait_for 30 shim_fp_hit bd1 shim.create.after_runc_create
    old=$BERTH_PID
    mapfile -t kids < <(ps -o pid= --ppid "$old" | tr -d ' ')
    kill -9 "$old"
    wait "$old" 2>/dev/null || true
    for p in "${kids[@]}"; do
        berth_wait_for 15 berth_pid_gone "$p" || {
            echo "pid $p survived berthd:"
            grep -E "^(Name|Tgid|Pid|PPid|State)" "/proc/$p/status" || true; tr "\\0" " " <"/proc/$p/cmdline" || true; echo
            cat "/proc/$p/stack" 2>/dev/null || true
            ls -l /proc/"$p"/task 2>/dev/null | head
            false
        }
    done
    wait "${BG_PIDS[0]}" || true
    # Restart on the same root and state at once: the shim is still paused,
    # the new runtime finds an unconfirmed (or rolling back) task.
    start_berthd_again
    # Never a ghost RUNNING task; once the shim has rolled back, nothing left.
    [[ $(task_status bd1) != RUNNING ]]
    if [[ -n $(task_status bd1) ]]; then
        # Found while its shim was gone and the bundle still there: STOPPED,
        # removable.
        [[ $(task_status bd1) == STOPPED ]]
        berth tasks rm bd1 >/dev/null
    fi
    berth_wait_for 15 no_task_leftovers bd1
    # The task that ran before the crash is untouched.
    [[ $(task_status bd0) == RUNNING ]]
    [[ $(berth tasks ls --format json | jq -r '.[] | select(.id == "bd0") | .pid') == "$pid0" ]]
    container_usable bd1
    berth tasks kill -s KILL bd0
    berth_wait_for 10 bash -c "[[ \$($BERTH tasks ls --format json | jq -r '.[] | select(.id == \"bd0\") | .status') == STOPPED ]]"
    berth tasks rm bd0 >/dev/null
    berth containers rm bd0
    no_task_leftovers bd0
}
