#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Runs the hostile layer corpus against berth-apply-test. For every case: the
# expected error (naming the problem) or a confined result, the canary tree on
# the host byte-for-byte unchanged (contents, modes, owners, times, xattrs),
# and for failing cases no committable snapshot (commit is refused).
# Usage: run_corpus.sh PATH/TO/berth-apply-test [--walk]
# Prints "N passed, M failed"; exit 1 if any failed, 77 if not root.
set -u
tool=$1
shift
extra="$*"
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" != 0 ]; then
    echo "hostile corpus needs root (owners, devices, trusted xattrs): skipped"
    exit 77
fi
work=$(mktemp -d /tmp/berth-sec-XXXXXX)
trap 'rm -rf "$work"' EXIT
canary=$work/canary
mkdir -p "$canary/sub"
echo "host secret" >"$canary/secret"
chmod 600 "$canary/secret"
echo "other" >"$canary/sub/file"
ln -s secret "$canary/link"
touch -d @1000000000 "$canary/secret" "$canary/sub/file" "$canary/sub" "$canary"

snap() {
    python3 - "$canary" <<'PY'
import hashlib, os, sys
root = sys.argv[1]
def show(p):
    st = os.lstat(p)
    xs = sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False))
    h = ""
    if os.path.isfile(p) and not os.path.islink(p):
        h = hashlib.sha256(open(p, "rb").read()).hexdigest()
    link = os.readlink(p) if os.path.islink(p) else ""
    print(os.path.relpath(p, root), oct(st.st_mode), st.st_uid, st.st_gid, st.st_size,
          st.st_mtime_ns, st.st_nlink, link, h, xs)
show(root)
for d, dirs, files in os.walk(root):
    for n in sorted(dirs + files):
        show(os.path.join(d, n))
PY
}

n=$(python3 "$here/make_hostile_layers.py" "$work/layers" "$canary") || exit 1
before=$(snap)
pass=0
fail=0
i=0
while IFS=$'\t' read -r name file expect errsub args check; do
    i=$((i + 1))
    root=$work/roots/$name
    mkdir -p "$root"
    chmod 755 "$root"
    a=()
    [ "$args" != - ] && read -r -a a <<<"$args"
    out=$("$tool" apply $extra "${a[@]}" "$root" "$work/layers/$file" 2>&1)
    rc=$?
    why=""
    if [ "$expect" = ok ]; then
        [ $rc = 0 ] || why="expected success, got: $out"
    else
        if [ $rc = 0 ]; then
            why="expected an error containing '$errsub', but it succeeded"
        elif [[ "$out" != *"$errsub"* ]]; then
            why="error does not mention '$errsub': $out"
        fi
    fi
    if [ -z "$why" ] && [ "$check" != - ]; then
        (cd "$root" && eval "$check") || why="post-check failed: $check"
    fi
    now=$(snap)
    if [ "$now" != "$before" ]; then
        why="${why:+$why; }HOST CANARY CHANGED: $(diff <(echo "$before") <(echo "$now") | head -5)"
    fi
    if [ -z "$why" ] && [ "$expect" = error ] && [ "$args" = - ]; then
        # Through the store: the failed apply leaves a snapshot commit refuses.
        store=$work/store
        "$tool" prepare "$store" "$i" >/dev/null 2>&1 || why="prepare $i failed"
        "$tool" apply-snap "$store" "$i" "$work/layers/$file" >/dev/null 2>&1 &&
            why="apply-snap succeeded"
        "$tool" commit "$store" "$i" >/dev/null 2>&1 && why="commit accepted a failed apply"
        [ "$(snap)" = "$before" ] || why="HOST CANARY CHANGED (store apply)"
    fi
    if [ -z "$why" ]; then
        pass=$((pass + 1))
        echo "ok   $name"
    else
        fail=$((fail + 1))
        echo "FAIL $name: $why"
    fi
done <"$work/layers/cases.tsv"
echo "corpus: $n cases${extra:+ ($extra)}"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
