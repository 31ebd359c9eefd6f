#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A tiny misbehaving registry for berth's e2e tests.

Serves one OCI image layout (its tag "t" under any tag name) for every
repository; the repository name chooses the fault:

  good/...        behaves
  flaky/...       every blob and manifest answers 500 on its first request
  badblob/...     layer bytes do not match their digest (same length)
  bigmanifest/... the manifest is 5 MiB
  truncated/...   blob bodies stop halfway (Content-Length promises more)
  toolong/...     blob bodies carry more bytes than the descriptor says
  auth/...        requires a Bearer token from /token (anonymous)

Usage: fake_registry.py LAYOUT_DIR PORT_FILE   (binds 127.0.0.1 on a free port
and writes the port to PORT_FILE once listening).
"""
import hashlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAYOUT = sys.argv[1]
seen = set()
lock = threading.Lock()


def blob_path(digest):
    return os.path.join(LAYOUT, "blobs", "sha256", digest.split(":", 1)[1])


def manifest_desc():
    with open(os.path.join(LAYOUT, "index.json")) as f:
        idx = json.load(f)
    return idx["manifests"][0]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", ctype="application/json", headers=None, length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def first_time(self, key):
        with lock:
            if key in seen:
                return False
            seen.add(key)
            return True

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/token":
            return self.send(200, json.dumps({"token": "fake-token", "expires_in": 300}).encode())
        if path == "/v2/":
            return self.send(200, b"{}")
        parts = path.split("/")
        if len(parts) < 5 or parts[1] != "v2":
            return self.send(404, b'{"errors":[{"code":"NOT_FOUND","message":"no route"}]}')
        mode = parts[2]
        kind, ref = parts[-2], parts[-1]
        if mode == "auth" and self.headers.get("Authorization") != "Bearer fake-token":
            host = self.headers.get("Host")
            return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}',
                             headers={"WWW-Authenticate":
                                      'Bearer realm="http://%s/token",service="fake"' % host})
        if mode == "flaky" and self.first_time(path):
            return self.send(500, b'{"errors":[{"code":"UNKNOWN","message":"try again"}]}')
        if kind == "manifests":
            desc = manifest_desc()
            if ref.startswith("sha256:"):
                desc = {"digest": ref, "mediaType": desc["mediaType"]}
            if mode == "bigmanifest":
                body = b'{"schemaVersion":2,"layers":[],"pad":"' + b"x" * (5 << 20) + b'"}'
                return self.send(200, body, ctype=desc["mediaType"])
            with open(blob_path(desc["digest"]), "rb") as f:
                body = f.read()
            return self.send(200, body, ctype=desc["mediaType"],
                             headers={"Docker-Content-Digest": desc["digest"]})
        if kind == "blobs":
            try:
                with open(blob_path(ref), "rb") as f:
                    body = f.read()
            except OSError:
                return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}')
            is_config = body[:1] == b"{"
            if mode == "badblob" and not is_config:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            if mode == "toolong" and not is_config:
                body = body + b"EXTRA-BYTES"
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and mode != "truncated":
                start = int(rng[6:].split("-")[0])
            chunk = body[start:]
            code = 206 if start else 200
            hdrs = {"Docker-Content-Digest": ref}
            if start:
                hdrs["Content-Range"] = "bytes %d-%d/%d" % (start, len(body) - 1, len(body))
            if mode == "truncated" and not is_config and self.command == "GET":
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            return self.send(code, chunk, ctype="application/octet-stream", headers=hdrs)
        return self.send(404, b"{}")


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    srv.serve_forever()


if __name__ == "__main__":
    main()
