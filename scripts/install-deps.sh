#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Installs every Debian package that berth's build, tests and benchmarks need.
# Idempotent: packages already present are not fetched again.
set -eu

PKGS="
build-essential cmake pkg-config clang
libuv1-dev libmsgpack-dev liblmdb-dev lmdb-utils libarchive-dev
libcurl4-openssl-dev libseccomp-dev libjansson-dev libssl-dev
libcmocka-dev libsystemd-dev libzstd-dev libisal-dev zlib1g-dev
runc crun bats busybox-static docker-registry skopeo umoci containerd
python3-msgpack jq curl util-linux procps iproute2 hyperfine zstd
"
# Benchmarks: bench/bench_metadata.sh drives containerd's gRPC API from Node.js
# (bench/package.json) with containerd's .proto files and their gogo and
# google/protobuf imports.
PKGS="$PKGS golang-github-containerd-containerd-dev golang-github-gogo-protobuf-dev libprotobuf-dev nodejs"
# Debian's nodejs comes without npm (NodeSource's nodejs has it built in).
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages present"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing; run this script as root (sudo $0)" >&2
    exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# docker-registry and containerd start system services on install; tests start
# their own instances on private ports and roots, so the packaged ones are stopped.
apt-get install -y -qq --no-install-recommends $missing
for svc in docker-registry containerd; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
echo "install-deps: done"
