#!/usr/bin/env bats
# SPDX-License-Identifier: Apache-2.0
# Cross-check of layer apply against an independent implementation: a fixture
# image built with umoci and busybox-static (several layers with deletions,
# an opaque directory, hardlinks, symlinks, devices, special modes, owners and
# xattrs) is applied layer by layer into overlay snapshots with
# berth-apply-test; the merged overlay mount must equal `umoci unpack`'s
# rootfs (paths, types, modes, owners, sizes, contents, link targets, device
# numbers, xattrs, hardlink groups) and our diff IDs must equal the config's.
# No daemon needed.

setup() {
    BIN=${BERTH_BIN:-$BATS_TEST_DIRNAME/../../build/bin}
    TOOL=$BIN/berth-apply-test
    [ -x "$TOOL" ] || skip "berth-apply-test not built ($TOOL)"
    [ "$(id -u)" = 0 ] || skip "needs root (overlay mounts, owners, devices)"
    for t in umoci jq python3; do
        command -v $t >/dev/null || skip "$t not installed (scripts/install-deps.sh)"
    done
    [ -x /bin/busybox ] || skip "busybox-static not installed"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null ||
        skip "overlayfs not available"
    W=$(mktemp -d /tmp/berth-umoci-XXXXXX)
}

teardown() {
    if [ -n "${W:-}" ]; then
        umount "$W/mnt" 2>/dev/null || true
        rm -rf "$W"
    fi
}

build_fixture() {
    cd "$W"
    umoci init --layout img
    umoci new --image img:t

    # Layer 1: a busybox root with every kind of entry.
    umoci unpack --image img:t b1 >/dev/null
    R=b1/rootfs
    mkdir -p $R/bin $R/etc $R/tmp $R/usr/share/doc $R/var/cache/apt $R/opq/old/deep $R/dev $R/home/u
    cp /bin/busybox $R/bin/busybox
    ln -s busybox $R/bin/sh
    ln $R/bin/busybox $R/bin/ls
    ln $R/bin/busybox $R/bin/cat
    echo hi >$R/etc/motd
    echo root:x:0:0:root:/root:/bin/sh >$R/etc/passwd
    chmod 1777 $R/tmp
    echo s >$R/bin/suid && chmod 4755 $R/bin/suid
    echo g >$R/bin/sgid && chmod 2711 $R/bin/sgid
    mkdir $R/shared && chown 0:50 $R/shared && chmod 2775 $R/shared
    echo o >$R/opq/old/f && echo o >$R/opq/old/deep/f2 && echo o >$R/opq/keepname
    mknod $R/dev/null c 1 3 && mknod $R/dev/sda b 8 0 && chmod 660 $R/dev/sda
    mkfifo $R/fifo
    echo d >$R/usr/share/doc/readme && chown 1000:1000 $R/usr/share/doc/readme
    echo c >$R/var/cache/apt/pkg
    chown -R 1000:100 $R/home/u && chmod 700 $R/home/u
    python3 -c "
import os
os.setxattr('$R/bin/suid', 'user.test', b'value')
os.setxattr('$R/bin/busybox', 'security.capability', b'\x01\x00\x00\x02\x00\x20\x00\x00' + b'\x00' * 12)
os.setxattr('$R/usr/share/doc', 'user.dir', b'd')"
    ln -s ../etc/passwd $R/home/u/pw
    umoci repack --image img:t b1

    # Layer 2: deletions, replacements, metadata-only changes.
    umoci unpack --image img:t b2 >/dev/null
    R=b2/rootfs
    rm $R/etc/motd
    rm -r $R/var/cache
    chmod 600 $R/etc/passwd
    chown 5:5 $R/bin/suid && chmod 4750 $R/bin/suid
    rm $R/bin/sh && ln -s /bin/busybox $R/bin/sh
    rm $R/bin/cat
    rm $R/fifo && mkdir $R/fifo && echo now-a-dir >$R/fifo/x
    rm -r $R/home/u/pw && echo file >$R/home/u/pw
    ln $R/etc/passwd $R/etc/passwd-
    umoci repack --image img:t b2

    # Layer 3 (hand-made tar): an opaque directory, a parent directory the
    # layer does not list (its attributes come from the lower layer).
    python3 - "$W/l3.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    def add(name, typ=tarfile.REGTYPE, data=b"", mode=0o644):
        i = tarfile.TarInfo(name); i.type = typ; i.mode = mode; i.mtime = 1600000000
        i.size = len(data) if typ == tarfile.REGTYPE else 0
        t.addfile(i, io.BytesIO(data) if data else None)
    add("opq", tarfile.DIRTYPE, mode=0o750)
    add("opq/.wh..wh..opq")
    add("opq/new", tarfile.DIRTYPE, mode=0o755)
    add("opq/new/g", data=b"new\n")
    add("usr/share/doc/extra/file", data=b"extra\n")
PY
    umoci raw add-layer --image img:t "$W/l3.tar"

    # Layer 4: changes on top of the opaque dir and the hardlinks.
    umoci unpack --image img:t b4 >/dev/null
    R=b4/rootfs
    rm $R/bin/ls
    echo later >$R/opq/later
    rm -r $R/usr/share/doc/extra
    umoci repack --image img:t b4

    umoci unpack --image img:t ref >/dev/null
    cd - >/dev/null
}

compare_trees() {
    python3 - "$1" "$2" <<'PY'
import hashlib, os, stat, sys
def scan(root):
    out, inodes = {}, {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xs = sorted((k, os.getxattr(p, k, follow_symlinks=False))
                        for k in os.listxattr(p, follow_symlinks=False)
                        if not k.startswith("trusted.overlay."))
            info = [stat.S_IFMT(st.st_mode), oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, xs]
            if stat.S_ISREG(st.st_mode):
                info += [st.st_size, hashlib.sha256(open(p, "rb").read()).hexdigest()]
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            if stat.S_ISLNK(st.st_mode):
                info.append(os.readlink(p))
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.append(st.st_rdev)
            out[rel] = info
    groups = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out, groups
a, ga = scan(sys.argv[1])
b, gb = scan(sys.argv[2])
bad = 0
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        print("DIFF", k, "\n  berth:", a.get(k), "\n  umoci:", b.get(k))
        bad += 1
if ga != gb:
    print("HARDLINK GROUPS DIFFER", ga, gb)
    bad += 1
print(len(a), "paths compared,", bad, "differences")
sys.exit(1 if bad else 0)
PY
}

@test "layers applied into overlay snapshots equal umoci unpack" {
    build_fixture
    manifest=$(jq -r '.manifests[0].digest' "$W/img/index.json" | cut -d: -f2)
    layers=$(jq -r '.layers[].digest' "$W/img/blobs/sha256/$manifest" | cut -d: -f2)
    config=$(jq -r '.config.digest' "$W/img/blobs/sha256/$manifest" | cut -d: -f2)
    blobs=()
    for l in $layers; do blobs+=("$W/img/blobs/sha256/$l"); done
    [ ${#blobs[@]} -eq 4 ]

    run "$TOOL" chain "$W/store" "${blobs[@]}"
    echo "$output"
    [ "$status" -eq 0 ]
    # diff IDs match the image config
    want=$(jq -r '.rootfs.diff_ids[]' "$W/img/blobs/sha256/$config")
    got=$(echo "$output" | awk '{print $2}')
    [ "$got" = "$want" ]

    # merged view of the chain, mounted for real
    "$TOOL" view "$W/store" 100 4 3 2 1
    mkdir "$W/mnt"
    "$TOOL" mount "$W/store" 100 "$W/mnt"
    run compare_trees "$W/mnt" "$W/ref/rootfs"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ "$output" == *" 0 differences"* ]]
    # the fixture really exercised whiteouts and the opaque dir
    [ -c "$W/store/snapshots/2/fs/etc/motd" ]
    python3 -c "import os; assert os.getxattr('$W/store/snapshots/3/fs/opq', 'trusted.overlay.opaque') == b'y'"
    [ ! -e "$W/mnt/opq/old" ]
    [ -e "$W/mnt/opq/new/g" ]
}

@test "gzip, zstd and plain tar layers give the same tree and diff ID" {
    build_fixture
    manifest=$(jq -r '.manifests[0].digest' "$W/img/index.json" | cut -d: -f2)
    first=$(jq -r '.layers[0].digest' "$W/img/blobs/sha256/$manifest" | cut -d: -f2)
    gzip -dc "$W/img/blobs/sha256/$first" >"$W/l1.tar"
    zstd -q -c "$W/l1.tar" >"$W/l1.tar.zst"
    mkdir "$W/a" "$W/b" "$W/c"
    ra=$("$TOOL" apply "$W/a" "$W/img/blobs/sha256/$first")
    rb=$("$TOOL" apply "$W/b" "$W/l1.tar")
    rc=$("$TOOL" apply "$W/c" "$W/l1.tar.zst")
    [ "$ra" = "$rb" ]
    [ "$ra" = "$rc" ]
    [ "${ra%% *}" = "sha256:$(sha256sum "$W/l1.tar" | cut -d' ' -f1)" ]
    run compare_trees "$W/a" "$W/c"
    echo "$output"
    [ "$status" -eq 0 ]
    run env BERTH_APPLY_INFLATE=zlib "$TOOL" apply "$W/c" "$W/img/blobs/sha256/$first"
    [ "$status" -eq 0 ]
    [ "$output" = "$ra" ]
}
