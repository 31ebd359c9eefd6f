#!/bin/sh
# Builds a small OCI image from Debian's busybox-static with umoci:
#   scripts/mk-busybox-oci.sh OUT_DIR [TAG]
# leaves OUT_DIR/layout (an OCI image layout, tag TAG, default "1") and
# OUT_DIR/busybox.tar (that layout as a tar, for `berth images import` or
# `ctr images import`). Contents: /bin/busybox, its applets as symlinks,
# /etc/passwd and /etc/group with root, nobody and a test user, /tmp 1777.
set -eu
OUT=${1:?usage: mk-busybox-oci.sh OUT_DIR [TAG]}
TAG=${2:-1}
BB=/bin/busybox
[ -x "$BB" ] || { echo "mk-busybox-oci: $BB missing: install busybox-static (scripts/install-deps.sh)" >&2; exit 77; }
command -v umoci >/dev/null || { echo "mk-busybox-oci: umoci missing: run scripts/install-deps.sh" >&2; exit 77; }
mkdir -p "$OUT"
L="$OUT/layout"
B="$OUT/bundle"
rm -rf "$L" "$B"
umoci init --layout "$L"
umoci new --image "$L:$TAG"
umoci unpack --image "$L:$TAG" "$B" >/dev/null
R="$B/rootfs"
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root" "$R/home/user" "$R/proc" "$R/sys" "$R/dev"
chmod 1777 "$R/tmp"
cp "$BB" "$R/bin/busybox"
for a in $("$BB" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n' > "$R/etc/group"
chown 1000:1000 "$R/home/user"
umoci repack --image "$L:$TAG" "$B" >/dev/null
umoci config --image "$L:$TAG" --config.cmd sh --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --architecture amd64 --os linux >/dev/null
umoci gc --layout "$L"
rm -rf "$B"
tar -C "$L" -cf "$OUT/busybox.tar" .
echo "$OUT/busybox.tar"
