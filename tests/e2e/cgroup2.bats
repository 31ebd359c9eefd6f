#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Containers in cgroup v2 ("unified mode"), end to end with real runc. This
# host is hybrid (v1 controllers, the unified hierarchy beside), so berthd
# runs in a private mount namespace whose /sys/fs/cgroup is a cgroup2 file
# system (tests/e2e/tools/in_cgroup2.sh): runc, the shim and the runtime
# plugin then see a pure v2 host, as on a v2 machine. Controllers bound to
# v1 are absent from that hierarchy (here all but hugetlb): cpu.stat,
# cgroup.freeze and cgroup.kill are core files and work; a memory limit
# needs the memory controller, so on this host runc's own error must reach
# the user with nothing left behind, and on a real v2 host the container is
# OOM-killed as on v1.

bats_require_minimum_version 1.5.0

load lib/daemon.bash
# shellcheck source=lib/runtime.bash
source "$BATS_TEST_DIRNAME/lib/runtime.bash"

WRAP=$BATS_TEST_DIRNAME/tools/in_cgroup2.sh

# v2 CMD...: CMD where /sys/fs/cgroup is the cgroup2 hierarchy berthd sees.
v2() {
    "$WRAP" "$@"
}

setup_file() {
    berth_require_root
    command -v runc >/dev/null || skip "runc not installed (scripts/install-deps.sh)"
    command -v umoci >/dev/null || skip "umoci not installed (scripts/install-deps.sh)"
    command -v unshare >/dev/null || skip "unshare (util-linux) not installed"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (scripts/install-deps.sh)"
    [[ $(v2 stat -f -c %T /sys/fs/cgroup 2>&1) == cgroup2fs ]] ||
        skip "cannot mount cgroup2 in a private mount namespace here: $(v2 true 2>&1)"
    export RT_CGROUP_PARENT=/berth-e2e-v2-$$
    export BERTH_DAEMON_WRAP=$WRAP
    berth_start_daemon "{\"gc\": {\"enabled\": false}, \"runtime-runc\": {\"config\": {\"cgroup_parent\": \"$RT_CGROUP_PARENT\"}}}"
    rt_import_busybox "$BERTH_TEST_DIR"
}

teardown_file() {
    berth_stop_daemon
    # Whatever a failed test left in the v2 hierarchy, deepest first.
    [[ -n ${RT_CGROUP_PARENT:-} ]] || return 0
    v2 sh -c 'd=/sys/fs/cgroup/$1; [ -d "$d" ] || exit 0
        for f in $(find "$d" -name cgroup.procs); do
            for p in $(cat "$f"); do kill -KILL "$p" 2>/dev/null; done
        done
        sleep 0.2
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; true' sh "${RT_CGROUP_PARENT#/}"
}

teardown() {
    if [[ ${BATS_TEST_COMPLETED:-} != 1 ]]; then
        berth_dump_log 80
        berth tasks ls || true
    fi
}

# cg ID FILE: a file of container ID's v2 cgroup (as berthd sees it).
cg() {
    v2 cat "/sys/fs/cgroup${RT_CGROUP_PARENT}/default/$1/$2"
}

# Nothing of container $1 is left: records, task, snapshot, bundle, FIFOs,
# runc state, and its v2 cgroup.
assert_gone() {
    local id=$1
    rt_assert_records_gone "$id"
    run v2 test -e "/sys/fs/cgroup${RT_CGROUP_PARENT}/default/$id"
    [[ $status != 0 ]]
}

@test "run --rm in unified mode: the container's cgroup is v2 only, under cgroup_parent; nothing left" {
    run berth run --rm "$IMG" v2a sh -c 'grep "^0::" /proc/self/cgroup; echo hello'
    echo "$output"
    [[ $status == 0 ]]
    [[ ${lines[0]} == "0::${RT_CGROUP_PARENT}/default/v2a" ]]
    [[ ${lines[1]} == hello ]]
    assert_gone v2a
}

@test "detached task in v2: ps, exec joins the cgroup, metrics from cpu.stat, pause freezes it, kill 137, rm removes it" {
    run berth run -d "$IMG" v2b sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 600'
    [[ $status == 0 ]]
    wait_status v2b RUNNING
    local pid
    pid=$(task_field v2b pid)
    # The init is in the container's v2 cgroup.
    [[ $(cg v2b cgroup.procs) == *"$pid"* ]]
    # Metrics: ctr's v2 rows, CPU time from the cgroup's cpu.stat.
    run berth tasks metrics v2b
    echo "$output"
    [[ $status == 0 ]]
    [[ $output == *"cpu.usage_usec"* ]]
    local usec
    usec=$(awk '$1 == "cpu.usage_usec" {print $2}' <<<"$output")
    ((usec > 0))
    # ps lists the cgroup's processes; an exec joins the cgroup.
    run berth tasks ps v2b
    [[ $status == 0 && $output == *"$pid"* ]]
    run berth tasks exec --exec-id e1 v2b sh -c 'grep "^0::" /proc/self/cgroup'
    [[ $status == 0 && $output == "0::${RT_CGROUP_PARENT}/default/v2b" ]]
    # Pause and resume through cgroup.freeze.
    berth tasks pause v2b
    [[ $(task_field v2b status) == PAUSED ]]
    [[ $(cg v2b cgroup.freeze) == 1 ]]
    berth tasks resume v2b
    [[ $(task_field v2b status) == RUNNING ]]
    [[ $(cg v2b cgroup.freeze) == 0 ]]
    run berth tasks kill -s KILL v2b
    [[ $status == 0 ]]
    wait_status v2b STOPPED
    [[ $(task_field v2b exit_status) == 137 ]]
    berth tasks rm v2b
    berth containers rm v2b
    assert_gone v2b
}

@test "a memory limit in v2: OOM-killed with the memory controller; else runc's error and nothing left" {
    if [[ $(v2 cat /sys/fs/cgroup/cgroup.controllers) == *memory* ]]; then
        berth run -d --memory-limit 16m "$IMG" v2c sh -c 'x=aaaaaaaa; while :; do x=$x$x; done'
        wait_status v2c STOPPED
        [[ $(task_field v2c exit_status) == 137 ]]
        berth tasks rm v2c
        berth containers rm v2c
    else
        # This host: every controller but hugetlb is bound to v1.
        run berth run --rm --memory-limit 16m "$IMG" v2c echo limited
        echo "$output"
        [[ $status == 1 ]]
        [[ $output == "berth: runc create failed: "*"memory.max"* ]]
    fi
    assert_gone v2c
}
