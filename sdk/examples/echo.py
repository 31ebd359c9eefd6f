#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""berth echo plugin in Python: proof that the berth wire protocol is
language-neutral. No SDK, only Debian's python3-msgpack and the raw protocol
of docs/protocol.md: 4-byte big-endian length frames holding one msgpack
message, `plugin.register` then `plugin.ready`, requests served with their
msgid, `plugin.health` and `plugin.shutdown` answered.

Methods (ids and prefixes configurable with --id, default "pyecho"):
  <id>.echo     {data?} -> {data, pid, lang, namespace, caller}   idempotent
  <id>.version  {} -> {core: <result of the core's `version`>}   (a call
                made by the plugin through the core)

Run by berthd (fd 3, BERTH_PLUGIN_FD=3) with a config section such as
  "plugins": {"pyecho": {"path": "/path/to/echo.py"}}
or as an external plugin: echo.py --socket <state>/plugins.sock
"""
import os
import socket
import struct
import sys
import time

import msgpack

MAX_FRAME = 16 * 1024 * 1024
REQUEST, RESPONSE, NOTIFY = 0, 1, 2


def log(level, msg, **kv):
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    extra = "".join(" %s=%s" % (k, v) for k, v in kv.items())
    sys.stderr.write('time=%sZ level=%s component=%s msg="%s"%s\n'
                     % (ts, level, PLUGIN_ID, msg.replace('"', "'"), extra))
    sys.stderr.flush()


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.unpack_opts = dict(raw=False, strict_map_key=False)

    def send(self, msg):
        data = msgpack.packb(msg, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self):
        """Returns the next message, or None at EOF."""
        if not self._fill(4):
            return None
        (n,) = struct.unpack(">I", self.buf[:4])
        if n == 0 or n > MAX_FRAME:
            raise ValueError("bad frame length %d" % n)
        if not self._fill(4 + n):
            return None
        payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
        return msgpack.unpackb(payload, **self.unpack_opts)


class Plugin:
    def __init__(self, conn, plugin_id):
        self.conn = conn
        self.id = plugin_id
        self.next_id = 0
        self.calls = {}  # msgid -> callback(error, result)

    def call(self, method, params, cb):
        self.next_id += 1
        self.calls[self.next_id] = cb
        self.conn.send([REQUEST, self.next_id, method, params])

    def reply(self, msgid, result):
        self.conn.send([RESPONSE, msgid, None, result])

    def fail(self, msgid, code, message):
        self.conn.send([RESPONSE, msgid, {"code": code, "message": message}, None])

    def wait_for(self, msgid):
        """Serves messages until the response to msgid arrives."""
        while msgid in self.calls:
            if not self.step():
                return False
        return True

    def step(self):
        m = self.conn.recv()
        if m is None:
            return False
        if not isinstance(m, list) or not m:
            raise ValueError("malformed message")
        if m[0] == REQUEST:
            self.serve(m[1], m[2], m[3])
        elif m[0] == RESPONSE:
            cb = self.calls.pop(m[1], None)
            if cb:
                cb(m[2], m[3])
        # Notifications ($cancel, $ack, ...) need nothing here: every method
        # answers at once.
        return True

    def serve(self, msgid, method, params):
        caller = params.get("caller") or {}
        if method == "plugin.health":
            self.reply(msgid, {})
        elif method == "plugin.shutdown":
            log("info", "shutdown requested by berthd")
            self.reply(msgid, {})
            sys.exit(0)
        elif method == self.id + ".echo":
            self.reply(msgid, {
                "data": params.get("data"),
                "pid": os.getpid(),
                "lang": "python",
                "namespace": params.get("namespace", "default"),
                "caller": caller,
            })
        elif method == self.id + ".version":
            def done(err, result):
                if err:
                    self.fail(msgid, err.get("code", "internal"), err.get("message", ""))
                else:
                    self.reply(msgid, {"core": result})
            self.call("version", {}, done)
        else:
            self.fail(msgid, "unimplemented",
                      "method %s is not served by plugin %s" % (method, self.id))

    def run(self):
        result = {}

        def registered(err, res):
            if err:
                log("error", "registration refused: %s" % err.get("message"))
                sys.exit(1)
            result.update(res)

        self.call("plugin.register", {
            "id": self.id,
            "type": "io.berth.example.echo-python.v1",
            "version": "0.1.0",
            "api": 1,
            "pid": os.getpid(),
            "methods": [
                {"name": self.id + ".echo", "idempotent": True, "internal": False,
                 "resumable": False, "callers": []},
                {"name": self.id + ".version", "idempotent": True, "internal": False,
                 "resumable": False, "callers": []},
            ],
            "requires": [],
        }, registered)
        if not self.wait_for(self.next_id):
            return 1
        log("info", "registered", root=result.get("root"),
            boot_id=result.get("daemon", {}).get("boot_id"))
        self.call("plugin.ready", {}, lambda err, res: err and sys.exit(1))
        while self.step():
            pass
        log("info", "berthd closed the connection; exiting")
        return 0


def main(argv):
    global PLUGIN_ID
    PLUGIN_ID = "pyecho"
    sock_path = os.environ.get("BERTH_PLUGINS_SOCK")
    i = 1
    while i < len(argv):
        if argv[i] == "--id" and i + 1 < len(argv):
            PLUGIN_ID = argv[i + 1]
            i += 1
        elif argv[i] == "--socket" and i + 1 < len(argv):
            sock_path = argv[i + 1]
            i += 1
        i += 1  # --log-level L and others are accepted and ignored
    fd = os.environ.pop("BERTH_PLUGIN_FD", None)
    if fd:
        sock = socket.socket(fileno=int(fd))
    elif sock_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(sock_path)
    else:
        sys.stderr.write("echo.py: a berth plugin; run it from berthd or with --socket PATH\n")
        return 2
    try:
        return Plugin(Conn(sock), PLUGIN_ID).run()
    except (BrokenPipeError, ConnectionResetError):
        return 0


PLUGIN_ID = "pyecho"
if __name__ == "__main__":
    sys.exit(main(sys.argv))
