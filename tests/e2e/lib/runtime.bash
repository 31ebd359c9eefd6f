# SPDX-License-Identifier: Apache-2.0
# Shared by the runtime's crash and sandbox suites (torture_runtime.bats,
# sandbox_runtime.bats): a private berthd whose containers live under their
# own cgroup parent, a busybox image imported once per file, and the
# predicates those suites poll. Source it from the .bats file; call
# rt_setup_file NAME from setup_file, rt_teardown_file from teardown_file,
# rt_setup from setup and rt_start in a test.

rt_setup_file() { # NAME: names the temp dir and the cgroup parent
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export FIX
    FIX=$(mktemp -d "/tmp/berth-$1.XXXXXX")
    export RT_CGROUP_PARENT=/berth-$1-$$
}

rt_teardown_file() {
    [[ -n ${FIX:-} && -d $FIX ]] && rm -rf "$FIX"
    local c
    for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
        [[ -d $c${RT_CGROUP_PARENT#/} ]] || continue
        find "$c${RT_CGROUP_PARENT#/}" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

# Skips (with the reason) unless root, the tools and the binaries are here.
rt_setup() {
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash b
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    [[ $(id -u) == 0 ]] || skip "needs root (berthd supervises plugins, runc)"
    command -v jq >/dev/null || skip "jq not installed"
    command -v runc >/dev/null || skip "runc not installed (scripts/install-deps.sh)"
    command -v umoci >/dev/null || skip "umoci not installed (scripts/install-deps.sh)"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (scripts/install-deps.sh)"
    # shellcheck source=/dev/null
    source "$lib"
    for b in berthd berth berth-runtime-runc berth-shim; do
        [[ -x $BERTH_BIN/$b ]] || skip "$b not built (looked in $BERTH_BIN)"
    done
}

# Kills whatever still runs in this file's container cgroups (a failed test).
rt_kill_containers() {
    local p
    for p in $(cat /sys/fs/cgroup/pids/"${RT_CGROUP_PARENT#/}"/default/*/cgroup.procs 2>/dev/null); do
        kill -9 "$p" 2>/dev/null || true
    done
}

# Imports a busybox-static image of LAYERS layers (built once into DIR with
# umoci) into the running berthd; sets and exports IMG.
rt_import_busybox() { # DIR [LAYERS]
    local dir=$1 tar=$1/img.tar
    if [[ ! -f $tar ]]; then
        # shellcheck source=/dev/null
        source "$BATS_TEST_DIRNAME/lib/registry.bash"
        registry_build_image "$dir/img" "${2:-1}"
        tar -C "$dir/img" -cf "$tar" .
    fi
    berth images import --base-name busybox "$tar" >/dev/null
    IMG=$(berth images ls -q | head -n 1)
    [[ -n $IMG ]]
    export IMG
}

# Starts berthd (no gc) and imports the busybox image; sets IMG.
rt_start() {
    DAEMON_STARTED=1
    berth_start_daemon "{\"gc\": {\"enabled\": false}, \"runtime-runc\": {\"config\": {\"cgroup_parent\": \"$RT_CGROUP_PARENT\"}}}"
    rt_import_busybox "$FIX"
}

# Nothing of container $1 is left in berth: record, task, snapshot,
# bundle, FIFOs, runc state. (The suites add their cgroup and mount checks.)
rt_assert_records_gone() { # ID
    local id=$1
    run berth containers ls -q
    [[ $status == 0 ]]
    ! grep -qx -- "$id" <<<"$output" || false
    run berth tasks ls -q
    ! grep -qx -- "$id" <<<"$output" || false
    run berth snapshots ls
    ! awk '{print $1}' <<<"$output" | grep -qx -- "$id" || false
    [[ ! -e $BERTH_STATE/runtime/default/$id ]]
    [[ ! -e $BERTH_STATE/fifo/default/$id ]]
    [[ ! -e $BERTH_STATE/runc/default/$id ]]
}

task_field() { # ID FIELD (of `berth tasks ls --format json`; empty if no task)
    berth tasks ls --format json | jq -r --arg id "$1" ".[] | select(.id == \$id) | .$2"
}

task_status() { task_field "$1" status; }

status_is() { # ID STATUS
    [[ $(task_status "$1") == "$2" ]]
}

wait_status() { # ID STATUS
    berth_wait_for 10 status_is "$1" "$2"
}

plugin_field() { # ID FIELD
    berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r ".plugins[0].$2"
}

plugin_restarted() { # ID OLD-PID
    local p
    p=$(plugin_field "$1" pid)
    [[ $(plugin_field "$1" status) == ok && -n $p && $p != null && $p != 0 && $p != "$2" ]]
}

shim_pid() { # ID
    pgrep -f "berth-shim --id $1 --namespace default --bundle $BERTH_STATE/" | head -n 1
}
