#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
# Plays berthd against the SDK test plugin over a socketpair (fd 3):
# registration, ready, unary calls, upload/download streams with flow control,
# cancellation, a call from the plugin to "another plugin", health, shutdown.
import os, socket, struct, subprocess, sys, tempfile
import msgpack

def send(s, obj):
    b = msgpack.packb(obj, use_bin_type=True)
    s.sendall(struct.pack('>I', len(b)) + b)

def recv(s):
    hdr = b''
    while len(hdr) < 4:
        c = s.recv(4 - len(hdr))
        if not c: raise EOFError
        hdr += c
    n = struct.unpack('>I', hdr)[0]
    body = b''
    while len(body) < n:
        c = s.recv(n - len(body))
        if not c: raise EOFError
        body += c
    return msgpack.unpackb(body, raw=False)

def check(cond, what):
    if not cond:
        print("FAIL:", what); sys.exit(1)

plugin = sys.argv[1]
root = tempfile.mkdtemp()
a, b = socket.socketpair()
def spawn(sock, **kw):
    env = dict(os.environ, BERTH_PLUGIN_FD=str(sock.fileno()))
    return subprocess.Popen([plugin], pass_fds=[sock.fileno()], env=env, **kw)
p = spawn(b)
b.close()
a.settimeout(10)
try:
    m = recv(a)
    check(m[0] == 0 and m[2] == 'plugin.register', 'first message is plugin.register: %r' % (m,))
    reg = m[3]
    check(reg['id'] == 'sdktest', 'id')
    names = {x['name']: x for x in reg['methods']}
    check(names['t.echo']['idempotent'] is True, 'idempotent flag')
    check(names['t.relay']['internal'] is True and names['t.relay']['callers'] == ['core', 'other'], 'callers')
    send(a, [1, m[1], None, {'config': {}, 'root': root, 'state': root, 'daemon': {'version': 't', 'pid': 1}}])
    m = recv(a)
    check(m[2] == 'plugin.ready', 'plugin.ready after init: %r' % (m,))
    send(a, [1, m[1], None, {}])
    check(os.path.isdir(os.path.join(root, 'sdktest')), 'plugin root created')

    # unary
    send(a, [0, 100, 't.echo', {'namespace': 'ns1', 'caller': {'kind': 'plugin', 'id': 'x', 'uid': 0}, 'v': 1}])
    m = recv(a)
    check(m[:3] == [1, 100, None] and m[3]['ns'] == 'ns1' and m[3]['caller'] == 'x' and m[3]['params']['v'] == 1, 'echo %r' % (m,))
    # unknown method
    send(a, [0, 101, 't.nope', {}])
    m = recv(a)
    check(m[1] == 101 and m[2]['code'] == 'unimplemented', 'unknown method %r' % (m,))

    # upload 5 chunks: acks come back (two held ones released together)
    send(a, [0, 102, 't.upload', {}])
    acks = 0
    for i in range(5):
        send(a, [2, '$stream', {'id': 102, 'side': 'caller', 'data': b'x' * 1000}])
    send(a, [2, '$stream.end', {'id': 102, 'side': 'caller'}])
    while True:
        m = recv(a)
        if m[0] == 2 and m[1] == '$ack':
            check(m[2]['id'] == 102 and m[2]['side'] == 'server', 'ack fields %r' % (m,))
            acks += m[2]['n']
        elif m[0] == 1:
            check(m[1] == 102 and m[3] == {'bytes': 5000, 'chunks': 5}, 'upload result %r' % (m,))
            break
    check(acks >= 4, 'acks for upload: %d' % acks)

    # download 20 chunks: at most 8 unacked
    send(a, [0, 103, 't.download', {'n': 20}])
    got = []
    while True:
        m = recv(a)
        if m[0] == 2 and m[1] == '$stream':
            got.append(m[2]['data'])
            if len(got) % 8 == 0:
                # ack a whole window at once: the server must stall before this
                send(a, [2, '$ack', {'id': 103, 'n': 8, 'side': 'caller'}])
        elif m[0] == 2 and m[1] == '$stream.end':
            pass
        elif m[0] == 1:
            check(m[1] == 103 and m[2] is None, 'download result')
            break
    check(got == list(range(20, 0, -1)), 'download chunks %r' % got)

    # flow control: without acks the server stops after 8
    send(a, [0, 104, 't.download', {'n': 12}])
    got = []
    a.settimeout(0.5)
    try:
        while True:
            m = recv(a)
            if m[1] == '$stream': got.append(m[2]['data'])
    except socket.timeout:
        pass
    check(len(got) == 8, 'window of 8 holds: got %d' % len(got))
    a.settimeout(10)
    send(a, [2, '$ack', {'id': 104, 'n': 8, 'side': 'caller'}])
    while True:
        m = recv(a)
        if m[0] == 1: break
        if m[1] == '$stream': got.append(m[2]['data'])
    check(len(got) == 12, 'rest after ack')

    # cancel
    send(a, [0, 105, 't.hang', {}])
    send(a, [2, '$cancel', {'id': 105}])
    m = recv(a)
    check(m[1] == 105 and m[2]['code'] == 'canceled', 'cancel %r' % (m,))

    # relay: the plugin calls other.method through us
    send(a, [0, 106, 't.relay', {}])
    m = recv(a)
    check(m[0] == 0 and m[2] == 'other.method' and m[3]['x'] == 'relayed', 'outgoing call %r' % (m,))
    send(a, [1, m[1], None, {'ok': True}])
    m = recv(a)
    check(m[:3] == [1, 106, None] and m[3] == {'ok': True}, 'relay result %r' % (m,))
    # relay failing
    send(a, [0, 107, 't.relay', {}])
    m = recv(a)
    send(a, [1, m[1], {'code': 'not_found', 'message': 'no such thing'}, None])
    m = recv(a)
    check(m[1] == 107 and m[2]['code'] == 'not_found' and 'no such thing' in m[2]['message'], 'relay error %r' % (m,))

    # health and shutdown
    send(a, [0, 108, 'plugin.health', {}])
    m = recv(a)
    check(m[:3] == [1, 108, None], 'health')
    send(a, [0, 109, 'plugin.shutdown', {}])
    m = recv(a)
    check(m[:3] == [1, 109, None], 'shutdown ack')
    check(p.wait(timeout=5) == 0, 'plugin exits 0 after shutdown')

    # init failure → exit 1 with the message
    a2, b2 = socket.socketpair()
    p2 = spawn(b2, stderr=subprocess.PIPE)
    b2.close()
    m = recv(a2)
    send(a2, [1, m[1], None, {'config': {'fail_init': True}, 'root': root, 'state': root}])
    rc = p2.wait(timeout=5)
    err = p2.stderr.read().decode()
    check(rc == 1 and 'fail_init' in err, 'init failure exits 1 naming the key: rc=%d %s' % (rc, err))

    # core goes away → plugin exits
    a3, b3 = socket.socketpair()
    p3 = spawn(b3)
    b3.close()
    recv(a3)
    a3.close()
    check(p3.wait(timeout=5) in (0, 1), 'exits when the core closes')
    print("1 passed, 0 failed")
finally:
    if p.poll() is None: p.kill()
    subprocess.call(['rm', '-rf', root])
