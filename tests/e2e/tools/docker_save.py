#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns an OCI image layout (tag "t") into a legacy `docker save` tar
(v1.2: manifest.json with Config "<hex>.json", Layers "<id>/layer.tar"
holding uncompressed layers, RepoTags). Optionally drops one layer to build
a broken archive.

Usage: docker_save.py LAYOUT OUT.tar REPO:TAG [--drop-layer N]"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile


def blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


def add(tar, name, data):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    tar.addfile(ti, io.BytesIO(data))


def main():
    layout, out, tag = sys.argv[1:4]
    drop = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--drop-layer" else -1
    with open(os.path.join(layout, "index.json")) as f:
        idx = json.load(f)
    man = json.loads(blob(layout, idx["manifests"][0]["digest"]))
    cfg = blob(layout, man["config"]["digest"])
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    layers = []
    with tarfile.open(out, "w") as tar:
        add(tar, cfg_name, cfg)
        for i, l in enumerate(man["layers"]):
            data = blob(layout, l["digest"])
            if l["mediaType"].endswith("gzip"):
                data = gzip.decompress(data)
            lid = hashlib.sha256(data).hexdigest()
            name = lid + "/layer.tar"
            layers.append(name)
            if i != drop:
                add(tar, name, data)
        add(tar, "manifest.json",
            json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": layers}]).encode())


if __name__ == "__main__":
    main()
