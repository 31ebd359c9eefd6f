#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# berthd, the microkernel core, on a real daemon with the example plugins
# (berth-echo in C, echo.py in Python): routing, restarts under load,
# replace, crash loops, hostile bytes, peer credentials, the health
# watchdog, deadlines, cancels, streams, events, sd_notify and shutdown.

bats_require_minimum_version 1.5.0

# Only the example plugins: this file tests the core, not the real plugins.
NO_REAL_PLUGINS='"content": {"enabled": false}, "metadata": {"enabled": false},
  "snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
  "runtime-runc": {"enabled": false}, "gc": {"enabled": false}'

setup() {
    source "$BATS_TEST_DIRNAME/lib/daemon.bash"
    berth_require_root
    command -v jq >/dev/null || skip "jq not installed"
    RAW=$BATS_TEST_DIRNAME/tools/berth_raw.py
    PYECHO=$BERTH_SRC/sdk/examples/echo.py
    [[ -x $BERTH_BIN/berth-echo ]] || skip "berth-echo not built"
    /usr/bin/python3 -c 'import msgpack' 2>/dev/null || skip "python3-msgpack not installed"
    unset BERTH_CONFIG_EXTRA BERTH_WAIT_READY NOTIFY_SOCKET
}

teardown() {
    if [[ -n ${BG_PID:-} ]]; then
        kill "$BG_PID" 2>/dev/null || true
        wait "$BG_PID" 2>/dev/null || true
        BG_PID=
    fi
    if [[ -z ${BATS_TEST_COMPLETED:-} ]]; then
        berth_dump_log 80
    fi
    berth_stop_daemon
    if [[ -n ${EXTRA_DIR:-} ]]; then
        rm -rf "$EXTRA_DIR"
        EXTRA_DIR=
    fi
}

start_echo() {
    berth_start_daemon "{$NO_REAL_PLUGINS, \"echo\": {}, \"pyecho\": {\"path\": \"$PYECHO\"} ${1:-}}"
}

# started_count PATTERN: how many times the echo plugin logged that it
# started serving a request matching PATTERN ("METHOD[ key=KEY]").
started_count() {
    grep -c "plugin=echo .*msg=\"request started\" method=$1\( \|\$\)" "$BERTH_LOG" || true
}

# call_killing_echo METHOD PARAMS OUT [WAIT-CMD...]: calls METHOD in the
# background (output to OUT), kills the echo plugin once WAIT-CMD succeeds
# (default: once the plugin logs that it started serving the call) and sets
# CALL_RC to the call's exit status.
call_killing_echo() {
    local method=$1 params=$2 out=$3
    shift 3
    local before what=$method key
    key=$(jq -r '.key // empty' <<<"$params")
    [[ -z $key ]] || what="$method key=$key"
    before=$(started_count "$what")
    berth_rpc call "$method" "$params" >"$out" 2>&1 &
    BG_PID=$!
    if (($#)); then
        berth_wait_for 10 "$@"
    else
        berth_wait_for 10 eval '(($(started_count "$what") > before))'
    fi
    kill -9 "$(berth_plugin_pid echo)"
    CALL_RC=0
    wait "$BG_PID" || CALL_RC=$?
    BG_PID=
}

plugin_field() { # ID FIELD
    berth_rpc call plugins.list "{\"id\": \"$1\"}" | jq -r ".plugins[0].$2"
}

@test "version, info and plugins ls answer; sockets have the documented modes" {
    start_echo
    run berth_rpc call version
    [ "$status" -eq 0 ]
    [[ $(jq -r .version <<<"$output") == 0.1.0 ]]
    [[ $(jq -r .pid <<<"$output") == "$BERTH_PID" ]]
    [[ $(jq -r .boot_id <<<"$output") =~ ^[0-9a-f]{32}$ ]]
    run berth_rpc call info
    [[ $(jq -r .root <<<"$output") == "$BERTH_ROOT" ]]
    [[ $(jq -r .ready <<<"$output") == true ]]
    [[ $(jq -r .plugins <<<"$output") == 2 ]]
    [[ $(stat -c %a "$BERTH_SOCK") == 660 ]]
    [[ $(stat -c %a "$BERTH_STATE/plugins.sock") == 600 ]]
    [[ $(stat -c %a "$BERTH_STATE") == 711 ]]
    [[ $(stat -c %a "$BERTH_ROOT") == 711 ]]
    run berth_rpc call plugins.list
    [[ $(jq -r '.plugins[] | select(.id=="echo") | .status' <<<"$output") == ok ]]
    [[ $(jq -r '.plugins[] | select(.id=="content") | .status' <<<"$output") == skip ]]
    [[ $(jq -r '.plugins[] | select(.id=="echo") | .methods | index("echo.echo")' <<<"$output") != null ]]
    if [[ -x $BERTH_BIN/berth ]]; then
        run berth plugins ls
        [ "$status" -eq 0 ]
        [[ $output == *echo* ]]
    fi
}

@test "requests are routed with caller stamped; spoofed caller is overwritten" {
    start_echo
    run berth_rpc call echo.echo '{"data": {"x": [1, "two"]}, "caller": {"kind": "plugin", "id": "gc", "uid": 0}}'
    [ "$status" -eq 0 ]
    [[ $(jq -c .data <<<"$output") == '{"x":[1,"two"]}' ]]
    [[ $(jq -r .caller.kind <<<"$output") == client ]]
    [[ $(jq -r .caller.id <<<"$output") == "" ]]
    [[ $(jq -r .pid <<<"$output") == "$(berth_plugin_pid echo)" ]]
    run berth_rpc call no.such_method
    [ "$status" -eq 1 ]
    [[ $output == *"unimplemented: no plugin serves method no.such_method"* ]]
    run berth_rpc call plugins.frobnicate
    [[ $output == *unimplemented* ]]
}

@test "internal methods: refused to clients, served to the declared plugin" {
    start_echo
    run berth_rpc call echo.internal
    [ "$status" -eq 1 ]
    [[ $output == *"permission_denied: method echo.internal is internal"* ]]
    # echo calls its own internal method through the core: allowed, and the
    # core stamps the caller as plugin echo.
    run berth_rpc call echo.call '{"method": "echo.internal"}'
    [ "$status" -eq 0 ]
    [[ $(jq -r .result.caller.kind <<<"$output") == plugin ]]
    [[ $(jq -r .result.caller.id <<<"$output") == echo ]]
    # A plugin calling a core method and another plugin's method.
    run berth_rpc call echo.call '{"method": "version"}'
    [[ $(jq -r .result.pid <<<"$output") == "$BERTH_PID" ]]
    run berth_rpc call echo.call '{"method": "pyecho.echo", "params": {"data": 5}}'
    [[ $(jq -r .result.lang <<<"$output") == python ]]
    [[ $(jq -r .result.caller.id <<<"$output") == echo ]]
    # Clients may not publish events or register.
    run berth_rpc call events.publish '{"topic": "/x"}'
    [[ $output == *permission_denied* ]]
    run berth_rpc call plugin.register '{"id": "echo"}'
    [[ $output == *permission_denied* ]]
}

@test "python echo plugin registers and serves (raw protocol, no SDK)" {
    start_echo
    run berth_rpc call pyecho.echo '{"data": "hello", "namespace": "ns1"}'
    [ "$status" -eq 0 ]
    [[ $(jq -r .data <<<"$output") == hello ]]
    [[ $(jq -r .lang <<<"$output") == python ]]
    [[ $(jq -r .namespace <<<"$output") == ns1 ]]
    [[ $(jq -r .caller.kind <<<"$output") == client ]]
    # A call made by the Python plugin through the core.
    run berth_rpc call pyecho.version
    [[ $(jq -r .core.boot_id <<<"$output") == "$(berth_rpc call version | jq -r .boot_id)" ]]
    [[ $(plugin_field pyecho type) == io.berth.example.echo-python.v1 ]]
    run berth_rpc load pyecho.echo 500 8 '{"data": 1}'
    [ "$status" -eq 0 ]
    [[ $output == *"failed=0"* ]]
}

@test "kill -9 of the echo plugin during 1,000 idempotent calls: zero failures, one restart" {
    start_echo
    old=$(berth_plugin_pid echo)
    # 8 in flight, 12 ms each: requests are in the plugin at any moment of
    # the ~1.5 s load, however slow a loaded machine makes the client.
    berth_rpc load echo.echo 1000 8 '{"data": "x", "delay_ms": 12}' >"$BERTH_TEST_DIR/load.out" 2>&1 &
    BG_PID=$!
    # Kill once responses flow (a loaded machine may start the client late).
    berth_wait_for 20 grep -q "load: first response" "$BERTH_TEST_DIR/load.out"
    sleep 0.2
    kill -0 "$BG_PID" # the load is still running
    kill -9 "$old"
    rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=
    cat "$BERTH_TEST_DIR/load.out"
    [ "$rc" -eq 0 ]
    grep -q "ok=1000 failed=0" "$BERTH_TEST_DIR/load.out"
    new=$(berth_plugin_pid echo)
    [[ $new != "$old" && $new -gt 0 ]]
    [[ $(plugin_field echo status) == ok ]]
    [[ $(plugin_field echo restarts) == 1 ]]
    [[ $(berth_rpc call echo.pid | jq -r .pid) == "$new" ]]
    grep -q 'msg="plugin exited; restarting" plugin=echo' "$BERTH_LOG"
    # Requests were in flight at the kill and were re-sent, not lost.
    grep -q 'msg="re-sending request to the next instance" plugin=echo method=echo.echo' "$BERTH_LOG"
    if [[ -x $BERTH_BIN/berth ]]; then
        run berth plugins ls
        # TYPE ID VERSION PID STATUS RESTARTS UPTIME
        [[ $(awk '$2 == "echo" {print $5, $6}' <<<"$output") == "ok 1" ]]
    fi
}

@test "a non-idempotent request in flight when its plugin dies gets unavailable" {
    start_echo
    # plugins.list counts it in flight (the core's health checks are not).
    call_killing_echo echo.sleep '{"ms": 20000}' "$BERTH_TEST_DIR/sleep.out" \
        eval '(($(plugin_field echo in_flight) == 1))'
    [ "$CALL_RC" -eq 1 ]
    grep -q "unavailable: plugin echo restarted while handling echo.sleep; it may have been partly applied" "$BERTH_TEST_DIR/sleep.out"
    berth_wait_for 5 berth_rpc call echo.pid
}

@test "a replay mutation with a request_id is re-sent after its plugin dies and applied once" {
    start_echo
    out=$BERTH_TEST_DIR/rec.out
    # Killed before the change: the restarted instance applies it.
    call_killing_echo echo.record '{"key": "a", "request_id": "r-1", "delay_ms": 1500}' "$out"
    [ "$CALL_RC" -eq 0 ]
    [[ $(jq -r .records "$out") == 1 && $(jq -r .replayed "$out") == false ]]
    # Killed after the change, before the answer: the restarted instance
    # answers from the record; nothing is applied twice.
    call_killing_echo echo.record '{"key": "b", "request_id": "r-2", "after_ms": 5000}' "$out" \
        grep -q 'record stored; waiting before the answer" name=rid-r-2' "$BERTH_LOG"
    [ "$CALL_RC" -eq 0 ]
    [[ $(jq -r .records "$out") == 2 && $(jq -r .replayed "$out") == true ]]
    [[ $(plugin_field echo restarts) == 2 ]]
    # The same request_id again later: the recorded answer, still 2 records.
    run berth_rpc call echo.record '{"key": "b", "request_id": "r-2"}'
    [[ $(jq -r .records <<<"$output") == 2 && $(jq -r .replayed <<<"$output") == true ]]
    # Without a request_id the core cannot know: unavailable, as for any
    # non-idempotent request.
    call_killing_echo echo.record '{"key": "c", "delay_ms": 1500}' "$out"
    [ "$CALL_RC" -eq 1 ]
    grep -q "unavailable: plugin echo restarted while handling echo.record" "$out"
    # A request_id on a method that does not deduplicate (not `replay`) is
    # not a licence to re-send it.
    berth_wait_for 5 berth_rpc call echo.pid
    call_killing_echo echo.sleep '{"ms": 20000, "request_id": "s-1"}' "$out"
    [ "$CALL_RC" -eq 1 ]
    grep -q "unavailable: plugin echo restarted while handling echo.sleep" "$out"
}

@test "plugins replace under load: zero failures, the new pid serves, the old one is gone" {
    start_echo
    old=$(berth_plugin_pid echo)
    berth_rpc load echo.echo 2000 4 '{"data": "x", "delay_ms": 3}' >"$BERTH_TEST_DIR/load.out" 2>&1 &
    BG_PID=$!
    berth_wait_for 20 grep -q "load: first response" "$BERTH_TEST_DIR/load.out"
    sleep 0.2
    run berth_rpc call plugins.replace '{"id": "echo"}'
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $(jq -r .old_pid <<<"$output") == "$old" ]]
    new=$(jq -r .pid <<<"$output")
    rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=
    cat "$BERTH_TEST_DIR/load.out"
    [ "$rc" -eq 0 ]
    grep -q "ok=2000 failed=0" "$BERTH_TEST_DIR/load.out"
    [[ $new != "$old" ]]
    [[ $(berth_rpc call echo.pid | jq -r .pid) == "$new" ]]
    ! kill -0 "$old" 2>/dev/null || false
    grep -q "msg=\"replace done\" plugin=echo old_pid=$old pid=$new" "$BERTH_LOG"
    # A binary outside the plugin directory is refused.
    run berth_rpc call plugins.replace '{"id": "echo", "path": "/bin/true"}'
    [ "$status" -eq 1 ]
    [[ $output == *"permission_denied: replacement binaries must be in the plugin directory"* ]]
    if [[ -x $BERTH_BIN/berth ]]; then
        run berth plugins replace echo
        [ "$status" -eq 0 ]
        [[ $(berth_rpc call echo.pid | jq -r .pid) != "$new" ]]
    fi
}

@test "plugins restart re-spawns the plugin; restart/replace need uid 0" {
    start_echo
    old=$(berth_plugin_pid echo)
    run berth_rpc call plugins.restart '{"id": "echo"}'
    [ "$status" -eq 0 ]
    [[ $(jq -r .pid <<<"$output") != "$old" ]]
    [[ $(plugin_field echo restarts) == 1 ]]
    run berth_rpc call plugins.restart '{"id": "nope"}'
    [[ $output == *"not_found: no plugin nope"* ]]
    # A plugin may not restart others.
    run berth_rpc call echo.call '{"method": "plugins.restart", "params": {"id": "pyecho"}}'
    [[ $output == *"permission_denied"* ]]
}

@test "a plugin that crashes at start every time ends failed while the others serve" {
    export BERTH_WAIT_READY=0
    export BERTH_CONFIG_EXTRA='{"restart_backoff_max_ms": 40, "failed_retry_ms": 60000}'
    start_echo ", \"crasher\": {\"path\": \"berth-echo\", \"args\": [\"--crash-at-start\"]}"
    berth_wait_for 20 bash -c "[[ \$($BERTH_RPCTOOL -a $BERTH_SOCK call plugins.list '{\"id\": \"crasher\"}' | jq -r '.plugins[0].status') == failed ]]"
    [[ $(plugin_field crasher restarts) -ge 11 ]]
    [[ $(plugin_field crasher last_exit) == "exit status 1" ]]
    grep -q 'msg="plugin keeps crashing; marked failed' "$BERTH_LOG"
    # Its output reached the daemon log, tagged.
    grep -q 'plugin=crasher .*--crash-at-start given' "$BERTH_LOG"
    run berth_rpc load echo.echo 200 4 '{"data": 1}'
    [ "$status" -eq 0 ]
    run berth_rpc call pyecho.echo
    [ "$status" -eq 0 ]
    run berth_rpc call info
    [[ $(jq -r '.not_ready[]' <<<"$output") == crasher ]]
    [[ $(plugin_field echo status) == ok ]]
}

@test "an enabled plugin whose binary is missing is failed (not skip); installing it and a restart bring it up" {
    EXTRA_DIR=$(mktemp -d /tmp/berth-missing.XXXXXX)
    export BERTH_WAIT_READY=0
    export BERTH_CONFIG_EXTRA='{"failed_retry_ms": 60000}'
    start_echo ", \"late\": {\"path\": \"$EXTRA_DIR/berth-late\", \"args\": [\"--id\", \"late\"]}"
    # The others are ready and the daemon says so without waiting for the
    # ready timeout: a missing binary will not appear by waiting.
    berth_wait_for 10 bash -c "[[ \$($BERTH_RPCTOOL -a $BERTH_SOCK call info | jq -r .ready) == true ]]"
    [[ $(plugin_field late status) == failed ]]
    [[ $(plugin_field late last_exit) == "binary not found: $EXTRA_DIR/berth-late (No such file or directory)" ]]
    grep -q 'msg="plugin binary not found; plugin not started (install it' "$BERTH_LOG"
    run berth_rpc call info
    [[ $(jq -r '.not_ready[]' <<<"$output") == late ]]
    [[ $(plugin_field echo status) == ok ]]
    # Install it; an operator's restart starts it at once.
    cp "$PYECHO" "$EXTRA_DIR/berth-late"
    run berth_rpc call plugins.restart '{"id": "late"}'
    [ "$status" -eq 0 ]
    [[ $(plugin_field late status) == ok ]]
    run berth_rpc call info
    [[ $(jq -r '.not_ready | length' <<<"$output") == 0 ]]
}

@test "malformed bytes get an error or a close; other clients are unaffected" {
    start_echo
    /usr/bin/python3 "$RAW" "$BERTH_SOCK" hold 4 >"$BERTH_TEST_DIR/hold.out" &
    BG_PID=$!
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad random
    [[ $output == *closed* ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad huge
    [[ $output == closed ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad zero
    [[ $output == closed ]]
    # (ipc validates the whole message before it reads the msgid, so the
    # deep one is closed without an error response.)
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad deep
    [[ $output == *closed ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad not-array
    [[ $output == closed ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad wrong-types
    [[ $output == closed ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad params-not-map
    [[ $output == *"error invalid_argument 7"*closed* ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" bad truncated
    [[ $output == closed ]]
    wait "$BG_PID"
    BG_PID=
    grep -q "^ok " "$BERTH_TEST_DIR/hold.out"
    kill -0 "$BERTH_PID"
    run berth_rpc call echo.echo '{"data": "still here"}'
    [ "$status" -eq 0 ]
    grep -q 'msg="protocol error, closing connection"' "$BERTH_LOG"
}

@test "a non-root peer outside the configured group is refused" {
    command -v setpriv >/dev/null || skip "setpriv not installed"
    export BERTH_CONFIG_EXTRA='{"group": "daemon"}'
    start_echo
    EXTRA_DIR=$(mktemp -d /tmp/berth-e2e-tool.XXXXXX)
    chmod 0755 "$EXTRA_DIR"
    cp "$BERTH_RPCTOOL" "$EXTRA_DIR/rpctool"
    [[ $(stat -c %G "$BERTH_SOCK") == daemon ]]
    # Outside the group the socket mode already stops nobody...
    run setpriv --reuid=65534 --regid=65534 --clear-groups "$EXTRA_DIR/rpctool" -a "$BERTH_SOCK" call version
    [ "$status" -ne 0 ]
    [[ $output == *"Permission denied"* ]]
    # ...and if the socket is opened up by mistake, berthd itself refuses.
    chmod 0666 "$BERTH_SOCK"
    run setpriv --reuid=65534 --regid=65534 --clear-groups "$EXTRA_DIR/rpctool" -a "$BERTH_SOCK" call version
    [ "$status" -eq 1 ]
    [[ $output == *"permission_denied: permission denied: uid 65534"* ]]
    grep -q 'msg="connection refused: peer is not root' "$BERTH_LOG"
    # A member of the group (supplementary) is served, but may not restart plugins.
    chmod 0660 "$BERTH_SOCK"
    run setpriv --reuid=65534 --regid=65534 --groups=1 "$EXTRA_DIR/rpctool" -a "$BERTH_SOCK" call version
    [ "$status" -eq 0 ]
    run setpriv --reuid=65534 --regid=65534 --groups=1 "$EXTRA_DIR/rpctool" -a "$BERTH_SOCK" call plugins.restart '{"id": "echo"}'
    [[ $output == *"permission_denied: plugins.restart is accepted only from uid 0"* ]]
    run setpriv --reuid=65534 --regid=65534 --groups=1 "$EXTRA_DIR/rpctool" -a "$BERTH_SOCK" call echo.echo '{"data": 1}'
    [[ $(jq -r .caller.uid <<<"$output") == 65534 ]]
}

@test "the health watchdog kills and restarts a plugin that stops answering" {
    export BERTH_CONFIG_EXTRA='{"health_interval_ms": 100, "health_timeout_ms": 300}'
    start_echo
    old=$(berth_plugin_pid echo)
    berth_rpc call echo.freeze '{"ms": 30000}'
    berth_wait_for 5 bash -c "[[ \$($BERTH_RPCTOOL -a $BERTH_SOCK call echo.pid | jq -r .pid) != $old ]]"
    ! kill -0 "$old" 2>/dev/null || false
    grep -q 'msg="plugin did not answer plugin.health in time; killing it" plugin=echo' "$BERTH_LOG"
    [[ $(plugin_field echo restarts) == 1 ]]
}

@test "deadlines, cancels and requests queued while a plugin restarts" {
    export BERTH_CONFIG_EXTRA='{"restart_backoff_min_ms": 1000}'
    start_echo
    # timeout_ms answers deadline_exceeded and cancels the server's work.
    SECONDS=0
    run berth_rpc call echo.sleep '{"ms": 10000, "timeout_ms": 300}'
    [ "$status" -eq 1 ]
    [[ $output == *"deadline_exceeded: echo.sleep: deadline exceeded after"* ]]
    ((SECONDS < 3))
    # $cancel from the caller: the plugin answers canceled at once.
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" cancel
    [[ $output == canceled* ]]
    # While echo restarts (1 s backoff) new requests wait in its queue...
    kill -9 "$(berth_plugin_pid echo)"
    berth_wait_for 5 eval '[[ $(plugin_field echo status) == restarting ]]'
    run berth_rpc call echo.echo '{"data": "queued"}'
    [ "$status" -eq 0 ]
    [[ $(jq -r .data <<<"$output") == queued ]]
    # ...unless their deadline passes first.
    kill -9 "$(berth_plugin_pid echo)"
    berth_wait_for 5 eval '[[ $(plugin_field echo status) == restarting ]]'
    run berth_rpc call echo.echo '{"timeout_ms": 100}'
    [[ $output == *"deadline_exceeded"*"waiting for plugin echo (restarting)"* ]]
}

@test "a client that disconnects cancels its requests in the plugin" {
    start_echo
    # (the binary itself, not the berth_rpc function: kill must reach it)
    "$BERTH_RPCTOOL" -a "$BERTH_SOCK" call echo.sleep '{"ms": 30000}' >/dev/null 2>&1 &
    BG_PID=$!
    berth_wait_for 10 eval '(($(started_count echo.sleep) > 0))'
    kill "$BG_PID"
    wait "$BG_PID" || true
    BG_PID=
    berth_wait_for 5 grep -q 'plugin=echo .*msg="request canceled" method=echo.sleep' "$BERTH_LOG"
    # The orphaned response is dropped; the daemon serves on.
    berth_rpc call echo.echo
}

@test "resumable streams are re-sent to the replacement instance" {
    start_echo
    old=$(berth_plugin_pid echo)
    berth_rpc call echo.watch >"$BERTH_TEST_DIR/watch.out" 2>&1 &
    BG_PID=$!
    berth_wait_for 5 grep -q "\"pid\":$old" "$BERTH_TEST_DIR/watch.out"
    run berth_rpc call plugins.replace '{"id": "echo"}'
    [ "$status" -eq 0 ]
    new=$(jq -r .pid <<<"$output")
    berth_wait_for 5 grep -q "\"pid\":$new" "$BERTH_TEST_DIR/watch.out"
    kill -0 "$BG_PID" # the caller's stream is still open
}

@test "queue_limit bounds the requests waiting for a restarting plugin" {
    export BERTH_CONFIG_EXTRA='{"queue_limit": 2, "restart_backoff_min_ms": 1000}'
    start_echo
    kill -9 "$(berth_plugin_pid echo)"
    berth_wait_for 5 eval '[[ $(plugin_field echo status) == restarting ]]'
    run berth_rpc load echo.echo 5 5
    [ "$status" -eq 1 ]
    [[ $output == *"ok=2 failed=3"*"resource_exhausted=3"* ]]
    [[ $output == *"queue_limit"* ]]
}

@test "streams pass through the core in both directions with flow control" {
    start_echo
    run berth_rpc call echo.stream '{"n": 50, "size": 100000}'
    [ "$status" -eq 0 ]
    [[ $(grep -c '^stream: ' <<<"$output") == 50 ]]
    [[ ${lines[-1]} == '{"n":50}' ]]
    run /usr/bin/python3 "$RAW" "$BERTH_SOCK" upload 64
    [ "$status" -eq 0 ]
    [[ $output == "chunks=64 bytes=4194304 acked=64" ]]
}

@test "events: core /plugins/* events and events published by plugins reach subscribers" {
    start_echo
    berth_rpc call events.subscribe '{"filters": ["/plugins/", "/test/"]}' >"$BERTH_TEST_DIR/events.out" 2>&1 &
    BG_PID=$!
    # Subscribed once an event published now arrives.
    berth_wait_for 10 eval 'berth_rpc call echo.publish "{\"topic\": \"/test/ready\"}" && grep -q "/test/ready" "$BERTH_TEST_DIR/events.out"'
    kill -9 "$(berth_plugin_pid echo)"
    berth_wait_for 5 berth_rpc call echo.pid
    run berth_rpc call echo.publish '{"topic": "/test/hello", "event": {"k": "v"}, "namespace": "ns2"}'
    [ "$status" -eq 0 ]
    berth_rpc call echo.publish '{"topic": "/other/ignored"}'
    berth_wait_for 5 grep -q '"/test/hello"' "$BERTH_TEST_DIR/events.out"
    cat "$BERTH_TEST_DIR/events.out"
    grep -q '"topic":"/plugins/exit"' "$BERTH_TEST_DIR/events.out"
    grep -q '"topic":"/plugins/restart"' "$BERTH_TEST_DIR/events.out"
    grep -q '"topic":"/plugins/start"' "$BERTH_TEST_DIR/events.out"
    line=$(grep '"/test/hello"' "$BERTH_TEST_DIR/events.out")
    [[ $(sed 's/^stream: //' <<<"$line" | jq -r '.publisher + " " + .namespace + " " + .event.k') == "echo ns2 v" ]]
    [[ $(sed 's/^stream: //' <<<"$line" | jq -r .boot_id) == "$(berth_rpc call version | jq -r .boot_id)" ]]
    ! grep -q '/other/ignored' "$BERTH_TEST_DIR/events.out" || false
}

@test "sd_notify READY=1 is sent once all plugins are ready" {
    EXTRA_DIR=$(mktemp -d /tmp/berth-e2e-notify.XXXXXX)
    /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(20)
with open(sys.argv[2], "w") as f:
    while True:
        m = s.recv(4096).decode()
        f.write(m + "\n"); f.flush()
        if "READY=1" in m: break
' "$EXTRA_DIR/notify.sock" "$EXTRA_DIR/notify.out" &
    BG_PID=$!
    berth_wait_for 5 test -S "$EXTRA_DIR/notify.sock"
    export NOTIFY_SOCKET=$EXTRA_DIR/notify.sock
    start_echo
    wait "$BG_PID"
    BG_PID=
    unset NOTIFY_SOCKET
    grep -q "READY=1" "$EXTRA_DIR/notify.out"
    grep -q "all plugins ready" "$EXTRA_DIR/notify.out"
    # Plugins do not inherit NOTIFY_SOCKET.
    ! tr '\0' '\n' <"/proc/$(berth_plugin_pid echo)/environ" | grep -q NOTIFY_SOCKET || false
}

@test "SIGTERM stops plugins and the daemon within 10 s and removes its sockets" {
    start_echo
    echo_pid=$(berth_plugin_pid echo)
    py_pid=$(berth_plugin_pid pyecho)
    # A plugin that will not answer plugin.shutdown is killed in time.
    berth_rpc call echo.freeze '{"ms": 60000}'
    SECONDS=0
    kill -TERM "$BERTH_PID"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$BERTH_PID" 2>/dev/null || break
        sleep 0.1
    done
    ! kill -0 "$BERTH_PID" 2>/dev/null || false
    ((SECONDS <= 10))
    ! kill -0 "$echo_pid" 2>/dev/null || false
    ! kill -0 "$py_pid" 2>/dev/null || false
    [[ ! -e $BERTH_SOCK ]]
    [[ ! -e $BERTH_STATE/plugins.sock ]]
    grep -q 'msg="berthd stopped"' "$BERTH_LOG"
}

@test "config errors name the key; a second berthd on the same state is refused" {
    berth_require_root
    EXTRA_DIR=$(mktemp -d /tmp/berth-e2e-cfg.XXXXXX)
    echo '{"root": "/tmp/x", "plugins": {"echo": {"enable": true}}}' >"$EXTRA_DIR/bad.json"
    run "$BERTH_BIN/berthd" --config "$EXTRA_DIR/bad.json"
    [ "$status" -eq 1 ]
    [[ $output == *"config key plugins.echo.enable: unknown key"* ]]
    echo '{"bogus": 1}' >"$EXTRA_DIR/bad2.json"
    run "$BERTH_BIN/berthd" --config "$EXTRA_DIR/bad2.json"
    [ "$status" -eq 1 ]
    [[ $output == *'unknown key "bogus"'* ]]
    run "$BERTH_BIN/berthd" config default
    [ "$status" -eq 0 ]
    for p in content metadata snapshot-overlay transfer runtime-runc gc; do
        jq -e ".plugins[\"$p\"].config | type == \"object\"" <<<"$output" >/dev/null
    done
    run "$BERTH_BIN/berthd" --state /tmp/somewhere --log-level debug config dump
    [[ $(jq -r .address <<<"$output") == /tmp/somewhere/berth.sock ]]
    [[ $(jq -r .log_level <<<"$output") == debug ]]
    start_echo
    run "$BERTH_BIN/berthd" --config "$BERTH_CONFIG"
    [ "$status" -eq 1 ]
    [[ $output == *"another berthd is running with this state directory"* ]]
    # The running daemon was not disturbed.
    berth_rpc call version
    [[ -S $BERTH_SOCK ]]
}

@test "an external plugin connects on plugins.sock and may only register its declared prefixes" {
    export BERTH_CONFIG_EXTRA='{"external_plugins": {"ext": {"methods": ["ext."]}, "bad": {"methods": ["other."]}}}'
    start_echo
    /usr/bin/python3 "$PYECHO" --id ext --socket "$BERTH_STATE/plugins.sock" >"$BERTH_TEST_DIR/ext.log" 2>&1 &
    BG_PID=$!
    berth_wait_for 5 berth_rpc call ext.echo
    run berth_rpc call ext.echo '{"data": 3}'
    [[ $(jq -r .data <<<"$output") == 3 ]]
    [[ $(plugin_field ext status) == ok ]]
    [[ $(plugin_field ext external) == true ]]
    # An undeclared id is refused.
    run /usr/bin/python3 "$PYECHO" --id stranger --socket "$BERTH_STATE/plugins.sock"
    [ "$status" -eq 1 ]
    [[ $output == *"not declared in external_plugins"* ]]
    # A declared id registering outside its prefixes is refused.
    run /usr/bin/python3 "$PYECHO" --id bad --socket "$BERTH_STATE/plugins.sock"
    [ "$status" -eq 1 ]
    [[ $output == *"may only register the method prefixes declared in external_plugins.bad.methods"* ]]
    # Disconnect: its methods wait for it (deadline) instead of failing at once.
    kill "$BG_PID"
    wait "$BG_PID" || true
    BG_PID=
    run berth_rpc call ext.echo '{"timeout_ms": 200}'
    [[ $output == *deadline_exceeded* ]]
}

@test "SIGHUP reloads the log level, names what needs a restart, and refuses a broken config" {
    export BERTH_CONFIG_EXTRA='{"log_level": "info"}'
    start_echo
    jq '.log_level = "debug" | .request_timeout_ms = 12345' "$BERTH_CONFIG" >"$BERTH_CONFIG.new"
    mv "$BERTH_CONFIG.new" "$BERTH_CONFIG"
    kill -HUP "$BERTH_PID"
    berth_wait_for 5 grep -q 'msg="SIGHUP: config reloaded"' "$BERTH_LOG"
    grep -q 'msg="SIGHUP: applied" key=log_level value=debug' "$BERTH_LOG"
    grep -q 'msg="SIGHUP: changed key needs a berthd restart to apply" key=request_timeout_ms' "$BERTH_LOG"
    # debug lines now appear (core events are logged at debug)
    berth_rpc call plugins.restart '{"id": "echo"}' >/dev/null
    berth_wait_for 5 grep -q 'level=debug component=berthd msg="event"' "$BERTH_LOG"
    # a broken file is refused, the daemon keeps serving
    echo '{"log_level": "loud"' >"$BERTH_CONFIG"
    kill -HUP "$BERTH_PID"
    berth_wait_for 5 grep -q 'msg="SIGHUP: config not reloaded, keeping the running one"' "$BERTH_LOG"
    berth_rpc call version >/dev/null
}
