#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# The runtime plugin's sandbox (issue 9, "Processes and sockets"): every
# thread of berth-runtime-runc runs under its seccomp filters, while the
# launcher it forks first and the shims it starts through the launcher are
# not confined (and have no NO_NEW_PRIVS, which containers would inherit). A
# forbidden syscall (execve, ptrace, unshare), made by the test hook armed
# with BERTH_FAILPOINTS=runtime.sandbox_probe=error, kills only the runtime
# plugin with SIGSYS; the core restarts it and running containers keep
# running, controllable by the new instance. See docs/security.md.

bats_require_minimum_version 1.5.0

SIGSYS_EXIT='killed by signal 31 (Bad system call)'

# shellcheck source=lib/runtime.bash
source "$BATS_TEST_DIRNAME/lib/runtime.bash"

setup_file() {
    rt_setup_file sandbox-rt
}

teardown_file() {
    rt_teardown_file
}

setup() {
    rt_setup
}

teardown() {
    local p
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        [[ ${BATS_TEST_COMPLETED:-} == 1 ]] || berth_dump_log 60 >&3 || true
        rt_kill_containers
        berth_stop_daemon
        DAEMON_STARTED=
    fi
    unset BERTH_FAILPOINTS
}

status_field() { # PID FIELD (from /proc/PID/status)
    awk -v f="$2:" '$1 == f {print $2}' /proc/"$1"/status
}

@test "every thread of berth-runtime-runc runs under seccomp; the launcher and the shims do not" {
    rt_start
    # A container makes the plugin start its thread pool (threads created
    # after the filters were loaded inherit them) and a shim.
    berth run -d "$IMG" sbx1 sleep 600
    berth run --rm "$IMG" sbx2 true
    rt=$(plugin_field runtime-runc pid)
    [[ $rt =~ ^[0-9]+$ ]]
    n=0
    for t in /proc/"$rt"/task/*; do
        mode=$(awk '/^Seccomp:/ {print $2}' "$t/status")
        filters=$(awk '/^Seccomp_filters:/ {print $2}' "$t/status")
        echo "runtime thread ${t##*/}: Seccomp=$mode filters=$filters"
        [[ $mode == 2 && $filters -ge 2 ]]
        n=$((n + 1))
    done
    [[ $n -gt 1 ]]
    [[ $(grep -c 'plugin=runtime-runc .*msg="sandbox applied"' "$BERTH_LOG") -ge 2 ]]
    grep -q 'plugin=runtime-runc .*msg="sandbox applied" mode=allowlist' "$BERTH_LOG"
    # The launcher: forked before the filters, never confined, no NO_NEW_PRIVS.
    launcher=$(pgrep -P "$rt" -x berth-launcher)
    [[ -n $launcher ]]
    [[ $(status_field "$launcher" Seccomp) == 0 ]]
    [[ $(status_field "$launcher" NoNewPrivs) == 0 ]]
    # The shim (started by the launcher) neither: setuid binaries in the
    # container keep working.
    shim=$(shim_pid sbx1)
    [[ -n $shim ]]
    [[ $(status_field "$shim" Seccomp) == 0 ]]
    [[ $(status_field "$shim" NoNewPrivs) == 0 ]]
    # The container itself runs under its own default profile.
    init=$(task_field sbx1 pid)
    [[ $(status_field "$init" Seccomp) == 2 ]]
    # Everything the plugin does still works under the sandbox.
    [[ $(berth tasks exec --exec-id e1 sbx1 echo inside) == inside ]]
    berth tasks pause sbx1
    berth tasks resume sbx1
    berth tasks metrics sbx1 >/dev/null
    berth tasks ps sbx1 >/dev/null
    berth tasks kill -s KILL sbx1
    berth_wait_for 10 bash -c "[[ \$($BERTH tasks ls --format json | jq -r '.[] | select(.id == \"sbx1\") | .status') == STOPPED ]]"
    berth tasks rm sbx1 >/dev/null
    berth containers rm sbx1
    run berth run --rm --privileged --user 1:1 --read-only "$IMG" sbx3 id -u
    [[ $status == 0 && $output == 1 ]]
    [[ $(plugin_field runtime-runc pid) == "$rt" ]]
    [[ $(plugin_field runtime-runc restarts) == 0 ]]
    run ! grep -q "plugin=runtime-runc.*$SIGSYS_EXIT" "$BERTH_LOG"
}

@test "execve, ptrace and unshare each kill only the runtime plugin (SIGSYS); containers keep running" {
    export BERTH_FAILPOINTS="runtime.sandbox_probe=error"
    rt_start
    berth run -d "$IMG" keep1 sleep 600
    pid=$(task_field keep1 pid)
    shim=$(shim_pid keep1)
    declare -A others
    for id in content metadata snapshot-overlay transfer; do
        [[ $(plugin_field "$id" status) == ok ]] && others[$id]=$(plugin_field "$id" pid)
    done
    n=0
    for sc in execve ptrace unshare; do
        old=$(plugin_field runtime-runc pid)
        run berth tasks kill "sandbox-probe-$sc"
        echo "$sc: $output"
        [ "$status" -ne 0 ]
        # Had the call come back, the sandbox would have allowed it.
        [[ $output != *"not stopped by the sandbox"* ]]
        berth_wait_for 20 grep -qF "msg=\"plugin exited\" plugin=runtime-runc pid=$old exit=\"$SIGSYS_EXIT\"" "$BERTH_LOG"
        berth_wait_for 30 plugin_restarted runtime-runc "$old"
        n=$((n + 1))
        # The container and its shim never noticed.
        [[ $(task_field keep1 status) == RUNNING ]]
        [[ $(task_field keep1 pid) == "$pid" ]]
        [[ $(shim_pid keep1) == "$shim" ]]
    done
    [ "$(plugin_field runtime-runc restarts)" -eq "$n" ]
    for id in "${!others[@]}"; do
        [ "$(plugin_field "$id" pid)" = "${others[$id]}" ]
        [ "$(plugin_field "$id" restarts)" = 0 ]
    done
    # The restarted instance controls the old container and runs new ones.
    [[ $(berth tasks exec --exec-id e1 keep1 echo still) == still ]]
    run berth run --rm "$IMG" new1 echo fresh
    [[ $status == 0 && $output == fresh ]]
    berth tasks kill -s KILL keep1
    berth_wait_for 10 bash -c "[[ \$($BERTH tasks ls --format json | jq -r '.[] | select(.id == \"keep1\") | .status') == STOPPED ]]"
    [[ $(task_field keep1 exit_status) == 137 ]]
    berth tasks rm keep1 >/dev/null
    berth containers rm keep1
    [[ ! -e $BERTH_STATE/runtime/default/keep1 ]]
    # An ordinary kill of an unknown task still answers as before.
    run berth tasks kill no-such-task
    [ "$status" -ne 0 ]
    [[ $output == *"not found"* ]]
}
