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
    # The shared daemon of the ctr-compatibility tests (need_stack).
    if [[ -f $BERTH_TEST_TMP/stack.env ]]; then
        # shellcheck source=lib/daemon.bash
        source "$BATS_TEST_DIRNAME/lib/daemon.bash"
        read -r BERTH_TEST_DIR BERTH_PID <"$BERTH_TEST_TMP/stack.env"
        export BERTH_TEST_DIR BERTH_PID
        berth_stop_daemon
    fi
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
    if [[ -n ${STACK_USED:-} ]]; then
        [[ -n ${BATS_TEST_COMPLETED:-} ]] || berth_dump_log 40
        STACK_USED=
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
    local subs
    subs=$(berth_subscribers)
    $BERTH events /plugins/ >"$BERTH_TEST_TMP/events.out" 2>"$BERTH_TEST_TMP/events.err" &
    EVENTS_PID=$!
    berth_wait_subscribed "$subs"
    $BERTH plugins restart "$id"
    for _ in $(seq 200); do
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
    local subs
    subs=$(berth_subscribers)
    $BERTH events --format json >"$BERTH_TEST_TMP/events.json" &
    EVENTS_PID=$!
    berth_wait_subscribed "$subs"
    $BERTH plugins restart "$id"
    for _ in $(seq 200); do
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

# --- ctr compatibility: images, content, snapshots, leases, namespaces -------
# Layouts checked against ctr 1.6 (/work/shared/reference/ctr-1.6-outputs.txt
# and a private containerd): tabwriter columns padded to the widest cell + 1,
# progress.Bytes sizes ("727.0 B") in images and snapshots, go-units sizes and
# tab padding in content ls/active.

# Pads cells like ctr's tabwriter: arguments are "TEXT:WIDTH".
pad() {
    local out= c
    for c in "$@"; do
        out+=$(printf '%-*s' "${c##*:}" "${c%:*}")
    done
    printf '%s' "$out"
}

# A tiny OCI image tar (one gzip layer, this host's platform) named by the
# ref annotation "1"; deterministic, needs only python3.
make_tiny_image() {
    python3 - "$1" <<'PY'
import gzip, hashlib, io, json, platform, sys, tarfile
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
def tar_bytes(files):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            t.addfile(ti, io.BytesIO(data))
    return b.getvalue()
sha = lambda d: "sha256:" + hashlib.sha256(d).hexdigest()
layer = tar_bytes([("hello.txt", b"hello from berth\n")])
gz = gzip.compress(layer, mtime=0)
config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
manifest = json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha(gz), "size": len(gz)}]}).encode()
index = json.dumps({"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
    "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}).encode()
files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
files += [("blobs/sha256/" + sha(d)[7:], d) for d in (gz, config, manifest)]
open(sys.argv[1], "wb").write(tar_bytes(files))
PY
}

# One berthd with the storage plugins (no runtime) holding docker.io/cli/tiny:1,
# shared by the tests below: started by the first, stopped in teardown_file.
need_stack() {
    # shellcheck source=lib/daemon.bash
    source "$BATS_TEST_DIRNAME/lib/daemon.bash"
    local p
    for p in berth-content berth-metadata berth-snapshot-overlay berth-transfer; do
        [[ -x $BERTH_BIN/$p ]] || skip "$p not built"
    done
    command -v python3 >/dev/null || skip "python3 not installed"
    STACK_USED=1
    if [[ -f $BERTH_TEST_TMP/stack.env ]]; then
        read -r BERTH_TEST_DIR BERTH_PID <"$BERTH_TEST_TMP/stack.env"
        export BERTH_TEST_DIR BERTH_PID BERTH_SOCK=$BERTH_TEST_DIR/state/berth.sock
        export BERTH_LOG=$BERTH_TEST_DIR/berthd.log BERTH="$BERTH_BIN/berth -a $BERTH_TEST_DIR/state/berth.sock"
        return 0
    fi
    berth_start_daemon '{"runtime-runc": {"enabled": false}, "gc": {"enabled": false}}' 3>&- ||
        { berth_stop_daemon; false; }
    echo "$BERTH_TEST_DIR $BERTH_PID" >"$BERTH_TEST_TMP/stack.env"
    make_tiny_image "$BERTH_TEST_TMP/tiny.tar"
    run berth images import --base-name cli/tiny "$BERTH_TEST_TMP/tiny.tar"
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    # Like ctr: one line per image.
    [[ $output =~ ^unpacking\ docker.io/cli/tiny:1\ \(sha256:[0-9a-f]{64}\)\.\.\.done$ ]]
}

@test "ctr aliases, usage errors and flag errors (no daemon needed)" {
    run "$CLI" images del --help
    [ "$status" -eq 0 ]
    [[ $output == *"Aliases: remove, rm, delete, del"* ]]
    for g in i image images; do
        run "$CLI" "$g" ls --help
        [[ ${lines[0]} == "Usage: berth images list [-q] [--format json] [FILTER...]" ]]
    done
    run "$CLI" snapshot mount --help
    [[ ${lines[0]} == "Usage: berth snapshots mounts TARGET KEY" ]]
    [[ $output == *"Aliases: mounts, m, mount"* ]]
    run "$CLI" ns ls --help
    [[ ${lines[0]} == "Usage: berth namespaces list [-q] [--format json]" ]]
    run "$CLI" namespace c --help
    [[ ${lines[0]} == "Usage: berth namespaces create NAME [KEY=VALUE...]" ]]
    run "$CLI" leases del --help
    [[ ${lines[0]} == "Usage: berth leases remove ID... [--sync]" ]]
    run "$CLI" content fetch --help
    [[ ${lines[0]} == "Usage: berth content fetch REF [pull options]" ]]
    run "$CLI" snapshots usage --help
    [[ ${lines[0]} == "Usage: berth snapshots usage [-b] [--format json] [KEY...]" ]]
    # Missing arguments are reported before connecting: exit 1, what is missing.
    run "$CLI" images pull
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: `berth images pull` needs an image REF to pull (e.g. docker.io/library/busybox:latest); run `berth images pull --help`' ]
    run "$CLI" images tag busybox
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: `berth images tag` needs the SRC image and at least one DST name; run `berth images tag --help`' ]
    run "$CLI" images rm
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: `berth images rm` needs one or more image REFs (see `berth images ls -q`)' ]
    run "$CLI" images label
    [ "$status" -eq 1 ]
    [[ $output == 'berth: `berth images label` needs an image REF'* ]]
    run "$CLI" content get
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: `berth content get` needs exactly one digest (see `berth content ls -q`)' ]
    run "$CLI" images fetch --frob x
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: unknown flag --frob for `berth images fetch`; run `berth images fetch --help`' ]
    # Each snapshot command takes only its own flags.
    run "$CLI" snapshots ls --target /mnt
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: unknown flag --target for `berth snapshots ls`; run `berth snapshots ls --help`' ]
    run "$CLI" snapshots rm -q x
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: unknown flag --quiet for `berth snapshots rm`; run `berth snapshots rm --help`' ]
    run "$CLI" events 'foo==bar'
    [ "$status" -eq 1 ]
    [[ $output == 'berth: unsupported filter "foo==bar": `berth events` takes topic prefixes'* ]]
    run "$CLI" gc --format yaml
    [ "$status" -eq 1 ]
    [ "$output" = "berth: unknown --format yaml: use table or json" ]
    run "$CLI" info --format table
    [ "$status" -eq 1 ]
    [ "$output" = 'berth: `berth info` prints JSON only: use --format json or no --format' ]
}

@test "images ls and check: ctr's columns and sizes, -q, filters, one JSON array" {
    need_stack
    local name=docker.io/cli/tiny:1 json dg size plat sz wn ws wp tot st
    json=$(berth images ls --format json)
    jq -e 'type == "array" and length == 1 and (.[0] | has("name") and has("labels") and
        has("created_at") and has("updated_at") and (.target | has("media_type") and
        has("digest") and has("size")) and (.platforms | length == 1) and has("image_size"))' <<<"$json"
    dg=$(jq -r '.[0].target.digest' <<<"$json")
    size=$(jq -r '.[0].image_size' <<<"$json")
    plat=$(jq -r '.[0].platforms[0]' <<<"$json")
    [ "$size" -lt 1024 ]
    sz="$size.0 B" # progress.Bytes, as ctr prints it
    wn=$((${#name} + 1)) ws=$((${#sz} + 1)) wp=$((${#plat} > 9 ? ${#plat} + 1 : 10))
    run berth images ls
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 2 ]
    [ "${lines[0]}" = "$(pad "REF:$wn" TYPE:43 DIGEST:72 "SIZE:$ws" "PLATFORMS:$wp" LABELS:7)" ]
    [ "${lines[1]}" = "$(pad "$name:$wn" application/vnd.oci.image.manifest.v1+json:43 "$dg:72" \
        "$sz:$ws" "$plat:$wp" -:7)" ]
    run berth images ls -q
    [ "$output" = "$name" ]
    # ctr's filters.
    run berth images ls -q 'name~=tiny'
    [ "$output" = "$name" ]
    run berth images ls -q "target.digest==$dg"
    [ "$output" = "$name" ]
    run berth images ls 'name==no/such:1'
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 1 ]
    run berth images ls --format json 'name==no/such:1'
    [ "$output" = "[]" ]
    # check: the header's UNPACKED cell is padded, the rows' is not (no tab after it in ctr).
    tot=$(berth images check --format json | jq -r '.[0].total_size')
    st="$tot.0 B/$tot.0 B"
    run berth images check
    [ "$status" -eq 0 ]
    [ "${lines[0]}" = "$(pad "REF:$wn" TYPE:43 DIGEST:72 STATUS:15 "SIZE:$((${#st} + 1))" UNPACKED:9)" ]
    [ "${lines[1]}" = "$(pad "$name:$wn" application/vnd.oci.image.manifest.v1+json:43 "$dg:72" \
        "complete (2/2):15" "$st:$((${#st} + 1))")true" ]
    # -q: only the images ready to run, like ctr.
    run berth images check -q
    [ "$output" = "$name" ]
    # Several REFs: still one JSON document.
    run berth images check --format json "$name" cli/tiny:1
    [ "$status" -eq 0 ]
    jq -e 'type == "array" and length == 2 and all(.[]; .status == "complete" and .unpacked)' <<<"$output"
}

@test "images label: KEY=, --replace-all, the resulting labels printed" {
    need_stack
    run berth images label cli/tiny:1 a=b c=d
    [ "$output" = "a=b,c=d" ]
    run berth images label cli/tiny:1
    [ "$output" = "a=b,c=d" ]
    run berth images label -r cli/tiny:1 x=y
    [ "$output" = "x=y" ]
    run berth images ls
    [[ ${lines[1]} =~ \ x=y\ +$ ]]
    run berth images label cli/tiny:1 x=
    [ "$status" -eq 0 ]
    [ "$output" = "" ]
    run berth images label no/such:1 a=b
    [ "$status" -eq 1 ]
    [[ $output == "berth: image docker.io/no/such:1 not found"* ]]
    # import --no-unpack does not claim to unpack.
    run berth -n cli-nounpack images import --no-unpack --base-name cli/tiny "$BERTH_TEST_TMP/tiny.tar"
    [ "$status" -eq 0 ]
    [[ $output =~ ^imported\ docker.io/cli/tiny:1\ \(sha256:[0-9a-f]{64}\)$ ]]
    run berth -n cli-nounpack images check
    [[ ${lines[1]} == *" complete (2/2) "*" false" ]]
    berth -n cli-nounpack images rm cli/tiny:1 >/dev/null
    # shellcheck disable=SC2046
    berth -n cli-nounpack content rm $(berth -n cli-nounpack content ls -q) >/dev/null
    berth namespaces rm cli-nounpack >/dev/null
}

@test "content ls and active: tab-separated like ctr, go-units sizes, -q, JSON" {
    need_stack
    local json
    json=$(berth content ls --format json)
    jq -e 'type == "array" and length == 3 and all(.[]; has("digest") and has("size") and
        has("created_at") and has("updated_at") and has("labels"))' <<<"$json"
    run berth content ls
    [ "$status" -eq 0 ]
    # A 71-character digest fills 9 tab stops; LABELS ends the line unpadded.
    [[ ${lines[0]} == "DIGEST"$'\t\t\t\t\t\t\t\t\t'"SIZE"$'\t'"AGE"$'\t'*"LABELS" ]]
    [ "$(printf '%s\n' "${lines[@]:1}" | cut -f1)" = "$(jq -r '.[].digest' <<<"$json")" ]
    # Blobs under 1000 bytes: "418B" (go-units HumanSize).
    [ "$(printf '%s\n' "${lines[@]:1}" | cut -f2)" = "$(jq -r '.[] | "\(.size)B"' <<<"$json")" ]
    # The layer has no labels: "-".
    printf '%s\n' "${lines[@]:1}" | cut -f4 | grep -qx -- -
    for l in "${lines[@]}"; do
        [[ $l != *[[:space:]] ]]
    done
    run berth content ls -q
    [ "$output" = "$(jq -r '.[].digest' <<<"$json")" ]
    run berth content active
    [ "$status" -eq 0 ]
    [ "$output" = $'REF\tSIZE\tAGE\t' ]
    run berth content active -q
    [ -z "$output" ]
    run berth content active --format json
    [ "$output" = "[]" ]
    # Mistakes.
    run berth content get sha256:0000000000000000000000000000000000000000000000000000000000000000
    [ "$status" -eq 1 ]
    [[ $output == "berth: content sha256:0000000000000000000000000000000000000000000000000000000000000000 not found"* ]]
    run berth content get xyz
    [ "$status" -eq 1 ]
    [[ $output == 'berth: invalid digest "xyz"'* ]]
    # Like ctr: removing what is not there is not an error.
    run berth content rm sha256:0000000000000000000000000000000000000000000000000000000000000000
    [ "$status" -eq 0 ]
    [ -z "$output" ]
}

@test "snapshots: ls columns and -q, info like ctr, usage sizes, -b and JSON" {
    need_stack
    local json key
    json=$(berth snapshots ls --format json)
    jq -e 'type == "array" and length == 1 and (.[0] | has("name") and .parent == "" and
        .kind == "committed" and has("labels") and has("created_at") and has("updated_at"))' <<<"$json"
    key=$(jq -r '.[0].name' <<<"$json")
    run berth snapshots ls
    [ "${lines[0]}" = "$(pad KEY:72 PARENT:7 KIND:10)" ]
    [ "${lines[1]}" = "$(pad "$key:72" :7 Committed:10)" ]
    run berth snapshot list -q
    [ "$output" = "$key" ]
    run berth snapshots ls -q 'kind==active'
    [ -z "$output" ]
    # Completion offers the keys (from `snapshots ls -q`).
    read -ra words <<<"$BERTH"
    run complete_words "${words[@]:1}" snapshots info ""
    [ "$output" = "$key" ]
    # info: ctr's JSON (Kind, Name, Labels, Created/Updated in RFC3339Nano).
    berth snapshots label "$key" team=cli >/dev/null
    run berth snapshots info "$key"
    [ "$status" -eq 0 ]
    [ "${lines[1]}" = '    "Kind": "Committed",' ]
    jq -e --arg k "$key" '.Name == $k and .Labels.team == "cli" and (has("Parent") | not) and
        (.Created | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$"))' <<<"$output"
    run berth snapshots label "$key" team=
    [ "$output" = "" ]
    run berth snapshots info no-such-key
    [ "$status" -eq 1 ]
    [[ $output == "berth: snapshot no-such-key not found"* ]]
    # usage: progress.Bytes sizes, -b bytes, JSON.
    run berth snapshots usage
    [[ ${lines[0]} =~ ^KEY\ +SIZE\ +INODES\ $ ]]
    [[ ${lines[1]} =~ ^sha256:[0-9a-f]{64}\ [0-9]+\.[0-9]\ (B|KiB|MiB)\ +[0-9]+\ +$ ]]
    run berth snapshots usage -b "$key"
    [[ ${lines[1]} =~ ^sha256:[0-9a-f]{64}\ [0-9]+\ +[0-9]+\ +$ ]]
    run berth snapshots usage --format json "$key"
    jq -e --arg k "$key" 'length == 1 and .[0].key == $k and (.[0].size | type == "number") and
        .[0].inodes >= 1' <<<"$output"
    # An unknown key: the error, and no empty table.
    run berth snapshots usage no-such-key
    [ "$status" -eq 1 ]
    [[ $output == "berth: usage of no-such-key: "*"not found"* ]]
    [[ $output != *KEY* ]]
}

@test "leases and namespaces: ctr's columns, -q, filters, JSON fields, exit codes" {
    need_stack
    run berth leases create --id cli-lease team=cli
    [ "$output" = cli-lease ]
    run berth leases ls
    [[ ${lines[0]} =~ ^ID\ +CREATED\ AT\ +LABELS\ +$ ]]
    [[ $output =~ cli-lease\ [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z\ berth\.io/gc\.expire=[^,\ ]+,team=cli\  ]]
    run berth leases ls -q 'id==cli-lease'
    [ "$output" = cli-lease ]
    berth leases ls --format json | jq -e '.[] | select(.id == "cli-lease") |
        .labels.team == "cli" and has("created_at") and has("expire")'
    run berth leases rm cli-lease
    [ "$output" = cli-lease ]
    run berth leases rm cli-lease
    [ "$status" -eq 1 ]
    [[ $output == "berth: unable to delete lease cli-lease: "*"not found"* ]]

    run berth namespaces create cli-ns team=cli
    [ "$status" -eq 0 ]
    run berth ns ls
    [[ ${lines[0]} =~ ^NAME\ +LABELS\ +$ ]]
    [[ $output =~ $'\n'cli-ns\ +team=cli\ ($'\n'|$) ]]
    [[ $output =~ $'\n'default\ +($'\n'|$) ]]
    run berth namespace list -q
    [[ $output == *cli-ns* && $output == *default* ]]
    berth ns ls --format json | jq -e '.[] | select(.name == "cli-ns") |
        .labels.team == "cli" and has("created_at") and has("updated_at")'
    run berth ns create cli-ns
    [ "$status" -eq 1 ]
    [[ $output == "berth: namespace cli-ns already exists"* ]]
    run berth ns rm cli-ns
    [ "$output" = cli-ns ]
    # Like ctr: an absent namespace counts as removed.
    run berth ns rm cli-ns
    [ "$status" -eq 0 ]
    [ "$output" = cli-ns ]
}
