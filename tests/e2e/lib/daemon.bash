# SPDX-License-Identifier: Apache-2.0
# Shared e2e helper: runs a private berthd in a temporary root/state.
#
#   berth_start_daemon [PLUGINS-JSON]   start berthd; PLUGINS-JSON is merged
#                                       into the config's "plugins" object, e.g.
#                                       '{"echo": {}, "gc": {"enabled": false}}'
#       env BERTH_CONFIG_EXTRA='{...}'  merged into the top level of the config
#       env BERTH_WAIT_READY=0          do not wait for the plugins to be ready
#   berth_stop_daemon                   SIGTERM, wait, kill leftovers, unmount
#                                       everything under the temp dir, remove it
#   berth ARGS...                       the CLI with -a set ($BERTH is the same
#                                       as a string: $BERTH version)
#   berth_rpc MODE METHOD [ARGS...]     raw client (tests/e2e/tools/rpctool.c):
#                                       berth_rpc call echo.echo '{"data": 1}'
#   berth_plugin_pid ID                 pid of a running plugin
#   berth_wait_for SECONDS CMD...       retries CMD until it succeeds
#
# Exported: BERTH_BIN, BERTH_TEST_DIR, BERTH_ROOT, BERTH_STATE, BERTH_SOCK,
# BERTH_ADDRESS, BERTH_LOG, BERTH_CONFIG, BERTH_PID, BERTH, BERTH_RPCTOOL.
# Needs root (berthd spawns plugins, plugins mount); otherwise the test is
# skipped (exit 77 outside bats).

if [[ -z ${BERTH_BIN:-} ]]; then
    BERTH_BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../build/bin" 2>/dev/null && pwd)
fi
export BERTH_BIN
export BERTH_SRC=${BERTH_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}
export BERTH_RPCTOOL=${BERTH_RPCTOOL:-$BERTH_BIN/../tests/berth-rpctool}

berth__skip() {
    if declare -F skip >/dev/null; then
        skip "$1"
    fi
    echo "skip: $1" >&2
    exit 77
}

berth_require_root() {
    [[ $(id -u) == 0 ]] || berth__skip "needs root (berthd spawns plugins and mounts filesystems)"
}

berth() {
    "$BERTH_BIN/berth" -a "$BERTH_SOCK" "$@"
}

berth_rpc() {
    "$BERTH_RPCTOOL" -a "$BERTH_SOCK" "$@"
}

berth_wait_for() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.05
    done
}

# berth_subscribers: how many event subscriptions the daemon has accepted
# (logged at debug, the test daemons' level).
berth_subscribers() {
    grep -c 'msg="events subscriber"' "$BERTH_LOG" || true
}

# berth_wait_subscribed BEFORE: waits until a subscription was accepted
# after BERTH_SUBSCRIBERS was BEFORE, i.e. a background `berth events` is
# listening and will see what happens next.
berth_wait_subscribed() {
    local before=$1
    berth_wait_for 20 eval '(($(berth_subscribers) > before))'
}

# berth_pid_gone PID: the process exited — gone, or a zombie its new parent
# has not reaped yet (kill -0 succeeds on a zombie; an orphan's new parent,
# PID 1, may reap it seconds later: this VM's init reaps every ~2 s).
berth_pid_gone() {
    ! kill -0 "$1" 2>/dev/null || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == [ZX] ]]
}

# berth_events_start OUT [ARGS...]: `berth events ARGS` in the background,
# printing to OUT (stderr to OUT.err), already subscribed when this returns; its pid in
# BERTH_EVENTS_PID.
berth_events_start() {
    local out=$1 subs
    shift
    subs=$(berth_subscribers)
    "$BERTH_BIN/berth" -a "$BERTH_SOCK" events "$@" >"$out" 2>"$out.err" &
    BERTH_EVENTS_PID=$!
    berth_wait_subscribed "$subs"
}

berth_plugin_pid() {
    berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r '.plugins[0].pid'
}

# Prints the last lines of the daemon log (on failures).
berth_dump_log() {
    if [[ -n ${BERTH_LOG:-} && -f $BERTH_LOG ]]; then
        echo "---- last lines of $BERTH_LOG ----"
        tail -n "${1:-60}" "$BERTH_LOG"
    fi
}

berth__ready() {
    local info
    info=$(berth_rpc call info 2>/dev/null) || return 1
    [[ $(jq -r '.not_ready | length' <<<"$info") == 0 ]]
}

berth_start_daemon() {
    local plugins_json=${1:-"{}"}
    berth_require_root
    [[ -x $BERTH_BIN/berthd ]] || berth__skip "berthd not built (looked in $BERTH_BIN)"
    [[ -x $BERTH_RPCTOOL ]] || berth__skip "berth-rpctool not built (looked at $BERTH_RPCTOOL)"
    command -v jq >/dev/null || berth__skip "jq not installed (scripts/install-deps.sh)"
    # Short paths under /tmp: socket paths must fit in 107 bytes.
    BERTH_TEST_DIR=$(mktemp -d /tmp/berth-e2e.XXXXXX)
    chmod 0711 "$BERTH_TEST_DIR"
    export BERTH_TEST_DIR
    export BERTH_ROOT=$BERTH_TEST_DIR/root
    export BERTH_STATE=$BERTH_TEST_DIR/state
    export BERTH_SOCK=$BERTH_STATE/berth.sock
    export BERTH_ADDRESS=$BERTH_SOCK
    export BERTH_LOG=$BERTH_TEST_DIR/berthd.log
    export BERTH_CONFIG=$BERTH_TEST_DIR/config.json
    export BERTH="$BERTH_BIN/berth -a $BERTH_SOCK"
    if ! jq -n --arg root "$BERTH_ROOT" --arg state "$BERTH_STATE" \
        --argjson plugins "$plugins_json" --argjson extra "${BERTH_CONFIG_EXTRA:-"{}"}" \
        '{root: $root, state: $state, log_level: "debug", plugins: $plugins} * $extra' \
        >"$BERTH_CONFIG"; then
        echo "berth_start_daemon: bad JSON in plugins ($plugins_json) or BERTH_CONFIG_EXTRA" >&2
        return 1
    fi
    # BERTH_DAEMON_WRAP: a program that execs its arguments (same pid) in
    # a changed environment, e.g. tests/e2e/tools/in_cgroup2.sh.
    ${BERTH_DAEMON_WRAP:-} "$BERTH_BIN/berthd" --config "$BERTH_CONFIG" >"$BERTH_LOG" 2>&1 &
    BERTH_PID=$!
    export BERTH_PID
    if ! berth_wait_for 10 berth_rpc call version; then
        echo "berth_start_daemon: berthd did not answer on $BERTH_SOCK within 10 s" >&2
        berth_dump_log >&2
        return 1
    fi
    if [[ ${BERTH_WAIT_READY:-1} != 0 ]] && ! berth_wait_for "${BERTH_READY_WAIT:-45}" berth__ready; then
        echo "berth_start_daemon: plugins not ready: $(berth_rpc call info | jq -c .not_ready)" >&2
        berth_dump_log >&2
        return 1
    fi
    return 0
}

# Processes whose command line mentions our private temp dir (plugins,
# shims, containers started for this test), excluding ourselves.
berth__leftover_pids() {
    local pid
    [[ -n ${BERTH_TEST_DIR:-} ]] || return 0
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$BERTH_TEST_DIR"; then
            echo "$pid"
        fi
    done
}

# A daemon shared by a whole bats file: setup_file starts it and saves it
# with berth_save_daemon FILE; each test's setup runs berth_load_daemon FILE
# (BERTH_TEST_DIR, BERTH_PID and the paths derived from them);
# teardown_file runs berth_stop_saved_daemon FILE.
berth_save_daemon() {
    echo "$BERTH_TEST_DIR $BERTH_PID" >"$1"
}

berth_load_daemon() {
    read -r BERTH_TEST_DIR BERTH_PID <"$1" || return 1
    export BERTH_TEST_DIR BERTH_PID BERTH_STATE=$BERTH_TEST_DIR/state \
        BERTH_SOCK=$BERTH_TEST_DIR/state/berth.sock BERTH_LOG=$BERTH_TEST_DIR/berthd.log
}

berth_stop_saved_daemon() {
    [[ -f $1 ]] || return 0
    berth_load_daemon "$1" && berth_stop_daemon
}

berth_stop_daemon() {
    local children=() pid i
    if [[ -n ${BERTH_PID:-} ]] && kill -0 "$BERTH_PID" 2>/dev/null; then
        mapfile -t children < <(ps -o pid= --ppid "$BERTH_PID" 2>/dev/null | tr -d ' ')
        kill -TERM "$BERTH_PID" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$BERTH_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$BERTH_PID" 2>/dev/null; then
            echo "berth_stop_daemon: berthd did not stop in 15 s; killing it" >&2
            kill -KILL "$BERTH_PID" 2>/dev/null || true
        fi
        wait "$BERTH_PID" 2>/dev/null || true
    fi
    for pid in "${children[@]}" $(berth__leftover_pids); do
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${BERTH_TEST_DIR:-} && -d $BERTH_TEST_DIR ]]; then
        # Deepest mounts first.
        awk -v d="$BERTH_TEST_DIR" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo |
            sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        rm -rf "$BERTH_TEST_DIR"
    fi
    BERTH_PID=
    BERTH_TEST_DIR=
}
