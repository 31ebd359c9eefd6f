#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Raw-protocol probes for the core's e2e tests (Debian's python3-msgpack).

  berth_raw.py SOCK bad KIND      send a malformed frame, print what came back:
                                  "error <code> <msgid>" and/or "closed";
                                  KIND: random, huge, zero, deep, not-array,
                                  wrong-types, params-not-map, truncated
  berth_raw.py SOCK upload N      echo.upload with N 64 KiB chunks (flow
                                  control: window 8, waits for $ack)
  berth_raw.py SOCK cancel        starts echo.sleep, cancels it, prints the code
  berth_raw.py SOCK hold SECONDS  connects and calls version every 50 ms for
                                  SECONDS; prints "ok N" or the first failure
"""
import os
import select
import socket
import struct
import sys
import time

import msgpack


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(5)
    return s


def frame(obj):
    data = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(data)) + data


def read_msg(s, buf):
    """Returns (message, rest) or (None, rest) at EOF."""
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if len(buf) >= 4 + n:
                return msgpack.unpackb(buf[4:4 + n], raw=False, strict_map_key=False), buf[4 + n:]
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            return None, buf
        buf += chunk


def bad(path, kind):
    s = connect(path)
    if kind == "random":
        payload = os.urandom(4096)
        # A random length prefix could ask for a huge frame; make sure the
        # first bytes are a plausible but garbage frame.
        payload = struct.pack(">I", 4092) + payload[4:]
    elif kind == "huge":
        payload = b"\xff\xff\xff\xff" + b"\x00" * 64
    elif kind == "zero":
        payload = b"\x00\x00\x00\x00"
    elif kind == "deep":
        nested = {}
        cur = nested
        for _ in range(200):
            nxt = {}
            cur["a"] = [nxt]
            cur = nxt
        payload = frame([0, 1, "version", nested])
    elif kind == "not-array":
        payload = frame({"hello": "world"})
    elif kind == "wrong-types":
        payload = frame([0, "one", 5, ["x"]])
    elif kind == "params-not-map":
        payload = frame([0, 7, "version", ["x"]])
    elif kind == "truncated":
        payload = frame([0, 3, "version", {}])[:-2]
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        payload = b""
    else:
        raise SystemExit("unknown kind " + kind)
    if payload:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            print("closed")
            return
    buf = b""
    while True:
        m, buf = read_msg(s, buf)
        if m is None:
            print("closed")
            return
        if isinstance(m, list) and len(m) == 4 and m[0] == 1 and m[2]:
            print("error %s %s" % (m[2].get("code"), m[1]))
        else:
            print("message %r" % (m,))


def upload(path, nchunks):
    s = connect(path)
    s.sendall(frame([0, 1, "echo.upload", {}]))
    chunk = b"\xab" * 65536
    sent = acked = 0
    buf = b""
    while True:
        while sent < nchunks and sent - acked < 8:
            s.sendall(frame([2, "$stream", {"id": 1, "side": "caller", "data": chunk}]))
            sent += 1
        if sent == nchunks:
            s.sendall(frame([2, "$stream.end", {"id": 1, "side": "caller"}]))
            sent += 1
        m, buf = read_msg(s, buf)
        if m is None:
            print("closed")
            return 1
        if m[0] == 2 and m[1] == "$ack" and m[2].get("id") == 1:
            acked += m[2].get("n", 0)
        elif m[0] == 1 and m[1] == 1:
            if m[2]:
                print("error %s %s" % (m[2].get("code"), m[2].get("message")))
                return 1
            print("chunks=%d bytes=%d acked=%d" % (m[3]["chunks"], m[3]["bytes"], acked))
            return 0


def cancel(path):
    s = connect(path)
    s.sendall(frame([0, 9, "echo.sleep", {"ms": 10000}]))
    time.sleep(0.2)
    t0 = time.time()
    s.sendall(frame([2, "$cancel", {"id": 9, "side": "caller"}]))
    buf = b""
    while True:
        m, buf = read_msg(s, buf)
        if m is None:
            print("closed")
            return 1
        if m[0] == 1 and m[1] == 9:
            code = m[2].get("code") if m[2] else "ok"
            print("%s after %.0f ms" % (code, (time.time() - t0) * 1000))
            return 0


def hold(path, seconds):
    s = connect(path)
    buf = b""
    n = 0
    end = time.time() + seconds
    while time.time() < end:
        n += 1
        s.sendall(frame([0, n, "version", {}]))
        m, buf = read_msg(s, buf)
        if m is None or m[0] != 1 or m[1] != n or m[2]:
            print("failed at call %d: %r" % (n, m))
            return 1
        time.sleep(0.05)
    print("ok %d" % n)
    return 0


def main(argv):
    path, cmd = argv[1], argv[2]
    if cmd == "bad":
        bad(path, argv[3])
        return 0
    if cmd == "upload":
        return upload(path, int(argv[3]))
    if cmd == "cancel":
        return cancel(path)
    if cmd == "hold":
        return hold(path, float(argv[3]))
    raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
