#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# The CLI's documentation is generated from its --help texts (berth
# __gen-docs): every command's help works without a daemon, the committed
# docs/cli.md is exactly what the binary prints (so it cannot drift), the
# manual pages the build wrote are current and render without warnings, and
# `berth --help` has examples. Needs no daemon and no root.

bats_require_minimum_version 1.5.0

setup_file() {
    export BERTH_BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    export BERTH_SRC=${BERTH_SRC:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
    export CLI=$BERTH_BIN/berth
    DOCS_TMP=$(mktemp -d /tmp/berth-docs-e2e.XXXXXX)
    export DOCS_TMP
}

teardown_file() {
    rm -rf "$DOCS_TMP"
}

setup() {
    [[ -x $CLI ]] || skip "berth not built (looked in $BERTH_BIN)"
    # Never talk to a system daemon by accident.
    export BERTH_ADDRESS=$DOCS_TMP/absent.sock
    unset BERTH_NAMESPACE SOURCE_DATE_EPOCH
}

teardown() {
    if declare -F berth_stop_daemon >/dev/null; then
        berth_stop_daemon
    fi
}

# Generates the docs once per file (strict mode) into $DOCS_TMP/gen.
gen() {
    if [[ ! -f $DOCS_TMP/gen/ok ]]; then
        mkdir -p "$DOCS_TMP/gen"
        "$CLI" __gen-docs --man "$DOCS_TMP/gen/man1" --markdown "$DOCS_TMP/gen/cli.md" \
            2>"$DOCS_TMP/gen/stderr" || {
            cat "$DOCS_TMP/gen/stderr"
            return 1
        }
        touch "$DOCS_TMP/gen/ok"
    fi
}

@test "every command's --help works without a daemon (strict __gen-docs)" {
    run gen
    echo "$output"
    [ "$status" -eq 0 ]
    # Only notes about groups absent from this tree, no problems.
    run grep -v ': note: ' "$DOCS_TMP/gen/stderr"
    [ -z "$output" ]
}

@test "docs/cli.md is what the binary prints (regenerate: cmake --build BUILD --target cli-docs)" {
    gen
    [[ -f $BERTH_SRC/docs/cli.md ]] || {
        echo "docs/cli.md is missing: cmake --build build --target cli-docs"
        false
    }
    if ! diff -u "$BERTH_SRC/docs/cli.md" "$DOCS_TMP/gen/cli.md" >"$DOCS_TMP/cli.diff"; then
        echo "docs/cli.md differs from the help texts of $CLI (first lines of the diff):"
        head -40 "$DOCS_TMP/cli.diff"
        echo "regenerate it with: cmake --build <build> --target cli-docs"
        false
    fi
}

@test "cli.md documents every built group and every subcommand" {
    gen
    # Groups: the command list of `berth --help` (those built).
    mapfile -t groups < <("$CLI" --help | sed -n '/^Commands:/,/^$/p' |
        grep -v 'not available in this build' | sed -n 's/^  \([a-z]*\).*/\1/p' |
        grep -vx -e completion -e help)
    [ "${#groups[@]}" -ge 5 ]
    for g in "${groups[@]}"; do
        grep -qx "## berth $g" "$DOCS_TMP/gen/cli.md" || { echo "no section for $g"; false; }
        [[ -f $DOCS_TMP/gen/man1/berth-$g.1 ]] || { echo "no man page for $g"; false; }
        # Its subcommands, as cli_dispatch lists them.
        for s in $("$CLI" "$g" --help | sed -n '/^Commands:/,/^$/s/^  \([a-z][a-z0-9_-]*\).*/\1/p'); do
            grep -qx "### berth $g $s" "$DOCS_TMP/gen/cli.md" || { echo "no section for $g $s"; false; }
            grep -q "^\\.SS \"berth $g $s\"" "$DOCS_TMP/gen/man1/berth-$g.1" ||
                { echo "no man subsection for $g $s"; false; }
        done
    done
    # Each section is the help text itself.
    "$CLI" plugins ls --help >"$DOCS_TMP/pls.txt"
    grep -qF "$(head -1 "$DOCS_TMP/pls.txt")" "$DOCS_TMP/gen/cli.md"
    [[ -f $DOCS_TMP/gen/man1/berth.1 ]]
}

@test "the build wrote current manual pages (build/share/man/man1)" {
    gen
    built=$BERTH_BIN/../share/man/man1
    [[ -d $built ]] || { echo "no $built: the berth target's docs step did not run"; false; }
    diff -r "$built" "$DOCS_TMP/gen/man1"
}

@test "berthd(8) is generated from berthd --help" {
    [[ -x $BERTH_BIN/berthd ]] || skip "berthd not built"
    "$CLI" __gen-docs --berthd "$BERTH_BIN/berthd" --man8 "$DOCS_TMP/man8"
    page=$DOCS_TMP/man8/berthd.8
    [[ -f $page ]]
    # Every flag berthd documents is in the page.
    for flag in $("$BERTH_BIN/berthd" --help | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
        grep -qF -- "${flag//-/\\-}" "$page" || { echo "berthd.8 lacks $flag"; false; }
    done
    # The build made the same page.
    diff "$BERTH_BIN/../share/man/man8/berthd.8" "$page"
    if command -v groff >/dev/null; then
        run groff -man -ww -z "$page"
        [ -z "$output" ]
    fi
}

@test "manual pages render without groff warnings" {
    command -v groff >/dev/null || skip "groff not installed"
    gen
    for f in "$DOCS_TMP"/gen/man1/*.1; do
        run groff -man -ww -z "$f"
        [ -z "$output" ] || { echo "$f: $output"; false; }
    done
    command -v man >/dev/null || skip "man not installed"
    run man -l "$DOCS_TMP/gen/man1/berth-plugins.1"
    [ "$status" -eq 0 ]
    [[ $output == *"berth-plugins - List and manage plugins"* ]]
    [[ $output == *"berth plugins replace"* ]]
    run man -l "$DOCS_TMP/gen/man1/berth.1"
    [[ $output == *"GLOBAL OPTIONS"* && $output == *"EXAMPLES"* && $output == *"EXIT STATUS"* ]]
    [[ $output == *"berth-images(1)"* ]]
}

@test "berth --help has examples and exit statuses" {
    run "$CLI" --help
    [ "$status" -eq 0 ]
    [[ $output == *$'\nExamples:\n  '* ]]
    [[ $output == *"berth images pull "* ]]
    [[ $output == *$'\nExit status:\n'* ]]
    [[ $output == *"--timeout DURATION"* && $output == *"--connect-timeout DURATION"* ]]
}

@test "errors say what to do next" {
    run "$CLI" -a "$DOCS_TMP/none.sock" version
    [ "$status" -eq 1 ]
    [[ $output == *"is berthd running? start it with"* ]]
    run "$CLI" --connect-timeout never version
    [ "$status" -eq 1 ]
    [[ $output == *"e.g. 500ms, 30s, 2m"* ]]
    run "$CLI" completion zsh
    [ "$status" -eq 1 ]
    [[ $output == *"berth completion --help"* ]]
    run "$CLI" __gen-docs
    [ "$status" -eq 1 ]
    [[ $output == *"give --man DIR and/or --markdown FILE"* ]]
    run "$CLI" __gen-docs --berthd /bin/true
    [ "$status" -eq 1 ]
    [[ $output == *"--berthd PATH and --man8 DIR go together"* ]]
}

@test "a stale generated page is removed when its group goes away" {
    gen
    d=$DOCS_TMP/stale
    mkdir -p "$d"
    touch "$d/berth-gone.1" "$d/keep.txt"
    "$CLI" __gen-docs --man "$d"
    [[ ! -e $d/berth-gone.1 ]]
    [[ -e $d/keep.txt && -f $d/berth.1 ]]
}

@test "a daemon error gets a next step: deadline_exceeded suggests --timeout" {
    # shellcheck source=lib/daemon.bash
    source "$BATS_TEST_DIRNAME/lib/daemon.bash"
    [[ -x $BERTH_BIN/berth-echo ]] || skip "berth-echo not built"
    berth_start_daemon '{"content": {"enabled": false}, "metadata": {"enabled": false},
        "snapshot-overlay": {"enabled": false}, "transfer": {"enabled": false},
        "runtime-runc": {"enabled": false}, "gc": {"enabled": false}, "echo": {}}'
    # events never ends on its own: the deadline does.
    run "$BERTH_BIN/berth" -a "$BERTH_SOCK" --timeout 300ms events
    berth_stop_daemon
    echo "$output"
    [ "$status" -eq 1 ]
    # The client's own "timed out after 300ms" or the daemon's deadline_exceeded.
    [[ $output == "berth: events.subscribe"*" — allow more time with a larger --timeout" ]]
}
