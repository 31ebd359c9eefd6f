#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# An installed berth: `cmake --install BUILD --prefix TMP` (BERTH_CONFIG_DIR
# pointing into TMP, so /etc is never touched) puts every file in its place
# and writes the default config; the installed berthd, started with that
# config and a temporary root and state, finds its plugins in
# TMP/usr/libexec/berth, all plugins become ok, and (when the runtime and the
# image tools are there) a container runs from an imported busybox image;
# stopping berthd leaves nothing running, and removing the files listed in
# install_manifest.txt leaves no installed file behind. The tests run in
# order and share one installation.

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export BERTH_SRC=${BERTH_SRC:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
    export BUILD=$(cd "$BERTH_BIN/.." && pwd)
    # Short: socket paths under it must fit in 107 bytes.
    INST=$(mktemp -d /tmp/berth-inst.XXXXXX)
    chmod 0711 "$INST"
    export INST
    export P=$INST/usr CFGDIR=$INST/etc/berth
    export ROOTDIR=$INST/root STATEDIR=$INST/state
    export SOCK=$STATEDIR/berth.sock LOG=$INST/berthd.log
    # Whether /etc/berth existed before, to prove the install left it alone.
    if [[ -e /etc/berth/config.json ]]; then
        stat -c %Y /etc/berth/config.json >"$INST/etc-before"
    else
        echo absent >"$INST/etc-before"
    fi
}

# Processes that belong to this installation: their executable or command
# line is under $INST (berthd, plugins, shims and their children).
leftovers() {
    local pid exe
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
        if [[ $exe == "$INST"/* ]] ||
            { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$INST/"; then
            echo "$pid"
        fi
    done
}

teardown_file() {
    local pid
    if [[ -f $INST/berthd.pid ]]; then
        kill -TERM "$(cat "$INST/berthd.pid")" 2>/dev/null || true
        sleep 1
    fi
    for pid in $(leftovers); do kill -KILL "$pid" 2>/dev/null || true; done
    awk -v d="$INST" 'index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$INST"
}

dump_log() {
    [[ -f $LOG ]] && { echo "---- last lines of $LOG"; tail -n 40 "$LOG"; }
    return 0
}

need_root() {
    [[ $(id -u) == 0 ]] || skip "needs root (berthd spawns plugins and mounts filesystems)"
}

need_installed() {
    [[ -x $P/bin/berthd ]] || skip "not installed (the install test failed)"
}

need_running() {
    need_installed
    [[ -f $INST/berthd.pid ]] && kill -0 "$(cat "$INST/berthd.pid")" 2>/dev/null ||
        skip "the installed berthd is not running (an earlier test failed)"
}

ib() {
    "$P/bin/berth" -a "$SOCK" "$@"
}

@test "cmake --install into a temporary prefix puts every file in its place" {
    [[ -x $BERTH_BIN/berthd && -x $BERTH_BIN/berth ]] || skip "berthd/berth not built in $BERTH_BIN"
    command -v cmake >/dev/null || skip "cmake not installed"
    run env BERTH_CONFIG_DIR="$CFGDIR" cmake --install "$BUILD" --prefix "$P"
    echo "$output" | tail -20
    [ "$status" -eq 0 ]
    cp "$BUILD/install_manifest.txt" "$INST/manifest"
    for f in bin/berthd bin/berth; do
        [[ -x $P/$f ]] || { echo "missing $P/$f"; false; }
    done
    # Every plugin the build has goes to libexec/berth, none to bin/.
    for b in "$BERTH_BIN"/berth-{content,metadata,snapshot-overlay,transfer,runtime-runc,shim,gc}; do
        [[ -x $b ]] || continue
        [[ -x $P/libexec/berth/${b##*/} ]] || { echo "missing libexec/berth/${b##*/}"; false; }
        [[ ! -e $P/bin/${b##*/} ]]
    done
    [[ -x $P/libexec/berth/berth-content ]]
    [[ -f $P/lib/systemd/system/berth.service ]]
    grep -q '^Type=notify' "$P/lib/systemd/system/berth.service"
    [[ -f $P/share/bash-completion/completions/berth ]]
    [[ -f $P/share/man/man1/berth.1 && -f $P/share/man/man1/berth-images.1 ]]
    [[ -f $P/share/man/man8/berthd.8 ]]
    [[ -f $P/share/doc/berth/protocol.md && -f $P/share/doc/berth/cli.md ]]
    [[ ! -e $P/share/doc/berth/dev ]]
    MANPATH=$P/share/man man -w berth-plugins | grep -qF "$P/share/man/man1/berth-plugins.1"
    # The manifest lists what was installed (the config is not in it).
    grep -qx "$P/bin/berthd" "$INST/manifest"
    ! grep -q "config.json" "$INST/manifest" || false
}

@test "the default config goes to BERTH_CONFIG_DIR, never to /etc, and is not overwritten" {
    need_installed
    [[ -f $CFGDIR/config.json ]]
    jq -e . "$CFGDIR/config.json" >/dev/null
    # It is exactly `berthd config default`.
    diff <("$P/bin/berthd" config default) "$CFGDIR/config.json"
    # The installed berthd reads it.
    "$P/bin/berthd" --config "$CFGDIR/config.json" config dump | jq -e '.root == "/var/lib/berth"'
    # /etc/berth was left alone.
    if [[ $(cat "$INST/etc-before") == absent ]]; then
        [[ ! -e /etc/berth/config.json ]]
    else
        [[ $(stat -c %Y /etc/berth/config.json) == "$(cat "$INST/etc-before")" ]]
    fi
    # An operator's edit survives a second install.
    jq '.log_level = "debug"' "$CFGDIR/config.json" >"$INST/edited.json"
    cp "$INST/edited.json" "$CFGDIR/config.json"
    run env BERTH_CONFIG_DIR="$CFGDIR" cmake --install "$BUILD" --prefix "$P"
    [ "$status" -eq 0 ]
    [[ $output == *"Keeping existing config: $CFGDIR/config.json"* ]]
    jq -e '.log_level == "debug"' "$CFGDIR/config.json"
}

@test "the installed berthd finds its plugins in PREFIX/libexec/berth" {
    need_installed
    # Without a plugin_dir in the config berthd must look in ../libexec/berth
    # relative to itself (next to itself only in a build tree).
    run "$P/bin/berthd" --config "$CFGDIR/config.json" config dump
    [ "$status" -eq 0 ]
    dir=$(jq -r .plugin_dir <<<"$output")
    [ "$(realpath -m "$dir")" = "$P/libexec/berth" ] || {
        echo "the installed berthd looks for plugins in \"$dir\", not $P/libexec/berth:"
        echo "core/config.c must default plugin_dir to <dir of berthd>/../libexec/berth when it exists"
        false
    }
}

@test "the installed berthd starts with the installed config and every plugin is ok" {
    need_root
    need_installed
    command -v jq >/dev/null || skip "jq not installed"
    "$P/bin/berthd" --config "$CFGDIR/config.json" --root "$ROOTDIR" --state "$STATEDIR" \
        >"$LOG" 2>&1 &
    echo $! >"$INST/berthd.pid"
    for ((i = 0; i < 200; i++)); do
        ib version >/dev/null 2>&1 && break
        sleep 0.05
    done
    ib version || { dump_log; false; }
    # Ready: no plugin left in info's not_ready (45 s at most).
    for ((i = 0; i < 450; i++)); do
        [[ $(ib info 2>/dev/null | jq -r '.not_ready | length') == 0 ]] && break
        sleep 0.1
    done
    run ib plugins ls --format json
    echo "$output" | jq -c '.[] | {id, status, pid}' || echo "$output"
    [ "$status" -eq 0 ]
    [[ $(jq length <<<"$output") -ge 1 ]] || { dump_log; false; }
    jq -e 'all(.[]; .status == "ok")' <<<"$output" >/dev/null || { dump_log; false; }
    # Each plugin process runs the installed binary.
    for pid in $(jq -r '.[].pid' <<<"$output"); do
        exe=$(readlink "/proc/$pid/exe")
        [[ $exe == "$P/libexec/berth/"* ]] || { echo "plugin pid $pid runs $exe"; false; }
    done
    dir=$(ib info | jq -r .config.plugin_dir)
    [ "$(realpath -m "$dir")" = "$P/libexec/berth" ]
}

@test "the installed berth runs a container from an imported image" {
    need_root
    need_running
    [[ -x $P/libexec/berth/berth-runtime-runc && -x $P/libexec/berth/berth-transfer ]] ||
        skip "runtime-runc or transfer not built"
    "$P/bin/berth" run --help >/dev/null 2>&1 || skip "berth run not in this build"
    command -v umoci >/dev/null || skip "umoci not installed (scripts/install-deps.sh)"
    [[ -x /bin/busybox ]] || skip "busybox-static not installed (scripts/install-deps.sh)"
    command -v runc >/dev/null || skip "runc not installed"
    sh "$BERTH_SRC/scripts/mk-busybox-oci.sh" "$INST/img" inst >/dev/null
    run ib images import --base-name inst/busybox "$INST/img/busybox.tar"
    echo "$output"
    [ "$status" -eq 0 ] || { dump_log; false; }
    # The name import gave it (normalized, e.g. docker.io/inst/busybox:inst).
    ref=$(ib images ls -q | grep 'inst/busybox:inst$' | head -1)
    [[ -n $ref ]] || { ib images ls; false; }
    run ib run --rm "$ref" inst-hello echo "hello from an installed berth"
    echo "$output"
    [ "$status" -eq 0 ] || { dump_log; false; }
    [[ $output == *"hello from an installed berth"* ]]
    # --rm: the container is gone.
    for ((i = 0; i < 50; i++)); do
        ib containers ls -q | grep -qx inst-hello || break
        sleep 0.1
    done
    ! ib containers ls -q | grep -qx inst-hello || false
}

@test "stopping the installed berthd leaves nothing running" {
    need_root
    need_running
    pid=$(cat "$INST/berthd.pid")
    kill -TERM "$pid"
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null || { echo "berthd did not stop in 15 s"; dump_log; false; }
    rm -f "$INST/berthd.pid"
    # Plugins exit with the core (shims of --rm containers are gone too).
    for ((i = 0; i < 50; i++)); do
        [[ -z $(leftovers) ]] && break
        sleep 0.1
    done
    left=$(leftovers)
    for p in $left; do echo "left running: $p $(tr '\0' ' ' <"/proc/$p/cmdline")"; done
    [[ -z $left ]]
    grep -q "berthd stopped" "$LOG"
    [[ ! -S $SOCK ]] || ! "$P/bin/berth" -a "$SOCK" --connect-timeout 200ms version >/dev/null 2>&1
}

@test "uninstall: removing the files in install_manifest.txt leaves none behind" {
    need_installed
    [[ -s $INST/manifest ]]
    # As docs/operations.md says (the manifest has no final newline: xargs,
    # not `while read`, sees its last line).
    xargs -d '\n' rm -f -- <"$INST/manifest"
    # Every installed file was in the manifest: nothing but empty folders remains.
    run find "$P" -not -type d
    echo "$output"
    [ -z "$output" ]
    # The config is the operator's: kept, as documented in docs/operations.md.
    [[ -f $CFGDIR/config.json ]]
}
