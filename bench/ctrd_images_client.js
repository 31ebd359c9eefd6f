// SPDX-License-Identifier: Apache-2.0
// ctrd_images_client.js: the containerd side of bench/bench_metadata.sh.
// Drives containerd's Images gRPC service (the API ctr uses) over its unix
// socket from one connection, one call in flight at a time, like
// build/bench/bench-meta-client does against berthd; no fork per call.
//
//   node ctrd_images_client.js SOCK OP N [NAMESPACE] [BASE]
//     OP create   N Images/Create, names img-BASE.. img-BASE+N-1
//        get      N Images/Get of those names
//        filter   N Images/List name==<one image>
//        list     N full Images/List
//        version  N Version/Version (the floor: this client + gRPC, no metadata)
//   Target descriptor of created images: env CTRD_TARGET="MEDIATYPE DIGEST SIZE";
//   by default a distinct synthetic digest per image, as bench-meta-client
//   sends (neither daemon checks that the content exists on create).
//   Proto files: env CTRD_PROTO_ROOT (default /usr/share/gocode/src, Debian's
//   golang-github-containerd-containerd-dev and golang-github-gogo-protobuf-dev)
//   and /usr/include (libprotobuf-dev, google/protobuf/*.proto).
//
// Prints "<op> n=N seconds=S rate=R/s median_us=.. p99_us=.. items=.." (the
// format of bench-meta-client) and "cpu_client_ms=.." for this process.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function usage() {
  process.stderr.write('usage: ctrd_images_client.js SOCK create|get|filter|list|version N [NAMESPACE] [BASE]\n');
  process.exit(2);
}

const [sock, op, nArg, nsArg, baseArg] = process.argv.slice(2);
if (!sock || !op || nArg === undefined) usage();
const n = Number.parseInt(nArg, 10);
const ns = nsArg || 'bench';
const base = baseArg ? Number.parseInt(baseArg, 10) : 0;
if (!Number.isInteger(n) || n < 1 || !Number.isInteger(base)) usage();

const root = process.env.CTRD_PROTO_ROOT || '/usr/share/gocode/src';
const ctrdApi = path.join(root, 'github.com/containerd/containerd/api');
const files = [
  path.join(ctrdApi, 'services/images/v1/images.proto'),
  path.join(ctrdApi, 'services/version/v1/version.proto'),
];
let pkg;
try {
  pkg = grpc.loadPackageDefinition(protoLoader.loadSync(files, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: false,
    includeDirs: [root, path.join(root, 'github.com/gogo/protobuf'), '/usr/include'],
  }));
} catch (e) {
  process.stderr.write(`ctrd_images_client: cannot load containerd's .proto files under ${root}: ${e.message}\n`);
  process.exit(1);
}

const target = sock.startsWith('unix:') ? sock : `unix://${path.resolve(sock)}`;
const opts = { 'grpc.max_receive_message_length': -1, 'grpc.max_send_message_length': -1 };
const images = new pkg.containerd.services.images.v1.Images(target, grpc.credentials.createInsecure(), opts);
// Same channel (one connection) for both services.
const version = new pkg.containerd.services.version.v1.Version(target, grpc.credentials.createInsecure(),
  { ...opts, channelOverride: images.getChannel() });
const md = new grpc.Metadata();
md.set('containerd-namespace', ns);

let fixedTarget = null;
if (process.env.CTRD_TARGET) {
  const [media_type, digest, size] = process.env.CTRD_TARGET.trim().split(/\s+/);
  if (!media_type || !digest || !(Number(size) > 0)) {
    process.stderr.write('ctrd_images_client: CTRD_TARGET must be "MEDIATYPE DIGEST SIZE"\n');
    process.exit(2);
  }
  fixedTarget = { media_type, digest, size };
}

function name(i) {
  return `registry.bench.local/app/img-${base + i}:latest`;
}

function request(i) {
  switch (op) {
    case 'create':
      return [images, 'Create', {
        image: {
          name: name(i),
          labels: { bench: '1' },
          target: fixedTarget || {
            media_type: 'application/vnd.oci.image.manifest.v1+json',
            digest: `sha256:${(base + i + 1).toString(16).padStart(64, '0')}`,
            size: '1234',
          },
        },
      }];
    case 'get': return [images, 'Get', { name: name(i) }];
    case 'filter': return [images, 'List', { filters: [`name==${name(i)}`] }];
    case 'list': return [images, 'List', {}];
    case 'version': return [version, 'Version', {}];
    default: usage();
  }
  return null;
}

function call(client, method, req) {
  return new Promise((resolve, reject) => {
    client[method](req, md, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

async function main() {
  await new Promise((resolve, reject) => {
    images.waitForReady(Date.now() + 10000, (err) => (err ? reject(err) : resolve()));
  });
  // Warm up the JIT and the connection (not timed, no images touched): the
  // C client that berth's side uses needs no warm-up.
  for (let i = 0; i < 300; i++) await call(version, 'Version', {});
  const lat = new Float64Array(n);
  let items = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const [client, method, req] = request(i);
    const s = process.hrtime.bigint();
    let res;
    try {
      res = await call(client, method, req);
    } catch (e) {
      throw new Error(`${method} #${i}: ${e.details || e.message}`);
    }
    lat[i] = Number(process.hrtime.bigint() - s);
    if (res && Array.isArray(res.images)) items += res.images.length;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  lat.sort();
  const q = (p) => lat[Math.min(n - 1, Math.floor(n * p))] / 1e3;
  process.stdout.write(`${op} n=${n} seconds=${secs.toFixed(3)} rate=${(n / secs).toFixed(0)}/s ` +
    `median_us=${q(0.5).toFixed(1)} p99_us=${q(0.99).toFixed(1)} items=${items} ` +
    `cpu_client_ms=${((cpu.user + cpu.system) / 1e3).toFixed(0)}\n`);
  images.close();
}

main().catch((e) => {
  process.stderr.write(`ctrd_images_client: ${e.message}\n`);
  process.exit(1);
});
