#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# berthd under systemd. Where systemd is PID 1, berthd runs as a transient
# service (systemd-run) with the [Service] settings of packaging/berth.service.
# Everywhere, what does not need a running systemd is checked: the generated
# unit passes `systemd-analyze verify` and has the settings operators rely on,
# and berthd speaks the sd_notify protocol: READY=1 (with STATUS=) reaches
# $NOTIFY_SOCKET only once every plugin is ready — or after ready_timeout_ms,
# naming the plugins that are not — and STOPPING=1 on shutdown.

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export BERTH_SRC=${BERTH_SRC:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
    export BUILD=$(cd "$BERTH_BIN/.." && pwd)
    export UNIT=$BUILD/packaging/berth.service
}

setup() {
    SD_TMP=$(mktemp -d /tmp/berth-sd.XXXXXX)
    chmod 0711 "$SD_TMP"
    LISTENER_PID=
    SD_UNIT=
}

teardown() {
    if [[ -n $SD_UNIT ]]; then
        systemctl stop "$SD_UNIT" >/dev/null 2>&1 || true
        systemctl reset-failed "$SD_UNIT" >/dev/null 2>&1 || true
    fi
    [[ -n $LISTENER_PID ]] && kill "$LISTENER_PID" 2>/dev/null || true
    [[ -n $LISTENER_PID ]] && wait "$LISTENER_PID" 2>/dev/null || true
    # Stops berthd, kills leftovers, unmounts and removes $BERTH_TEST_DIR.
    if declare -F berth_stop_daemon >/dev/null; then
        berth_stop_daemon
    fi
    rm -rf "$SD_TMP"
}

# Starts berthd with NOTIFY_SOCKET set, in $SD_TMP (known in advance, so the
# listener can reach the daemon the moment READY=1 arrives). The shared
# helper's berth_stop_daemon cleans up (BERTH_TEST_DIR=$SD_TMP).
#   start_berthd [PLUGINS-JSON [EXTRA-CONFIG-JSON]]
start_berthd() {
    # shellcheck source=lib/daemon.bash
    source "$BATS_TEST_DIRNAME/lib/daemon.bash"
    berth_require_root
    [[ -x $BERTH_BIN/berthd ]] || skip "berthd not built"
    command -v jq >/dev/null || skip "jq not installed"
    export BERTH_TEST_DIR=$SD_TMP BERTH_LOG=$SD_TMP/berthd.log
    export BERTH_SOCK=$SD_TMP/state/berth.sock
    jq -n --arg root "$SD_TMP/root" --arg state "$SD_TMP/state" --argjson plugins "${1:-"{}"}" \
        --argjson extra "${2:-"{}"}" \
        '{root: $root, state: $state, log_level: "debug", plugins: $plugins} * $extra' \
        >"$SD_TMP/config.json"
    NOTIFY_SOCKET=$SD_TMP/notify.sock "$BERTH_BIN/berthd" --config "$SD_TMP/config.json" \
        >"$BERTH_LOG" 2>&1 &
    BERTH_PID=$!
    export BERTH_PID
}

# Epoch seconds (float) of the last log line matching $1.
log_time() {
    grep -F -- "$1" "$BERTH_LOG" | tail -1 | sed -n 's/^time=\([^ ]*\)Z .*/\1/p' |
        python3 -c 'import sys, datetime; s = sys.stdin.read().strip(); print(datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc).timestamp() if s else "")'
}

systemd_is_pid1() {
    [[ -d /run/systemd/system ]] && [[ $(cat /proc/1/comm 2>/dev/null) == systemd ]]
}

# The unit as built, with ExecStart pointing at this build's berthd (the
# configured path, e.g. /usr/local/bin/berthd, need not exist here).
unit_for_build() {
    sed "s|^ExecStart=.*|ExecStart=$BERTH_BIN/berthd|" "$UNIT" >"$SD_TMP/berth.service"
}

# Starts a listener on a unix datagram socket at $SD_TMP/notify.sock that
# writes one JSON line per message to $SD_TMP/notify.log. On READY=1 it
# immediately records `berth plugins ls --format json` (the state of the
# plugins at the moment berthd said it was ready).
start_listener() {
    command -v python3 >/dev/null || skip "python3 not installed"
    python3 - "$SD_TMP/notify.sock" "$SD_TMP/notify.log" "$BERTH_BIN/berth" "$1" <<'EOF' &
import json, socket, subprocess, sys, time
path, log, berth, address = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(path + ".bound", "w"):
    pass
with open(log, "a") as f:
    while True:
        msg = s.recv(65536).decode("utf-8", "replace")
        rec = {"t": time.time(), "msg": msg}
        if "READY=1" in msg.split("\n"):
            r = subprocess.run([berth, "-a", address, "--timeout", "5s", "plugins", "ls",
                                "--format", "json"], capture_output=True, text=True)
            rec["plugins_rc"] = r.returncode
            rec["plugins"] = r.stdout
        f.write(json.dumps(rec) + "\n")
        f.flush()
EOF
    LISTENER_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -e $SD_TMP/notify.sock.bound ]] && return 0
        sleep 0.05
    done
    echo "the notify listener did not start"
    return 1
}

# Waits until notify.log has a message containing $1.
wait_notify() {
    local secs=$2 i
    for ((i = 0; i < secs * 20; i++)); do
        [[ -f $SD_TMP/notify.log ]] && grep -qF -- "$1" "$SD_TMP/notify.log" && return 0
        sleep 0.05
    done
    echo "no \"$1\" on NOTIFY_SOCKET within $secs s; got:"
    cat "$SD_TMP/notify.log" 2>/dev/null
    return 1
}

@test "the generated unit passes systemd-analyze verify" {
    [[ -f $UNIT ]] || skip "no $UNIT (configure the build first)"
    command -v systemd-analyze >/dev/null || skip "systemd-analyze not installed"
    [[ -x $BERTH_BIN/berthd ]] || skip "berthd not built"
    unit_for_build
    run systemd-analyze verify "$SD_TMP/berth.service"
    echo "$output"
    [ "$status" -eq 0 ]
    # Unknown keys and bad values are only warnings: there must be none.
    [ -z "$output" ]
    # The check can fail: a misspelt key is reported.
    echo "KillMod=process" >>"$SD_TMP/berth.service"
    run systemd-analyze verify "$SD_TMP/berth.service"
    [[ $output == *"Unknown key"*"KillMod"* ]]
}

@test "the unit has the settings operators rely on" {
    [[ -f $UNIT ]] || skip "no $UNIT (configure the build first)"
    # Service section as key=value lines.
    svc=$(sed -n '/^\[Service\]/,/^\[/p' "$UNIT")
    for kv in Type=notify Delegate=yes KillMode=process Restart=always LimitNOFILE=infinity \
        OOMScoreAdjust=-999; do
        grep -qx -- "$kv" <<<"$svc" || { echo "missing $kv in [Service]"; false; }
    done
    grep -q '^ExecReload=.*kill -HUP \$MAINPID' <<<"$svc"
    grep -q '^ExecStart=/.*/berthd' <<<"$svc"
    grep -qx 'WantedBy=multi-user.target' "$UNIT"
}

@test "berthd sends READY=1 to NOTIFY_SOCKET once every plugin is ready, STOPPING=1 on stop" {
    start_listener "$SD_TMP/state/berth.sock" || false
    # All the plugins of the default config, as the service runs them.
    start_berthd
    wait_notify "READY=1" 60 || { berth_dump_log; false; }
    ready=$(grep -F 'READY=1' "$SD_TMP/notify.log" | head -1)
    echo "$ready"
    jq -e '.msg | contains("STATUS=berthd ready; all plugins ready")' <<<"$ready"
    # When it arrived every configured plugin was registered and ok...
    jq -e '.plugins_rc == 0' <<<"$ready"
    plugins=$(jq -r .plugins <<<"$ready")
    echo "$plugins" | jq -c '.[] | {id, status}'
    [[ $(jq length <<<"$plugins") -ge 6 ]]
    jq -e 'all(.[]; .status == "ok")' <<<"$plugins"
    # ...and it came after the last plugin said it was ready (log times).
    [ "$(grep -c 'msg="plugin ready"' "$BERTH_LOG")" -ge 6 ]
    last_ready=$(log_time 'msg="plugin ready"')
    got=$(jq -r .t <<<"$ready")
    echo "last plugin ready at $last_ready, READY=1 received at $got"
    python3 -c "import sys; sys.exit(0 if $got >= $last_ready else 1)"
    # Stopping: STOPPING=1, and READY=1 was sent only once.
    kill -TERM "$BERTH_PID"
    wait_notify "STOPPING=1" 15
    [ "$(grep -cF 'READY=1' "$SD_TMP/notify.log")" -eq 1 ]
}

@test "with a plugin that never becomes ready, READY=1 comes after ready_timeout_ms and names it" {
    [[ -x $BERTH_BIN/berth-echo ]] || skip "berth-echo not built"
    start_listener "$SD_TMP/state/berth.sock" || false
    # "stuck" never registers (a shell that sleeps); echo does.
    t0=$(python3 -c 'import time; print(time.time())')
    start_berthd '{"content": {"enabled": false}, "metadata": {"enabled": false},
        "snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
        "runtime-runc": {"enabled": false}, "gc": {"enabled": false},
        "echo": {}, "stuck": {"path": "/bin/sh", "args": ["-c", "exec sleep 30"]}}' \
        '{"ready_timeout_ms": 1500, "shutdown_timeout_ms": 1000}'
    wait_notify "READY=1" 20 || { berth_dump_log; false; }
    ready=$(grep -F 'READY=1' "$SD_TMP/notify.log" | head -1)
    echo "$ready"
    jq -e '.msg | contains("STATUS=berthd ready; plugins not ready: stuck")' <<<"$ready"
    # Not before the timeout (1.5 s after berthd started).
    jq -e --argjson t0 "$t0" '.t - $t0 >= 1.4' <<<"$ready"
    grep -q 'plugins not ready in time; serving anyway' "$BERTH_LOG"
}

@test "berthd runs as a systemd service (systemd-run with the unit's settings)" {
    systemd_is_pid1 || skip "systemd is not PID 1 here (PID 1 is $(cat /proc/1/comm 2>/dev/null)); see docs/operations.md for what was verified instead"
    [[ $(id -u) == 0 ]] || skip "needs root"
    [[ -f $UNIT && -x $BERTH_BIN/berthd ]] || skip "berthd or the unit not built"
    command -v jq >/dev/null || skip "jq not installed"
    # The unit's [Service] settings, except the commands, as -p properties.
    props=()
    while IFS= read -r line; do
        case $line in
        '' | '#'* | '['* | Exec*) ;;
        *) props+=(-p "$line") ;;
        esac
    done < <(sed -n '/^\[Service\]/,/^\[/p' "$UNIT")
    jq -n --arg r "$SD_TMP/root" --arg s "$SD_TMP/state" '{root: $r, state: $s}' >"$SD_TMP/config.json"
    SD_UNIT=berth-e2e-$$
    # systemd-run returns once the start job is done: for Type=notify, at READY=1.
    run timeout 90 systemd-run --unit "$SD_UNIT" "${props[@]}" -p TimeoutStartSec=60 \
        "$BERTH_BIN/berthd" --config "$SD_TMP/config.json"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(systemctl is-active "$SD_UNIT")" = active ]
    systemctl show -p StatusText "$SD_UNIT" | grep -q 'all plugins ready'
    run "$BERTH_BIN/berth" -a "$SD_TMP/state/berth.sock" plugins ls --format json
    [ "$status" -eq 0 ]
    jq -e 'all(.[]; .status == "ok")' <<<"$output"
    systemctl stop "$SD_UNIT"
    [ "$(systemctl is-active "$SD_UNIT")" != active ]
}
