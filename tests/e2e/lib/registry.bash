# SPDX-License-Identifier: Apache-2.0
# E2E helper: a private docker-registry on a free loopback port, and fixture
# images built with umoci from busybox-static and pushed with skopeo.
#
#   registry_start            starts /usr/bin/docker-registry; exports REG
#                             (127.0.0.1:PORT), REG_PORT, REG_DIR
#   registry_stop             stops it and removes its storage
#   registry_build_image DIR LAYERS
#                             builds an OCI layout DIR (tag "t") with LAYERS
#                             layers: layer 1 is a busybox root, the next
#                             ones add and delete files
#   registry_push DIR NAME:TAG
#                             pushes DIR:t to $REG/NAME:TAG with skopeo
#   registry_require_tools    skips unless docker-registry, umoci, skopeo,
#                             busybox-static, curl are installed
# Every test that calls registry_start must call registry_stop in teardown.

registry__skip() {
    if declare -F skip >/dev/null; then
        skip "$1"
    fi
    echo "skip: $1" >&2
    exit 77
}

registry_require_tools() {
    local t
    for t in docker-registry umoci skopeo curl python3; do
        command -v "$t" >/dev/null || registry__skip "$t not installed (scripts/install-deps.sh)"
    done
    [[ -x /bin/busybox ]] || registry__skip "busybox-static not installed"
}

registry__free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

registry_start() {
    registry_require_tools
    REG_DIR=$(mktemp -d /tmp/berth-reg.XXXXXX)
    REG_PORT=$(registry__free_port)
    REG=127.0.0.1:$REG_PORT
    export REG REG_PORT REG_DIR
    cat >"$REG_DIR/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: $REG
YAML
    docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/registry.log" 2>&1 &
    REG_PID=$!
    export REG_PID
    local i
    for ((i = 0; i < 100; i++)); do
        if curl -fsS "http://$REG/v2/" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "registry_start: docker-registry did not start on $REG" >&2
    cat "$REG_DIR/registry.log" >&2
    return 1
}

registry_stop() {
    if [[ -n ${REG_PID:-} ]]; then
        kill "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
        REG_PID=
    fi
    if [[ -n ${REG_DIR:-} && -d $REG_DIR ]]; then
        rm -rf "$REG_DIR"
    fi
    REG_DIR=
}

# registry_build_image DIR LAYERS [SIZE_MB]: SIZE_MB of random data per extra layer.
registry_build_image() {
    local dir=$1 layers=${2:-1} size_mb=${3:-0} b i
    b=$(mktemp -d /tmp/berth-imgbuild.XXXXXX)
    umoci init --layout "$dir" >/dev/null
    umoci new --image "$dir:t" >/dev/null
    umoci unpack --rootless --image "$dir:t" "$b/bundle" >/dev/null
    local R=$b/bundle/rootfs
    mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/usr/bin" "$R/var/lib"
    cp /bin/busybox "$R/bin/busybox"
    for i in sh ls cat echo true false sleep id env mkdir rm; do
        ln -s busybox "$R/bin/$i"
    done
    echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
    echo "root:x:0:" >"$R/etc/group"
    echo "hello from layer 1" >"$R/etc/motd"
    chmod 1777 "$R/tmp"
    umoci repack --image "$dir:t" "$b/bundle" >/dev/null
    for ((i = 2; i <= layers; i++)); do
        rm -rf "$b/bundle"
        umoci unpack --rootless --image "$dir:t" "$b/bundle" >/dev/null
        R=$b/bundle/rootfs
        echo "layer $i" >"$R/etc/layer$i"
        echo "hello from layer $i" >"$R/etc/motd"
        mkdir -p "$R/var/lib/l$i"
        local f
        for f in 1 2 3 4 5 6 7 8; do
            echo "file $f of layer $i" >"$R/var/lib/l$i/f$f"
        done
        if ((i > 2)); then
            rm -f "$R/etc/layer$((i - 1))"
        fi
        if ((size_mb > 0)); then
            head -c $((size_mb * 1024 * 1024)) /dev/urandom >"$R/var/lib/l$i/blob"
        fi
        umoci repack --image "$dir:t" "$b/bundle" >/dev/null
    done
    umoci config --image "$dir:t" --config.cmd /bin/sh --config.env PATH=/bin:/usr/bin \
        --os linux --architecture amd64 >/dev/null
    rm -rf "$b"
}

# registry_build_multi DIR: an OCI layout whose tag `multi` is an image index
# of linux/amd64 (2 layers), linux/arm64 (the same 2 layers and a third of its
# own) and a BuildKit-style attestation manifest (unknown/unknown). Push it
# with registry_push_multi.
registry_build_multi() {
    local dir=$1 b
    registry_build_image "$dir" 2
    b=$(mktemp -d /tmp/berth-imgbuild.XXXXXX)
    umoci unpack --rootless --image "$dir:t" "$b/bundle" >/dev/null
    echo arm64 >"$b/bundle/rootfs/etc/arch"
    umoci repack --image "$dir:arm64" "$b/bundle" >/dev/null
    umoci config --image "$dir:arm64" --architecture arm64 >/dev/null
    umoci tag --image "$dir:t" amd64 >/dev/null
    rm -rf "$b"
    python3 "$(dirname "${BASH_SOURCE[0]}")/../tools/mk_multi_index.py" "$dir"
}

registry_push_multi() {
    skopeo copy -q --all --dest-tls-verify=false "oci:$1:multi" "docker://$REG/$2" >/dev/null
}

registry_push() {
    skopeo copy -q --dest-tls-verify=false "oci:$1:t" "docker://$REG/$2" >/dev/null
}
