#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# The hostile layer corpus (tests/security/) against layer apply, once with
# openat2 resolution and once with the fallback O_NOFOLLOW walker. Runs
# berth-apply-test directly: no daemon needed.

setup() {
    BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    SRC=${BERTH_SRC:-$BATS_TEST_DIRNAME/../..}
    TOOL=$BIN/berth-apply-test
    [ -x "$TOOL" ] || skip "berth-apply-test not built ($TOOL)"
    [ "$(id -u)" = 0 ] || skip "needs root (owners, device nodes, trusted xattrs)"
    command -v python3 >/dev/null || skip "python3 missing"
}

@test "hostile layers: errors or confined, host canary unchanged (openat2)" {
    run "$SRC/tests/security/run_corpus.sh" "$TOOL"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *" 0 failed"* ]]
}

@test "hostile layers: errors or confined, host canary unchanged (component walker)" {
    run "$SRC/tests/security/run_corpus.sh" "$TOOL" --walk
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *" 0 failed"* ]]
}
