#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/<name>/):
# valid documents first (real ones made by umoci and skopeo from the busybox
# image of scripts/mk-busybox-oci.sh, and the shapes Docker Hub serves), then
# the edge cases each parser must refuse. Deterministic: re-running it
# rewrites the same files. The msg corpus is the protocol helper's and is left
# alone; the apply corpus also takes the small layers of
# tests/security/make_hostile_layers.py.
#   tests/fuzz/make_corpus.py [CORPUS_DIR]
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "0123456789abcdef" * 4
D3 = "sha256:" + "f" * 64


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- msgpack (just enough to build inputs) ----------------------------------
def mp(o):
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if o >= 0:
            return b"\xcf" + struct.pack(">Q", o)
        if o >= -32:
            return struct.pack("b", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, str):
        b = o.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(o, bytes):
        return b"\xc4" + bytes([len(o)]) + o
    if isinstance(o, list):
        h = bytes([0x90 | len(o)]) if len(o) < 16 else b"\xdc" + struct.pack(">H", len(o))
        return h + b"".join(mp(x) for x in o)
    if isinstance(o, dict):
        h = bytes([0x80 | len(o)]) if len(o) < 16 else b"\xde" + struct.pack(">H", len(o))
        return h + b"".join(mp(k) + mp(v) for k, v in o.items())
    raise TypeError(o)


# ---- reference ---------------------------------------------------------------
refs = {
    "short": "busybox",
    "tag": "busybox:1.36.1",
    "library": "library/busybox:latest",
    "docker-io": "docker.io/library/busybox:latest",
    "index-docker-io": "index.docker.io/library/alpine:3.19",
    "user-repo": "myuser/my-app_v2:release-1.0",
    "registry-port": "127.0.0.1:5000/foo/bar:tag",
    "localhost": "localhost/x",
    "localhost-port": "localhost:5000/a/b/c:v1.2-rc_3",
    "digest": "ghcr.io/owner/repo@" + D2,
    "tag-digest": "quay.io/a/b:tag@" + D2,
    "ipv6": "[::1]:5000/img:1",
    "upper-domain": "Registry.Example/x/y",
    "separators": "registry.example.com/a__b/c-d/e.f--g:_latest",
    "deep": "r.io/" + "/".join("p%d" % i for i in range(20)) + ":t",
    "long-name": "r.io/" + "a" * 240,
    "long-tag": "busybox:" + "T" * 128,
    "platform": "linux/amd64",
    "platform-variant": "linux/arm64/v8",
    "platform-arch": "aarch64",
    "bad-upper": "Busybox/UPPER",
    "bad-dots": "bad..name",
    "bad-empty-tag": "busybox:",
    "bad-digest-only": "@" + D2,
    "bad-sha512": "busybox@sha512:" + "a" * 128,
    "bad-space": "busy box",
    "bad-port": "host:99999x/a",
    "bad-dash": "-a/b",
}
for k, v in refs.items():
    write("reference", k, v)

# ---- real documents (umoci + skopeo, from scripts/mk-busybox-oci.sh) ------------
OCI_INDEX = ('{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",'
             '"digest":"sha256:ab06a1f89dad1e0cc13807561d0d6f01a6da76441c016259dca775b85430f006",'
             '"size":349,"annotations":{"org.opencontainers.image.ref.name":"t"}}]}')
OCI_MANIFEST = ('{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
                '"digest":"sha256:c8244df811488521b5a996131014c04e6e043de206a73083981d1159d4e8db0c","size":429},'
                '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",'
                '"digest":"sha256:338ff31a8ee7df08b6a7b65a8bcff2e2d7113a6f2c532e124bd322d7f747accb","size":1084476}]}')
OCI_MANIFEST_EMPTY = ('{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
                      '"digest":"sha256:092fdbebe868319c18315c29c9739276ffa3bd41ab162f601f8912ca1d076a70","size":133},'
                      '"layers":[]}')
OCI_CONFIG = ('{"created":"2026-11-28T16:53:19.86044464Z","architecture":"amd64","os":"linux","config":'
              '{"Env":["PATH=/bin:/usr/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":'
              '["sha256:cc7f98391521c8d00e2226ced283b84a9bb3de6cf17a8db1bb91a4fab5cc9c6e"]},"history":'
              '[{"created":"2026-11-28T16:53:19.899254013Z","created_by":"umoci repack"},{"created":'
              '"2026-11-28T16:53:19.973328915Z","created_by":"umoci config","empty_layer":true}]}')
DOCKER_V2S2 = ('{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
               '"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":429,'
               '"digest":"sha256:c8244df811488521b5a996131014c04e6e043de206a73083981d1159d4e8db0c"},'
               '"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1084476,'
               '"digest":"sha256:338ff31a8ee7df08b6a7b65a8bcff2e2d7113a6f2c532e124bd322d7f747accb"}]}')
DOCKER_SAVE = ('[{"Config":"c8244df811488521b5a996131014c04e6e043de206a73083981d1159d4e8db0c.json",'
               '"RepoTags":["docker.io/library/busybox:t"],'
               '"Layers":["cc7f98391521c8d00e2226ced283b84a9bb3de6cf17a8db1bb91a4fab5cc9c6e.tar"]}]')


def plat(os_, arch, variant=None):
    p = {"architecture": arch, "os": os_}
    if variant:
        p["variant"] = variant
    return p


# The shape of Docker Hub's busybox manifest list.
DOCKER_LIST = json.dumps({
    "manifests": [
        {"digest": D1, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": plat("linux", "amd64"), "size": 528},
        {"digest": D2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": plat("linux", "arm", "v6"), "size": 527},
        {"digest": D3, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": plat("linux", "arm64", "v8"), "size": 527},
        {"digest": D1, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "platform": dict(plat("windows", "amd64"), **{"os.version": "10.0.17763.5329"}), "size": 527},
    ],
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
    "schemaVersion": 2,
}, indent=3)
# An OCI index with attestation manifests (buildx) and nested index.
OCI_INDEX_MULTI = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D1, "size": 1000,
         "platform": plat("linux", "amd64")},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D2, "size": 900,
         "platform": plat("linux", "arm64", "v8")},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D3, "size": 566,
         "annotations": {"vnd.docker.reference.digest": D1,
                         "vnd.docker.reference.type": "attestation-manifest"},
         "platform": plat("unknown", "unknown")},
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": D2, "size": 300},
    ],
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
})
OCI_INDEX_NAMES = json.dumps({
    "schemaVersion": 2,
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D1, "size": 349,
         "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest",
                         "org.opencontainers.image.ref.name": "latest"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D2, "size": 349,
         "annotations": {"org.opencontainers.image.ref.name": "registry.example/app:1.0"}},
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": D3, "size": 349,
         "platform": plat("linux", "amd64")},
    ],
})
MANY_LAYERS = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 10},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D2,
                "size": i, "annotations": {"k": "v"}} for i in range(20)],
})
CONFIG_MULTI = json.dumps({
    "architecture": "arm", "variant": "v7", "os": "linux",
    "config": {"User": "1000:1000", "Env": ["A=b"], "Labels": {"berth.io/x": "y"}},
    "rootfs": {"type": "layers", "diff_ids": [D1, D2, D3, D1]},
})
bad_docs = {
    "schema1": '{"schemaVersion":1,"name":"x","tag":"latest","fsLayers":[]}',
    "ambiguous-cve-2021-41190": json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 1},
        "layers": [], "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                     "digest": D2, "size": 1}]}),
    "mt-mismatch": json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                               "config": {"mediaType": "a/b", "digest": D1, "size": 1}, "layers": []}),
    "dup-keys": '{"schemaVersion":2,"schemaVersion":2,"layers":[],"config":{}}',
    "bad-digest": json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:ABC", "size": 1}]}),
    "negative-size": json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D1, "size": -1}]}),
    "huge-config": json.dumps({"schemaVersion": 2, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 1 << 40},
        "layers": []}),
    "deep-nesting": "[" * 3000 + "]" * 3000,
    "not-object": "[1,2,3]",
    "empty": "",
}
# manifest target: first byte = announced media type (see fuzz_manifest.c).
SEL = {"none": 0, "oci-manifest": 1, "oci-index": 2, "docker-manifest": 3, "docker-list": 4,
       "config": 5, "octet": 6}
docs = {
    "oci-index": ("none", OCI_INDEX),
    "oci-index-announced": ("oci-index", OCI_INDEX),
    "oci-manifest": ("oci-manifest", OCI_MANIFEST),
    "oci-manifest-empty": ("none", OCI_MANIFEST_EMPTY),
    "docker-v2s2": ("docker-manifest", DOCKER_V2S2),
    "docker-list": ("docker-list", DOCKER_LIST),
    "oci-index-multi": ("oci-index", OCI_INDEX_MULTI),
    "oci-index-names": ("none", OCI_INDEX_NAMES),
    "many-layers": ("oci-manifest", MANY_LAYERS),
    "config": ("config", OCI_CONFIG),
    "config-multi": ("none", CONFIG_MULTI),
    "announced-mismatch": ("docker-list", OCI_MANIFEST),
}
for k, (sel, body) in docs.items():
    write("manifest", k, bytes([SEL[sel]]) + body.encode())
for k, body in bad_docs.items():
    write("manifest", "bad-" + k, bytes([SEL["none"]]) + body.encode())

# ---- import (manifest.json, index.json) -----------------------------------------
write("import", "docker-save", DOCKER_SAVE)
write("import", "docker-save-multi", json.dumps([
    {"Config": "blobs/sha256/" + "a" * 64, "RepoTags": ["busybox:latest", "registry:5000/bb:1"],
     "Layers": ["blobs/sha256/" + "b" * 64, "blobs/sha256/" + "c" * 64]},
    {"Config": "x.json", "RepoTags": None, "Layers": []},
]))
write("import", "docker-save-bad-path", json.dumps(
    [{"Config": "../etc/passwd", "RepoTags": [], "Layers": ["/abs.tar"]}]))
write("import", "docker-save-bad-tag", json.dumps(
    [{"Config": "c.json", "RepoTags": ["BAD TAG", "a\u0001b", ""], "Layers": ["l.tar"]}]))
write("import", "oci-index", OCI_INDEX)
write("import", "oci-index-names", OCI_INDEX_NAMES)
write("import", "oci-index-multi", OCI_INDEX_MULTI)
write("import", "oci-layout", '{"imageLayoutVersion":"1.0.0"}')
write("import", "oci-layout-bad-version", '{"imageLayoutVersion":"2.0.0"}')
write("import", "oci-layout-not-string", '{"imageLayoutVersion":1}')
write("import", "docker-save-digest-tag", json.dumps(
    [{"Config": "c.json", "RepoTags": ["busybox@sha256:" + "0" * 64, "ok:1", 7], "Layers": ["l.tar"]}]))

# ---- auth (WWW-Authenticate, token responses, URLs) -----------------------------
auth = {
    "docker-hub": 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                  'scope="repository:library/busybox:pull"',
    "basic": 'Basic realm="Registry Realm"',
    "multi": 'Basic realm="r", Bearer realm="https://a.example/t",service="s" , Negotiate',
    "escaped": 'Bearer realm="https://a.example/t?x=\\"y\\"",error="insufficient_scope"',
    "unquoted": "Bearer realm=https://ghcr.io/token,service=ghcr.io,scope=repository:o/r:pull",
    "link-local": 'Bearer realm="http://169.254.169.254/latest/meta-data"',
    "link-local-v6": 'Bearer realm="http://[fe80::1%25eth0]:80/t"',
    "mapped-v6": 'Bearer realm="https://[::ffff:169.254.1.1]/t"',
    "userinfo": 'Bearer realm="https://user:pw@auth.example:8443/token"',
    "file-scheme": 'Bearer realm="file:///etc/passwd"',
    "bad-unterminated": 'Bearer realm="https://x',
    "bad-param-first": 'realm="x"',
    "token": '{"token":"eyJhbGciOiJSUzI1NiJ9.e30.sig","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}',
    "access-token": '{"access_token":"abc.def","expires_in":-5}',
    "token-bad-char": '{"token":"a\\nb"}',
    "location-abs": "https://storage.example/blob?sig=abc",
    "location-rel": "/v2/a/blobs/uploads/uuid?_state=x",
    "location-proto-rel": "//cdn.example/x",
    "location-relative-path": "../uploads/uuid",
    "retry-after": "120",
    "retry-after-date": "Wed, 21 Oct 2015 07:28:00 GMT",
}
for k, v in auth.items():
    write("auth", k, v)

# ---- filter ------------------------------------------------------------------------
filters = {
    "name": "name==docker.io/library/busybox:latest",
    "label-present": 'labels."berth.io/gc.root"',
    "label-regex": "labels.x~=^y",
    "and": "name~=/bus.*/,target.mediatype==application/vnd.oci.image.index.v1+json",
    "or": "name==a\nname==b\nlabels.k!=v",
    "nested": "runtime.name==io.containerd.runc.v2,snapshot_key==c1",
    "quoted": 'labels."a.b"=="",labels."x"=="y,z"',
    "escapes": 'name=="\\"q\\"\\n",name~=/a\\/b[0-9]+/',
    "numbers": "created_at==1700000000000000000,neg!=1,big~=^1844,t==true",
    "spaces": "  name  ==  x  ,  labels . k  ",
    "bad-op": "name=x",
    "bad-regex": "name~=(",
    "bad-quote": 'labels."k',
    "regex-budget": "name~=/^(ab|[[:alpha:]]){2,5}x{3}$/,labels.k~=a{500}",
    "regex-too-big": "name~=/(a{999}){999}/\nname~=/(a)\\1/",
}
for k, v in filters.items():
    write("filter", k, v)
write("filter", "with-record", b"labels.k==v\x00" + mp({"name": "n", "labels": {"k": "v"},
                                                          "created_at": 5, "x": [1, None]}))


def ab_text(n, seed):
    """Deterministic pseudo-random a/b text (xorshift32)."""
    out = []
    for _ in range(n):
        seed ^= (seed << 13) & 0xFFFFFFFF
        seed ^= seed >> 17
        seed ^= (seed << 5) & 0xFFFFFFFF
        out.append("a" if (seed >> 7) & 1 else "b")
    return "".join(out)


# glibc's regexec took ~1.6 s per value on these (its DFA has 2^31 states);
# the linear-time matcher (metadata/re.c) takes about a millisecond.
write("filter", "regex-linear",
      b"labels.k~=(a|b)*a(a|b){30}c\nname~=(a|b)*a(a|b){30}$\nname~=(x+x+)+y\x00" +
      mp({"name": ab_text(1900, 7), "labels": {"k": ab_text(1900, 12345)}}))
write("filter", "regex-go-syntax",
      "name~=(?i)^DOCKER\\.io/\nname~=/\\bbusybox\\b/\nname~=[[:alpha:]]+:\\d+$\n"
      "labels.\"a.b\"~=^$\nname~=(?P<n>x)\\Q.*\\E|\\x{263a}\nname~=(?=a)\nname~=\\pL")

# ---- labels ---------------------------------------------------------------------------
labels = {
    "simple": {"a": "b"},
    "gc": {"berth.io/gc.expire": "2030-01-01T00:00:00Z", "containerd.io/gc.root": "2024-01-01T00:00:00Z",
           "berth.io/gc.ref.content.l.0": D1},
    "update-fields": [{"a": "1", "b": ""}, ["labels.a", "labels.b", "labels.c"]],
    "update-all": [{"x": "y"}, ["labels"]],
    "update-annotations": [{"k": "v"}, ["annotations.k", "target"]],
    "nil": None,
    "dup": {"a": "1"},  # duplicated below by hand
    "non-string": {"a": 1},
    "empty-key": {"": "v"},
    "long": {"k": "v" * 5000},
}
for k, v in labels.items():
    write("labels", k, mp(v))
write("labels", "dup", b"\x82" + mp("a") + mp("1") + mp("a") + mp("2"))
# 600 labels, the last one repeating k70: the duplicate check must reach it.
write("labels", "dup-late", b"\xde\x02\x58" + b"".join(
    mp("k%d" % (i if i < 599 else 70)) + mp("v") for i in range(600)))
for k, v in {"rfc3339": "2024-02-29T23:59:60.123456789+05:30", "rfc3339-z": "2030-01-01T00:00:00Z",
             "rfc3339-far": "9999-12-31T23:59:59Z", "namespace": "default",
             "container-id": "my-container_1.2", "rfc3339-feb31": "2026-02-31T00:00:00Z",
             "rfc3339-leap-1900": "1900-02-29T00:00:00Z"}.items():
    write("labels", k, v)

# ---- passwd ------------------------------------------------------------------------------
PASSWD = ("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n"
PASSWD_ODD = ("# comment\n\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\r\n"
              "evil:x:99999999999:0::/:/bin/sh\nminus:x:4294967295:0::/:/bin/sh\nshort:x\n"
              "  bob:x:1001:100:Bob:/home/bob:/bin/sh  \n")
GROUP_ODD = ("wheel:x:10:root,alice\naudio:x:29: alice , bob\nusers:x:100:\nalice:x:1000:alice\n"
             "huge:x:5000000000:alice\nneg:x:-1:alice\n")
cases = {
    "no-user": ("", PASSWD, GROUP),
    "name": ("user", PASSWD, GROUP),
    "uid": ("1000", PASSWD, GROUP),
    "uid-gid": ("1000:2000", PASSWD, GROUP),
    "name-group": ("nobody:nogroup", PASSWD, GROUP),
    "uid-unknown": ("4242", PASSWD, GROUP),
    "uid-max": ("4294967294", PASSWD, GROUP),
    "uid-overflow": ("4294967295", PASSWD, GROUP),
    "odd-files": ("alice", PASSWD_ODD, GROUP_ODD),
    "odd-bob": ("bob:audio", PASSWD_ODD, GROUP_ODD),
    "no-group-file": ("user", PASSWD, None),
    "bad-two-colons": ("a:b:c", PASSWD, GROUP),
}
for k, (u, p, g) in cases.items():
    data = u.encode() + b"\0" + p.encode()
    if g is not None:
        data += b"\0" + g.encode()
    write("passwd", k, data)

# ---- digest -------------------------------------------------------------------------------
digests = {
    "valid": D2, "valid-a": D1, "upper": "sha256:" + "A" * 64, "sha512": "sha512:" + "a" * 128,
    "short": "sha256:" + "a" * 63, "long": "sha256:" + "a" * 65, "empty-hex": "sha256:",
    "no-colon": "sha256" + "a" * 64, "colon-first": ":" + "a" * 64, "blake3": "blake3:" + "a" * 64,
}
for k, v in digests.items():
    write("digest", k, v)
write("digest", "nul", b"sha256:" + b"a" * 32 + b"\0" + b"a" * 31)


# ---- apply (layers) ---------------------------------------------------------------------
def trim(tar_bytes):
    """Drops tarfile's record padding: keep the two zero end blocks only."""
    b = tar_bytes.rstrip(b"\0")
    blocks = (len(b) + 511) // 512
    return b[:blocks * 512].ljust(blocks * 512, b"\0") + b"\0" * 1024


def ti(name, typ=tarfile.REGTYPE, **kw):
    t = tarfile.TarInfo(name)
    t.type = typ
    t.mtime = 1600000000
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def layer(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            if isinstance(e, tuple):
                info, data = e
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(e)
    return trim(buf.getvalue())


def f(name, data=b"data\n", mode=0o644, **kw):
    return (ti(name, mode=mode, **kw), data)


def d(name, mode=0o755, **kw):
    return ti(name, tarfile.DIRTYPE, mode=mode, **kw)


def sym(name, target, **kw):
    return ti(name, tarfile.SYMTYPE, linkname=target, **kw)


def hard(name, target, **kw):
    return ti(name, tarfile.LNKTYPE, linkname=target, **kw)


layers = {
    "basic": layer([d("bin"), f("bin/sh", b"#!/bin/true\n", 0o755), d("etc"),
                    f("etc/passwd", PASSWD.encode()), sym("bin/ash", "sh"), hard("bin/link", "bin/sh"),
                    d("tmp", 0o1777)]),
    "owners-modes": layer([d("home", uid=1000, gid=1000), f("home/s", mode=0o4755, uid=0, gid=0),
                           f("home/g", mode=0o2755, gid=50), d("home/sticky", 0o1777),
                           f("home/ro", mode=0o400, uid=65534, gid=65534)]),
    "whiteouts": layer([d("etc"), f("etc/.wh.passwd", b""), d("usr"), f("usr/.wh..wh..opq", b""),
                        f("usr/new", b"x"), f(".wh.lib", b"")]),
    "devices": layer([d("dev"), ti("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
                      ti("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660),
                      ti("dev/fifo", tarfile.FIFOTYPE, mode=0o600)]),
    "xattrs": layer([f("cap", b"x", 0o755, pax_headers={"SCHILY.xattr.security.capability":
                                                         "\x01\x00\x00\x02\x00\x04\x00\x00",
                                                         "SCHILY.xattr.user.note": "hello",
                                                         "SCHILY.xattr.trusted.overlay.opaque": "y"}),
                     d("dir", pax_headers={"SCHILY.xattr.trusted.overlay.redirect": "/x"})]),
    "pax-long": layer([d("a" * 100), d("a" * 100 + "/" + "b" * 100),
                       f("a" * 100 + "/" + "b" * 100 + "/" + "c" * 200, b"long")]),
    "gnu-long": layer([d("g" * 120), f("g" * 120 + "/" + "h" * 150, b"gnu"),
                       sym("lnk", "t" * 200)], fmt=tarfile.GNU_FORMAT),
    "ustar": layer([d("u"), f("u/f"), sym("u/s", "/u/f"), hard("u/h", "u/f")], fmt=tarfile.USTAR_FORMAT),
    "missing-parents": layer([f("etc/ssl/certs/ca.pem", b"pem"), f("usr/lib/x/y", b"y"),
                              f("lib/z", b"through the lower's symlink")]),
    "replace": layer([f("a", b"1"), d("a"), f("a/b"), f("a", b"2"), sym("c", "a"), f("c", b"3"),
                      d("d"), d("d", 0o700)]),
    "sparse": layer([f("sparse", b"\0" * 4096 + b"end")], fmt=tarfile.GNU_FORMAT),
    "dot-root": layer([d("."), d("./x"), f("./x/./y"), d("/abs"), f("//abs///z")]),
    "times": layer([f("t", mtime=0), f("u", mtime=2 ** 33), d("dirt", mtime=123)]),
    "empty": b"\0" * 1024,
}
for k, v in layers.items():
    write("apply", k + ".tar", v)
write("apply", "basic.tar.gz", gzip.compress(layers["basic"], mtime=0))
write("apply", "whiteouts.tar.gz", gzip.compress(layers["whiteouts"], mtime=0))
# Two gzip members (pigz/docker may produce them) and trailing bytes.
write("apply", "multi-member.tar.gz", gzip.compress(layers["basic"][:1024], mtime=0) +
      gzip.compress(layers["basic"][1024:], mtime=0))
if shutil.which("zstd"):
    z = subprocess.run(["zstd", "-q", "-c", "--no-check"], input=layers["devices"],
                       stdout=subprocess.PIPE, check=True).stdout
    write("apply", "devices.tar.zst", z)

# The small cases of the hostile-layer corpus (tests/security), with the
# canary at /canary: inside the fuzz sandbox that is the canary directory next
# to the root, so an escape there is caught by fuzz_apply's checks.
hostile = os.path.join(HERE, "..", "security", "make_hostile_layers.py")
if os.path.exists(hostile):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, hostile, tmp, "/canary"], check=True,
                       stdout=subprocess.DEVNULL)
        for name in sorted(os.listdir(tmp)):
            p = os.path.join(tmp, name)
            if name == "cases.tsv" or os.path.getsize(p) > 65536:
                continue
            with open(p, "rb") as fh:
                data = fh.read()
            if name.endswith(".tar") and len(data) % tarfile.RECORDSIZE == 0:
                data = trim(data)
            write("apply", "hostile-" + name, data)
print("corpus written to", OUT)
