#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Hostile and heavy clients for the torture tests (Debian's python3-msgpack).

  berth_stress.py SOCK idle N SECONDS
      opens N connections to berth.sock and keeps them idle (every fourth one
      sends half a frame header and stops, like a stalled slowloris client);
      prints "open N" once all are connected, then after SECONDS (or when
      stdin reaches EOF) prints "still-open K" (how many the daemon kept)
  berth_stress.py SOCK noread DIGEST STREAMS SECONDS [--ack]
      one connection starts STREAMS content.read of DIGEST and never reads a
      byte; with --ack it also acknowledges chunks it never read (a hostile
      client defeating flow control). Prints "closed T" (seconds until the
      daemon closed the connection) or "open" after SECONDS
  berth_stress.py SOCK subscribe N SECONDS
      N subscribers of every event ("/") that read nothing for SECONDS, then
      drain what reached them; prints "subs N events E dropped D closed C"
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
    return s


def frame(obj):
    data = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(data)) + data


def peer_closed(s):
    """True once the peer closed (POLLRDHUP is reported even with unread
    data in our receive buffer, so this never reads)."""
    p = select.poll()
    p.register(s, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    for _, ev in p.poll(0):
        if ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return True
    return False


def wait_stdin_or(seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], min(0.5, deadline - time.time()))
        if r and not os.read(sys.stdin.fileno(), 4096):
            return


def idle(path, n, seconds):
    conns = []
    for i in range(n):
        s = connect(path)
        if i % 4 == 3:
            s.sendall(b"\x00\x00")  # half a length prefix, never completed
        conns.append(s)
    print("open %d" % len(conns), flush=True)
    wait_stdin_or(seconds)
    print("still-open %d" % sum(0 if peer_closed(s) else 1 for s in conns), flush=True)


def noread(path, digest, streams, seconds, ack):
    s = connect(path)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    for i in range(1, streams + 1):
        s.sendall(frame([0, i, "content.read", {"digest": digest}]))
    t0 = time.time()
    while time.time() - t0 < seconds:
        if peer_closed(s):
            print("closed %.1f" % (time.time() - t0), flush=True)
            return 0
        if ack:
            try:
                for i in range(1, streams + 1):
                    s.sendall(frame([2, "$ack", {"id": i, "n": 8, "side": "caller"}]))
            except OSError:
                print("closed %.1f" % (time.time() - t0), flush=True)
                return 0
        time.sleep(0.05)
    print("open", flush=True)
    return 0


def read_msgs(s, buf):
    """Reads what is available without blocking; returns (messages, buf, eof)."""
    out = []
    eof = False
    while True:
        try:
            chunk = s.recv(1 << 20, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionResetError:
            eof = True
            break
        if not chunk:
            eof = True
            break
        buf += chunk
    while len(buf) >= 4:
        (n,) = struct.unpack(">I", buf[:4])
        if len(buf) < 4 + n:
            break
        out.append(msgpack.unpackb(buf[4:4 + n], raw=False, strict_map_key=False))
        buf = buf[4 + n:]
    return out, buf, eof


def subscribe(path, n, seconds):
    subs = []
    for _ in range(n):
        s = connect(path)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(frame([0, 1, "events.subscribe", {"filters": ["/"]}]))
        subs.append(s)
    print("subscribed %d" % n, flush=True)
    wait_stdin_or(seconds)
    events = dropped = closed = 0
    # Drain: read and ack for a short while so the backlog and the counts of
    # dropped events arrive.
    bufs = [b""] * n
    deadline = time.time() + 3
    while time.time() < deadline:
        for i, s in enumerate(subs):
            if s is None:
                continue
            msgs, bufs[i], eof = read_msgs(s, bufs[i])
            got = 0
            for m in msgs:
                if isinstance(m, list) and m[0] == 2 and m[1] == "$stream":
                    got += 1
                    d = m[2].get("data") or {}
                    if isinstance(d, dict):
                        dropped += d.get("dropped", 0)
            events += got
            if got:
                s.sendall(frame([2, "$ack", {"id": 1, "n": got, "side": "caller"}]))
            if eof:
                closed += 1
                subs[i] = None
        time.sleep(0.05)
    print("subs %d events %d dropped %d closed %d" % (n, events, dropped, closed), flush=True)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, mode = sys.argv[1], sys.argv[2]
    a = sys.argv[3:]
    if mode == "idle":
        idle(path, int(a[0]), float(a[1]))
    elif mode == "noread":
        return noread(path, a[0], int(a[1]), float(a[2]), "--ack" in a)
    elif mode == "subscribe":
        subscribe(path, int(a[0]), float(a[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
