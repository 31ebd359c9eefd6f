#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# The berth CLI: help output, errors when the daemon is absent, bash
# completion, and (with a real berthd in a temp root) version, info,
# plugins ls in every format, events and Ctrl-C.

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export CLI=$BERTH_BIN/berth
    export BERTH_TEST_TMP=$(mktemp -d /tmp/berth-cli-e2e.XXXXXX)
}

teardown_file() {
    rm -rf "$BERTH_TEST_TMP"
}

setup() {
    [[ -x $CLI ]] || skip "berth not built (looked in $BERTH_BIN)"
    # Never talk to a system daemon by accident.
    export BERTH_ADDRESS=$BERTH_TEST_TMP/absent.sock
    unset BERTH_NAMESPACE
}

# Only the example echo plugin: this file tests the CLI, not the real plugins.
NO_REAL_PLUGINS='"content": {"enabled": false}, "metadata": {"enabled": false},
  "snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
  "runtime-runc": {"enabled": false}, "gc": {"enabled": false}'

# Starts berthd through the shared helper (which skips without root, berthd
# or jq), with the echo plugin.
need_daemon() {
    local lib=$BATS_TEST_DIRNAME/lib/daemon.bash
    [[ -f $lib ]] || skip "tests/e2e/lib/daemon.bash not present"
    # shellcheck source=/dev/null
    source "$lib"
    [[ -x $BERTH_BIN/berth-echo ]] || skip "berth-echo not built"
    DAEMON_STARTED=1
    berth_start_daemon "{$NO_REAL_PLUGINS, \"echo\": {}}"
}

teardown() {
    if [[ -n ${EVENTS_PID:-} ]]; then
        kill "$EVENTS_PID" 2>/dev/null || true
        wait "$EVENTS_PID" 2>/dev/null || true
        EVENTS_PID=
    fi
    if [[ -n ${DAEMON_STARTED:-} ]]; then
        [[ -n ${BATS_TEST_COMPLETED:-} ]] || berth_dump_log 40
        berth_stop_daemon
        DAEMON_STARTED=
    fi
}

# --- help ------------------------------------------------------------------

@test "berth --help lists every command group with its help" {
    run "$CLI" --help
    [ "$status" -eq 0 ]
    [[ $output == *"Usage: berth [GLOBAL OPTIONS] COMMAND"* ]]
    for g in version info plugins events namespaces content leases images snapshots containers tasks run gc completion; do
        echo "$output" | grep -qE "^  $g\b" || { echo "missing group $g"; false; }
    done
    [[ $output == *"List and manage plugins"* ]]
    [[ $output == *"--address PATH"* ]]
    [[ $output == *"BERTH_NAMESPACE"* ]]
    [[ $output == *"--connect-timeout"* ]]
    # No arguments prints the same help.
    run "$CLI"
    [ "$status" -eq 0 ]
    [[ $output == *"Usage: berth [GLOBAL OPTIONS] COMMAND"* ]]
}

@test "berth -v prints the client version" {
    run "$CLI" -v
    [ "$status" -eq 0 ]
    [[ $output =~ ^berth\ version\ [0-9]+\.[0-9]+\.[0-9]+ ]]
}

@test "group and subcommand help" {
    run "$CLI" plugins --help
    [ "$status" -eq 0 ]
    [[ $output == *"Commands:"* ]]
    [[ $output == *"list, ls"* ]]
    [[ $output == *"restart"* ]]
    [[ $output == *"replace"* ]]
    run "$CLI" plugins ls --help
    [ "$status" -eq 0 ]
    [[ $output == *"Usage: berth plugins list [-q] [--format json]"* ]]
    [[ $output == *"Examples:"* ]]
    run "$CLI" help plugins replace
    [ "$status" -eq 0 ]
    [[ $output == *"--path BIN"* ]]
    for g in version info events; do
        run "$CLI" "$g" --help
        [ "$status" -eq 0 ]
        [[ $output == *"Usage: berth $g"* ]]
    done
}

@test "unknown commands and flags are errors that say what to run" {
    run "$CLI" frobnicate
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: unknown command "frobnicate"; run `berth --help` for the list of commands' ]
    run "$CLI" plugins frob
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: unknown command "plugins frob"; run `berth plugins --help` for the list' ]
    run "$CLI" --frob version
    [ "$status" -eq 1 ]
    [[ $output == "berth: unknown global flag --frob"* ]]
    run "$CLI" plugins ls --frob
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: unknown flag --frob for `berth plugins ls`; run `berth plugins ls --help`' ]
    run "$CLI" plugins ls --format yaml
    [ "$status" -eq 1 ]
    [ "$output" = "berth: unknown --format yaml: use table or json" ]
    run "$CLI" --timeout soon version
    [ "$status" -eq 1 ]
    [[ $output == 'berth: invalid duration "soon" for --timeout'* ]]
    run "$CLI" -a
    [ "$status" -eq 1 ]
    [[ $output == "berth: flag -a needs a value"* ]]
}

@test "groups missing from the build say so" {
    missing=$("$CLI" --help | sed -n 's/^  \([a-z]*\).*(not available in this build)$/\1/p' | head -1)
    [[ -n $missing ]] || skip "every command group is built"
    run "$CLI" "$missing" ls
    [ "$status" -eq 1 ]
    [ "$output" = "berth: command $missing is not available in this build" ]
}

# --- daemon absent ------------------------------------------------------------

@test "no daemon: the error says how to start it" {
    run "$CLI" -a "$BERTH_TEST_TMP/none.sock" plugins ls
    [ "$status" -eq 1 ]
    [ "$output" = "berth: cannot connect to $BERTH_TEST_TMP/none.sock: no such file or directory — is berthd running? start it with \`systemctl start berth\` or \`berthd\`" ]
    # $BERTH_ADDRESS is the default address.
    BERTH_ADDRESS=$BERTH_TEST_TMP/env.sock run "$CLI" info
    [ "$status" -eq 1 ]
    [[ $output == "berth: cannot connect to $BERTH_TEST_TMP/env.sock: no such file"* ]]
    # -a wins over the environment.
    BERTH_ADDRESS=$BERTH_TEST_TMP/env.sock run "$CLI" --address="$BERTH_TEST_TMP/flag.sock" info
    [[ $output == "berth: cannot connect to $BERTH_TEST_TMP/flag.sock"* ]]
}

@test "no daemon: a stale socket is refused with the same advice" {
    python3 - "$BERTH_TEST_TMP/stale.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
EOF
    run "$CLI" -a "$BERTH_TEST_TMP/stale.sock" version
    [ "$status" -eq 1 ]
    # The client half is printed before connecting, like ctr.
    [[ $output == *"Client:"* ]]
    [[ $output == *"berth: cannot connect to $BERTH_TEST_TMP/stale.sock: connection refused — is berthd running?"* ]]
}

@test "no daemon: the JSON formats fail cleanly and print nothing on stdout" {
    run --separate-stderr "$CLI" plugins ls --format json
    [ "$status" -eq 1 ]
    [ -z "$output" ]
    [[ $stderr == "berth: cannot connect to"* ]]
}

# --- completion ----------------------------------------------------------------

complete_words() {
    # Prints the completions bash offers for the words given (last = current).
    bash -c '
        source <("$0" completion bash)
        COMP_WORDS=("$@")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        _berth
        printf "%s\n" "${COMPREPLY[@]}"
    ' "$CLI" "$CLI" "$@"
}

@test "bash completion is generated from the command table" {
    run "$CLI" completion bash
    [ "$status" -eq 0 ]
    bash -n <("$CLI" completion bash)
    [[ $output == *"complete -F _berth berth"* ]]
    run complete_words pl
    [ "$status" -eq 0 ]
    [[ $output == *plugins* && $output == *plugin* ]]
    run complete_words plugins ""
    [[ $output == *ls* && $output == *list* && $output == *restart* && $output == *replace* ]]
    run complete_words plugins ls --
    [[ $output == *--format* && $output == *--quiet* ]]
    run complete_words --
    [[ $output == *--address* && $output == *--namespace* && $output == *--timeout* ]]
    run complete_words plugins ls --format ""
    [[ $output == *json* && $output == *table* ]]
    # The generated file next to the binary matches.
    gen=$BERTH_BIN/../share/bash-completion/completions/berth
    if [[ -f $gen ]]; then
        diff <("$CLI" completion bash) "$gen"
    fi
}

# --- with a daemon -----------------------------------------------------------

@test "version shows client and server like ctr" {
    need_daemon
    run $BERTH version
    [ "$status" -eq 0 ]
    [[ ${lines[0]} == "Client:" ]]
    [[ ${lines[1]} =~ ^"  Version:  "[0-9] ]]
    [[ ${lines[2]} == "  Revision: "* ]]
    [[ ${lines[3]} == "Server:" ]]
    [[ ${lines[4]} =~ ^"  Version:  "[0-9] ]]
    [[ ${lines[6]} =~ ^"  UUID: "[0-9a-f-]{32,36}$ ]]
    run $BERTH version --format json
    [ "$status" -eq 0 ]
    echo "$output" | jq -e '.client.version and .server.version and (.server.boot_id | length >= 32)'
}

@test "info is valid JSON" {
    need_daemon
    run $BERTH info
    [ "$status" -eq 0 ]
    echo "$output" | jq -e 'type == "object"'
}

@test "plugins ls: table, -q and --format json agree" {
    need_daemon
    run $BERTH plugins ls
    [ "$status" -eq 0 ]
    [[ ${lines[0]} =~ ^TYPE\ +ID\ +VERSION\ +PID\ +STATUS\ +RESTARTS\ +UPTIME\ *$ ]]
    table_ids=$(printf '%s\n' "${lines[@]:1}" | awk '{print $2}')
    run $BERTH plugins ls -q
    [ "$status" -eq 0 ]
    q_ids=$output
    json=$($BERTH plugins ls --format json)
    echo "$json" | jq -e 'type == "array" and length > 0 and all(.[]; has("id") and has("status") and has("pid"))'
    json_ids=$(echo "$json" | jq -r '.[].id')
    [ "$table_ids" = "$q_ids" ]
    [ "$q_ids" = "$json_ids" ]
    # Columns line up: every row's ID starts where the header's ID does.
    col=$($BERTH plugins ls | head -1 | awk '{print index($0, "ID")}')
    $BERTH plugins ls | tail -n +2 | while IFS= read -r l; do
        [[ ${l:col-2:1} == " " && ${l:col-1:1} != " " ]]
    done
}

@test "events streams until Ctrl-C, which cancels and exits 130" {
    need_daemon
    id=$($BERTH plugins ls --format json | jq -r '[.[] | select(.status == "ok")][0].id // empty')
    [[ -n $id ]] # the test daemon always runs the echo plugin
    $BERTH events /plugins/ >"$BERTH_TEST_TMP/events.out" 2>"$BERTH_TEST_TMP/events.err" &
    EVENTS_PID=$!
    sleep 0.5
    $BERTH plugins restart "$id"
    for _ in $(seq 50); do
        grep -q "/plugins/" "$BERTH_TEST_TMP/events.out" && break
        sleep 0.1
    done
    kill -INT "$EVENTS_PID"
    rc=0
    wait "$EVENTS_PID" || rc=$?
    EVENTS_PID=
    [ "$rc" -eq 130 ]
    # TIMESTAMP NAMESPACE TOPIC EVENT-JSON, like ctr events.
    line=$(grep -m1 "/plugins/" "$BERTH_TEST_TMP/events.out")
    [[ $line =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}\ [0-9:.]+\ \+0000\ UTC\ [^\ ]+\ /plugins/[a-z]+\ \{ ]]
    echo "$line" | cut -d' ' -f7- | jq -e 'type == "object"'
    # The daemon is still serving.
    $BERTH version >/dev/null
}

@test "events --format json prints one JSON object per line" {
    need_daemon
    id=$($BERTH plugins ls --format json | jq -r '[.[] | select(.status == "ok")][0].id // empty')
    [[ -n $id ]] # the test daemon always runs the echo plugin
    $BERTH events --format json >"$BERTH_TEST_TMP/events.json" &
    EVENTS_PID=$!
    sleep 0.5
    $BERTH plugins restart "$id"
    for _ in $(seq 50); do
        [[ -s $BERTH_TEST_TMP/events.json ]] && break
        sleep 0.1
    done
    kill -INT "$EVENTS_PID"
    wait "$EVENTS_PID" || true
    EVENTS_PID=
    [[ -s $BERTH_TEST_TMP/events.json ]]
    jq -e -s 'length > 0 and all(.[]; has("topic") and has("timestamp"))' "$BERTH_TEST_TMP/events.json"
}

@test "a timeout shorter than the call fails with deadline_exceeded" {
    need_daemon
    # events never answers on its own: --timeout ends it.
    SECONDS=0
    run $BERTH --timeout 300ms events
    [ "$status" -eq 1 ]
    [ "$SECONDS" -le 4 ]
    # Our own message, or the daemon's deadline_exceeded if it answered first.
    [[ $output == *"timed out after 300ms"* || $output == "berth: "*deadline* ]]
}

@test "completion offers live names from the daemon" {
    need_daemon
    read -ra words <<<"$BERTH"
    run complete_words "${words[@]:1}" plugins restart ""
    [ "$status" -eq 0 ]
    [ -n "$output" ]
    [ "$(echo "$output" | sort)" = "$($BERTH plugins ls -q | sort)" ]
}

@test "unknown plugin ids are reported by the daemon" {
    need_daemon
    run $BERTH plugins restart no-such-plugin
    [ "$status" -eq 1 ]
    [[ $output == "berth: "*"no-such-plugin"* ]]
}
