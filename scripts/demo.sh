#!/bin/sh
# `make demo`: starts berthd on a private root, shows the plugins, builds a
# busybox image with umoci, imports it and runs a container that prints a
# greeting; then stops everything and removes the private root.
set -eu
BUILD=${1:-build}
BIN=$(cd "$BUILD/bin" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "demo: run as root (containers, mounts and cgroups need it)" >&2; exit 1; }
DIR=$(mktemp -d /tmp/berth-demo.XXXXXX)
SOCK="$DIR/state/berth.sock"
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    # containers keep running when berthd stops: remove the demo's own
    for p in $(pgrep -f "berth-shim.*$DIR" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    grep " $DIR" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
b() { echo "\$ berth $*"; "$BIN/berth" -a "$SOCK" "$@"; }

echo "== starting berthd (root $DIR/root, state $DIR/state, log $DIR/berthd.log)"
"$BIN/berthd" --root "$DIR/root" --state "$DIR/state" >"$DIR/berthd.log" 2>&1 &
PID=$!
i=0
until "$BIN/berth" -a "$SOCK" version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "berthd did not start; log:"; cat "$DIR/berthd.log"; exit 1; }
    sleep 0.05
done
b version
sleep 0.3
b plugins ls
if [ -x "$BIN/berth-transfer" ] && [ -x "$BIN/berth-runtime-runc" ]; then
    echo "== building a busybox image with umoci"
    sh "$SRC/scripts/mk-busybox-oci.sh" "$DIR/image" demo >/dev/null
    b images import --base-name demo/busybox "$DIR/image/busybox.tar"
    b images ls
    IMG=$("$BIN/berth" -a "$SOCK" images ls -q | head -n1)
    b run --rm "$IMG" greeter echo "Hello from a berth container!"
fi
echo "== stopping berthd"
