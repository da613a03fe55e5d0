// The pull-through blob path in process (startServer), against a real docker-registry behind the
// fault proxy for the normal path and a small in-process fake upstream for what a real registry
// won't do on demand (wrong bytes, a held body, 5xx, 429). Pinned: one upstream GET per digest
// however many clients ask, the blob headers, store hits, HEAD without a GET, a bad body never
// entering the store, the fill lock of another process, and invariant 9 for a joined fill.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../../scripts/gen-image.js';
import { pushImage } from '../../scripts/soak/upstream.js';
import { parseConfig } from '../../shared/config.js';
import { layout, type Layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { registryRoutes, repoOf, fakeImage, startServer as startFake, type FakeRepo, type TestServer } from '../../shared/registry/testing.js';
import { startFaultProxy, type FaultProxy } from '../../test/helpers/fault-proxy.js';
import { requireTool } from '../../test/helpers/proc.js';
import { startRegistry, type Registry } from '../../test/helpers/registry.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { startServer, type RunningServer } from '../serve.js';

const hasTools = requireTool('docker-registry', 'the in-process pull-through blob tests are skipped');
const ACCEPT = `${MediaType.ociManifest}, ${MediaType.dockerManifest}`;
const IMMUTABLE = 'public, max-age=31536000, immutable';

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The body, or 'broken' when the connection was cut before it was complete. */
const bodyOf = (r: Response) => r.arrayBuffer().then((b) => Buffer.from(b), () => 'broken' as const);
const codes = async (r: Response) => ((await r.json()) as { errors: Array<{ code: string; message: string; detail: unknown }> }).errors;

describe.skipIf(!hasTools)('pull-through blobs in process', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let proxy: FaultProxy;
  let fake: TestServer;
  let server: RunningServer;
  let img: GeneratedImage;
  let l: Layout;
  /** The fake upstream's repos; tests add blobs to them. */
  const repos: Record<string, FakeRepo> = {};
  /** digest (or `HEAD <digest>`) -> how the fake answers a GET (HEAD) of it instead of serving it. */
  const faults = new Map<string, (req: http.IncomingMessage, res: http.ServerResponse) => void>();

  /** A fresh random blob in these fake upstream repos. */
  const addBlob = (size: number, ...inRepos: string[]) => {
    const bytes = randomBytes(size);
    const digest = sha256Digest(bytes);
    for (const r of inRepos) repos[r]!.blobs[digest] = bytes;
    return { bytes, digest };
  };
  const fakeRequests = (digest: string) => fake.requests.filter((r) => r.url.includes(digest)).map((r) => `${r.method} ${r.url}`);
  const url = (name: string, digest: string) => `${server.url}/v2/${name}/blobs/${digest}`;
  const metric = async (name: string) => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  };
  const storeEntries = async () => (await fs.readdir(l.storeBlobsDir)).sort();
  const fillLocks = async () => (await fs.readdir(l.locksDir).catch(() => [] as string[])).filter((f) => f.startsWith('fill-'));

  beforeAll(async () => {
    tmp = await tmpDir('derrick-pt-blob');
    reg = await startRegistry();
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    const gen = path.join(tmp.dir, 'gen');
    img = await generateImage({ layoutDir: gen, tag: 'v1', layers: [300_000] });
    await pushImage(reg.url, 'lib/app', gen, img, 'v1');

    for (const r of ['lib/a', 'lib/b', 'lib/c', 'lib/pub']) repos[r] = repoOf({});
    repos['lib/f'] = repoOf({ v1: fakeImage('f') });
    const routes = registryRoutes(repos);
    fake = await startFake((req, res) => {
      const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
      const fault = digest ? faults.get(req.method === 'HEAD' ? `HEAD ${digest}` : digest) : undefined;
      return fault ? fault(req, res) : routes(req, res);
    });

    const root = path.join(tmp.dir, 'var');
    l = layout(root);
    const yaml = [
      'root: ./var',
      'grace: 10m',
      // A repo `derrick publish` owns, under a route's prefix: never the cache's.
      'repos:',
      '  - name: fake/lib/pub',
      '    from: docker://127.0.0.1:1/lib/pub',
      'upstreams:',
      '  - prefix: hub',
      `    url: ${JSON.stringify(proxy.url)}`,
      '  - prefix: fake',
      `    url: ${JSON.stringify(fake.origin)}`,
      '    pull-ahead: false',
      '  - prefix: never',
      `    url: ${JSON.stringify(fake.origin)}`,
      '    policy: Never',
      '  - prefix: slow',
      `    url: ${JSON.stringify(fake.origin)}`,
      '    pull-ahead: false',
      '    timeout: 1s',
      '',
    ].join('\n');
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
  });
  afterAll(async () => {
    await server?.close();
    await fake?.close();
    await proxy?.close();
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('clients asking at once for a missing blob share one upstream GET and get the verified bytes; then it is a store hit', async () => {
    const d = img.manifests[0]!.layers[0]!;
    const size = (await fs.stat(path.join(tmp.dir, 'gen', 'blobs', 'sha256', d.slice('sha256:'.length)))).size;
    const release = deferred();
    proxy.addRule({ method: 'GET', path: new RegExp(`/blobs/${d}$`), action: { kind: 'stall', until: release.promise } });
    const misses = await metric('derrick_cache_misses_total');
    const joins = await metric('derrick_cache_singleflight_joins_total');
    const upstreamBytes = await metric('derrick_cache_upstream_bytes_total');
    const gets = Array.from({ length: 4 }, () => fetch(url('hub/lib/app', d)).then(async (r) => ({ r, body: await bodyOf(r) })));
    try {
      await until('four misses, three of them joined', async () => (await metric('derrick_cache_misses_total')) - misses === 4 && (await metric('derrick_cache_singleflight_joins_total')) - joins === 3);
    } finally {
      release.resolve();
    }
    for (const { r, body } of await Promise.all(gets)) {
      expect(r.status).toBe(200);
      expect(body !== 'broken' && sha256Digest(body)).toBe(d);
      expect(Object.fromEntries(['content-type', 'docker-content-digest', 'content-length', 'cache-control'].map((h) => [h, r.headers.get(h)]))).toEqual({
        'content-type': 'application/octet-stream',
        'docker-content-digest': d,
        'content-length': String(size),
        'cache-control': IMMUTABLE,
      });
    }
    expect(reg.blobGets(d)).toBe(1);
    await until('the blob stored and its fill lock released', async () => (await fs.stat(l.storeBlob(d)).catch(() => undefined))?.size === size && (await fillLocks()).length === 0);
    expect(await metric('derrick_cache_upstream_bytes_total')).toBe(upstreamBytes + size);

    // Stored and proven for this repo: served from the store, without asking the upstream again.
    const hits = await metric('derrick_cache_hits_total');
    const again = await fetch(url('hub/lib/app', d));
    const body = await bodyOf(again);
    expect(again.status).toBe(200);
    expect(body !== 'broken' && sha256Digest(body)).toBe(d);
    expect(again.headers.get('content-length')).toBe(String(size));
    expect(again.headers.get('cache-control')).toBe(IMMUTABLE);
    const head = await fetch(url('hub/lib/app', d), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(size));
    expect(head.headers.get('docker-content-digest')).toBe(d);
    expect((await head.arrayBuffer()).byteLength).toBe(0);
    expect(await metric('derrick_cache_hits_total')).toBe(hits + 2);
    expect(await metric('derrick_cache_misses_total')).toBe(misses + 4);
    expect(reg.blobGets(d)).toBe(1);
    expect(proxy.count('HEAD', new RegExp(`/blobs/${d}$`))).toBe(0);
  });

  it('HEAD of a missing blob asks the upstream with a HEAD only; the digest is then proven for that repo', async () => {
    const b = addBlob(5000, 'lib/a', 'lib/c');
    const misses = await metric('derrick_cache_misses_total');
    const head = await fetch(url('fake/lib/a', b.digest), { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Object.fromEntries(['content-type', 'docker-content-digest', 'content-length', 'cache-control'].map((h) => [h, head.headers.get(h)]))).toEqual({
      'content-type': 'application/octet-stream',
      'docker-content-digest': b.digest,
      'content-length': '5000',
      'cache-control': IMMUTABLE,
    });
    expect(fakeRequests(b.digest)).toEqual([`HEAD /v2/lib/a/blobs/${b.digest}`]);
    expect(await metric('derrick_cache_misses_total')).toBe(misses);
    expect(await fs.stat(l.storeBlob(b.digest)).catch(() => 'absent')).toBe('absent');

    // Another repo fills it (with the client's address passed on), then lib/a's GET is a store hit
    // that needs no second HEAD: the first one proved it.
    const c = await fetch(url('fake/lib/c', b.digest));
    expect(sha256Digest((await bodyOf(c)) as Buffer)).toBe(b.digest);
    const get = fake.requests.find((r) => r.method === 'GET' && r.url.endsWith(b.digest))!;
    expect(get.headers['x-forwarded-for']).toBe('127.0.0.1');
    await until('the blob stored', async () => !!(await fs.stat(l.storeBlob(b.digest)).catch(() => undefined)));
    const a = await fetch(url('fake/lib/a', b.digest));
    expect(a.status).toBe(200);
    expect(sha256Digest((await bodyOf(a)) as Buffer)).toBe(b.digest);
    expect(fakeRequests(b.digest)).toEqual([`HEAD /v2/lib/a/blobs/${b.digest}`, `GET /v2/lib/c/blobs/${b.digest}`]);

    // An upstream HEAD without a length, for a blob no manifest describes: no length to give either.
    const n = addBlob(700, 'lib/a');
    faults.set(`HEAD ${n.digest}`, (_req, res) => void res.writeHead(200, { 'Docker-Content-Digest': n.digest }).end());
    try {
      const h = await fetch(url('fake/lib/a', n.digest), { method: 'HEAD' });
      expect(h.status).toBe(200);
      expect(h.headers.get('docker-content-digest')).toBe(n.digest);
      expect(h.headers.get('content-length')).not.toBe('undefined');
    } finally {
      faults.delete(`HEAD ${n.digest}`);
    }
  });

  it('an upstream failure: the client gets an error, nothing enters the store, nothing stays locked, and the next GET fetches again', async () => {
    type Case = { name: string; answer: (res: http.ServerResponse, bytes: Buffer) => void; status?: number; code?: string; headers?: Record<string, string> };
    const cases: Case[] = [
      // Same length, other bytes: headers went out, so the client sees a cut connection, never a whole wrong body.
      { name: 'wrong bytes', answer: (res, bytes) => res.writeHead(200, { 'Content-Length': String(bytes.length) }).end(randomBytes(bytes.length)) },
      {
        name: 'truncated',
        answer: (res, bytes) => {
          res.writeHead(200, { 'Content-Length': String(bytes.length) });
          res.write(bytes.subarray(0, 100), () => setTimeout(() => res.socket?.destroy(), 20));
        },
      },
      { name: '500', answer: (res) => res.writeHead(500).end(), status: 502, code: 'UNAVAILABLE' },
      { name: '429', answer: (res) => res.writeHead(429, { 'Retry-After': '7' }).end(), status: 429, code: 'TOOMANYREQUESTS', headers: { 'retry-after': '7' } },
      { name: '404', answer: (res) => res.writeHead(404).end(), status: 404, code: 'BLOB_UNKNOWN' },
    ];
    for (const k of cases) {
      const b = addBlob(4000, 'lib/a');
      faults.set(b.digest, (_req, res) => k.answer(res, b.bytes));
      const before = await storeEntries();
      const r = await fetch(url('fake/lib/a', b.digest));
      if (k.status === undefined) {
        expect(r.status, k.name).toBe(200);
        expect(await bodyOf(r), k.name).toBe('broken');
      } else {
        expect(r.status, k.name).toBe(k.status);
        expect((await codes(r)).map((e) => e.code), k.name).toEqual([k.code]);
        for (const [h, v] of Object.entries(k.headers ?? {})) expect(r.headers.get(h), k.name).toBe(v);
      }
      await until(`${k.name}: the fill lock released`, async () => (await fillLocks()).length === 0);
      expect(await storeEntries(), k.name).toEqual(before);
      faults.delete(b.digest);
      const ok = await fetch(url('fake/lib/a', b.digest));
      expect(ok.status, k.name).toBe(200);
      expect(sha256Digest((await bodyOf(ok)) as Buffer), k.name).toBe(b.digest);
      expect(fakeRequests(b.digest).filter((x) => x.startsWith('GET')).length, k.name).toBe(2);
      await until(`${k.name}: the good copy stored`, async () => (await storeEntries()).includes(b.digest.slice('sha256:'.length)) && (await fillLocks()).length === 0);
    }
    await server.pullThrough!.committer.idle();
    // Blobs alone are no image: nothing of lib/a is published.
    expect(await fs.stat(l.app('fake/lib/a')).catch(() => 'absent')).toBe('absent');
  });

  it('never sent upstream: a digest that is not sha256, a published repo\'s name, a blob a Never route lacks, a foreign layer', async () => {
    const sha512 = `sha512:${'ab'.repeat(64)}`;
    const r1 = await fetch(url('fake/lib/a', sha512));
    expect(r1.status).toBe(404);
    expect((await codes(r1)).map((e) => e.code)).toEqual(['BLOB_UNKNOWN']);
    expect(fakeRequests(sha512)).toEqual([]);

    const pub = addBlob(3000, 'lib/pub');
    // Not published yet, so its protection is unknown: the access decision fails closed.
    expect((await fetch(url('fake/lib/pub', pub.digest))).status).toBe(401);
    expect(fakeRequests(pub.digest)).toEqual([]);

    const b = addBlob(3000, 'lib/a');
    for (const method of ['GET', 'HEAD']) {
      const r = await fetch(url('never/lib/a', b.digest), { method });
      expect(r.status, method).toBe(404);
      if (method === 'GET') expect((await codes(r)).map((e) => e.code)).toEqual(['BLOB_UNKNOWN']);
    }
    expect(fakeRequests(b.digest)).toEqual([]);
    // Nor is a Never route greeted at start: the fake had two /v2/ pings, from the fake and slow routes.
    expect(fake.requests.filter((r) => r.url === '/v2/').length).toBe(2);

    // A manifest whose second layer lists URLs: that layer is the client's to fetch from them.
    const layer = randomBytes(2000);
    const foreign = { mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: sha256Digest(layer), size: layer.length, urls: ['https://example.invalid/layer'] };
    const f = fakeImage('f');
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: f.configDigest, size: f.config.length },
        layers: [{ mediaType: MediaType.ociLayerGzip, digest: f.layerDigest, size: f.layer.length }, foreign],
      }),
    );
    repos['lib/f']!.tags.v2 = sha256Digest(manifest);
    repos['lib/f']!.manifests[sha256Digest(manifest)] = { bytes: manifest, mediaType: MediaType.ociManifest };
    expect((await fetch(`${server.url}/v2/fake/lib/f/manifests/v2`, { headers: { Accept: ACCEPT } })).status).toBe(200);
    const r2 = await fetch(url('fake/lib/f', foreign.digest));
    expect(r2.status).toBe(404);
    const errs = await codes(r2);
    expect(errs.map((e) => e.code)).toEqual(['BLOB_UNKNOWN']);
    expect(errs[0]!.message).toMatch(/foreign layer/);
    expect(errs[0]!.detail).toEqual({ name: 'fake/lib/f', digest: foreign.digest });
    expect(fakeRequests(foreign.digest)).toEqual([]);
  });

  it('a HEAD the upstream answers slower than the route timeout is a 504', async () => {
    const b = addBlob(1000, 'lib/a');
    faults.set(`HEAD ${b.digest}`, (_req, res) => void setTimeout(() => res.writeHead(200, { 'Content-Length': '1000' }).end(), 3000));
    try {
      const r = await fetch(url('slow/lib/a', b.digest), { method: 'HEAD' });
      expect(r.status).toBe(504);
      const g = await fetch(url('slow/lib/a', `sha256:${'0'.repeat(64)}`));
      expect(g.status).toBe(404);
    } finally {
      faults.delete(`HEAD ${b.digest}`);
    }
  });

  it('a blob a manifest describes streams to the client before the upstream body ends, even without Content-Length', async () => {
    const f = fakeImage('stream');
    const big = randomBytes(200_000);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: f.configDigest, size: f.config.length },
        layers: [{ mediaType: MediaType.ociLayerGzip, digest: sha256Digest(big), size: big.length }],
      }),
    );
    const repo = repos['lib/f']!;
    repo.tags.stream = sha256Digest(manifest);
    repo.manifests[sha256Digest(manifest)] = { bytes: manifest, mediaType: MediaType.ociManifest };
    repo.blobs[sha256Digest(big)] = big;
    const release = deferred();
    faults.set(sha256Digest(big), (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' }); // chunked: no size from the upstream
      res.write(big.subarray(0, 100_000));
      void release.promise.then(() => res.end(big.subarray(100_000)));
    });
    try {
      expect((await fetch(`${server.url}/v2/fake/lib/f/manifests/stream`, { headers: { Accept: ACCEPT } })).status).toBe(200);
      const pending = fetch(url('fake/lib/f', sha256Digest(big)));
      const first = await Promise.race([pending, new Promise<'held'>((r) => setTimeout(() => r('held'), 3000))]);
      expect(first === 'held' ? 'held until the body ended' : first.headers.get('content-length')).toBe(String(big.length));
      release.resolve();
      const r = await pending;
      expect(sha256Digest((await bodyOf(r)) as Buffer)).toBe(sha256Digest(big));
    } finally {
      release.resolve();
      faults.delete(sha256Digest(big));
    }
  });

  it('a fill another repo started is joined only once this repo\'s upstream confirms the digest (invariant 9)', async () => {
    const b = addBlob(50_000, 'lib/a', 'lib/c'); // lib/b's upstream repo does not have it
    const release = deferred();
    faults.set(b.digest, (_req, res) => {
      res.writeHead(200, { 'Content-Length': String(b.bytes.length) });
      res.write(b.bytes.subarray(0, 10_000));
      void release.promise.then(() => res.end(b.bytes.subarray(10_000)));
    });
    try {
      const first = fetch(url('fake/lib/a', b.digest));
      await until('the fill running', () => fakeRequests(b.digest).length === 1);
      const other = await fetch(url('fake/lib/b', b.digest));
      expect(other.status).toBe(404);
      expect((await codes(other)).map((e) => e.code)).toEqual(['BLOB_UNKNOWN']);
      const sharer = fetch(url('fake/lib/c', b.digest));
      await until('lib/c proved it', () => fakeRequests(b.digest).length === 3, 3000);
      release.resolve();
      for (const r of await Promise.all([first, sharer])) {
        expect(r.status).toBe(200);
        expect(sha256Digest((await bodyOf(r)) as Buffer)).toBe(b.digest);
      }
      expect(fakeRequests(b.digest)).toEqual([`GET /v2/lib/a/blobs/${b.digest}`, `HEAD /v2/lib/b/blobs/${b.digest}`, `HEAD /v2/lib/c/blobs/${b.digest}`]);
    } finally {
      release.resolve();
      faults.delete(b.digest);
    }
  });

  it('another process holding the fill lock: the request waits, then serves what that process stored, with no GET of its own', async () => {
    const b = addBlob(6000, 'lib/a');
    const hex = b.digest.slice('sha256:'.length);
    await fs.mkdir(l.locksDir, { recursive: true });
    const lockFile = path.join(l.locksDir, `fill-${hex}.lock`);
    // Our own pid: a live holder (the lock code cannot tell it from another worker's).
    await fs.writeFile(lockFile, `${process.pid}\n${new Date().toISOString()}\n`);
    let done = false;
    const pending = fetch(url('fake/lib/a', b.digest)).finally(() => (done = true));
    try {
      await new Promise((r) => setTimeout(r, 400));
      expect(done).toBe(false);
      expect(fakeRequests(b.digest)).toEqual([]);
      await fs.writeFile(l.storeBlob(b.digest), b.bytes);
    } finally {
      await fs.rm(lockFile, { force: true });
    }
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe('6000');
    expect(sha256Digest((await bodyOf(r)) as Buffer)).toBe(b.digest);
    // Not fetched here, so not proven here: confirmed with a HEAD at this repo's upstream.
    expect(fakeRequests(b.digest)).toEqual([`HEAD /v2/lib/a/blobs/${b.digest}`]);
  });
});
