#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Turns an OCI layout holding the tags `amd64` and `arm64` into a
multi-platform image: writes an image index listing both (linux/amd64,
linux/arm64) plus a BuildKit-style attestation manifest (platform
unknown/unknown, one application/vnd.in-toto+json layer) and tags it `multi`.

    mk_multi_index.py LAYOUT
"""
import hashlib
import json
import os
import sys


def put_blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", d)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def main():
    layout = sys.argv[1]
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    by_ref = {}
    for m in index["manifests"]:
        ref = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if ref:
            by_ref[ref] = m
    entries = []
    for arch in ("amd64", "arm64"):
        m = dict(by_ref[arch])
        m.pop("annotations", None)
        m["platform"] = {"os": "linux", "architecture": arch}
        entries.append(m)
    # An attestation manifest as BuildKit writes them: not an image.
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
    layer = dict(put_blob(layout, statement), mediaType="application/vnd.in-toto+json")
    cfg = dict(put_blob(layout, b"{}"), mediaType="application/vnd.oci.image.config.v1+json")
    att = json.dumps({"schemaVersion": 2,
                      "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": cfg, "layers": [layer]}).encode()
    att_desc = dict(put_blob(layout, att), mediaType="application/vnd.oci.image.manifest.v1+json")
    att_desc["platform"] = {"os": "unknown", "architecture": "unknown"}
    att_desc["annotations"] = {"vnd.docker.reference.type": "attestation-manifest",
                               "vnd.docker.reference.digest": entries[0]["digest"]}
    entries.append(att_desc)
    idx = json.dumps({"schemaVersion": 2,
                      "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": entries}).encode()
    idx_desc = dict(put_blob(layout, idx), mediaType="application/vnd.oci.image.index.v1+json")
    idx_desc["annotations"] = {"org.opencontainers.image.ref.name": "multi"}
    index["manifests"].append(idx_desc)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main()
