// Pull-ahead in process: a GET of an image manifest starts the fills of its config and layers in
// manifest order, at most `concurrency - 1` at once per route, skips foreign layers, indexes,
// HEADs and routes with pull-ahead off; a client asking for a blob joins the running fill; a
// failed fill doesn't stop the queue; a fill another repo started doesn't hold a slot. The fake
// upstream (shared/registry/testing.ts) holds blob answers on demand and counts them.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { layout, type Layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { registryRoutes, startServer as startFake, type FakeRepo, type TestServer } from '../../shared/registry/testing.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { startServer, type RunningServer } from '../serve.js';

const ACCEPT = `${MediaType.ociManifest}, ${MediaType.ociIndex}`;

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Img {
  tag: string;
  config: string;
  layers: string[];
  /** Every blob digest the manifest names, config first. */
  blobs: string[];
}

describe('pull-ahead in process', () => {
  let tmp: TmpDir;
  let fake: TestServer;
  let server: RunningServer;
  let l: Layout;
  const repos: Record<string, FakeRepo> = {};
  /** digest -> a promise the fake waits for before it answers a GET of it. */
  const holds = new Map<string, Promise<unknown>>();
  /** digest -> a status the fake answers instead of the blob. */
  const failures = new Map<string, number>();
  let inFlight = 0;
  let maxInFlight = 0;

  const blobGets = () => fake.requests.filter((r) => r.method === 'GET' && r.url.includes('/blobs/')).map((r) => r.url.slice(r.url.lastIndexOf('/') + 1));
  const getsOf = (digest: string) => blobGets().filter((d) => d === digest).length;
  const manifest = (name: string, ref: string, method = 'GET') => fetch(`${server.url}/v2/${name}/manifests/${ref}`, { method, headers: { Accept: ACCEPT } }).then(async (r) => (await r.arrayBuffer(), r.status));
  const published = async (name: string) => {
    const text = await fs.readFile(l.app(name), 'utf8').catch(() => undefined);
    return text ? (JSON.parse(text) as { derrick: { tags: Record<string, string>; blobs: Record<string, number> } }).derrick : undefined;
  };

  /** An image of random blobs in a fake upstream repo; `foreign` adds a last layer with URLs, never served. */
  const addImage = (repo: string, tag: string, layerSizes: number[], opts: { foreign?: boolean; reuse?: Buffer[] } = {}): Img => {
    const r = (repos[repo] ??= { tags: {}, manifests: {}, blobs: {} });
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: randomBytes(8).toString('hex') }));
    const layers = [...(opts.reuse ?? []), ...layerSizes.map((n) => randomBytes(n))];
    for (const b of [config, ...layers]) r.blobs[sha256Digest(b)] = b;
    const descs: Array<Record<string, unknown>> = layers.map((b) => ({ mediaType: MediaType.ociLayerGzip, digest: sha256Digest(b), size: b.length }));
    if (opts.foreign) descs.push({ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: sha256Digest(randomBytes(64)), size: 64, urls: ['https://example.invalid/l'] });
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length }, layers: descs }));
    r.manifests[sha256Digest(bytes)] = { bytes, mediaType: MediaType.ociManifest };
    r.tags[tag] = sha256Digest(bytes);
    const ds = layers.map((b) => sha256Digest(b));
    return { tag, config: sha256Digest(config), layers: ds, blobs: [sha256Digest(config), ...ds] };
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-pt-ahead');
    const routes = registryRoutes(repos);
    fake = await startFake(async (req: http.IncomingMessage, res: http.ServerResponse) => {
      const manifest = /\/manifests\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
      if (manifest && req.method === 'GET') await holds.get(manifest);
      const digest = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(req.url ?? '')?.[1];
      if (!digest || req.method !== 'GET') return routes(req, res);
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      res.once('close', () => inFlight--);
      await holds.get(digest);
      const status = failures.get(digest);
      if (status) return void res.writeHead(status).end();
      return routes(req, res);
    });
    l = layout(path.join(tmp.dir, 'var'));
    const route = (prefix: string, extra: string[]) => [`  - prefix: ${prefix}`, `    url: ${JSON.stringify(fake.origin)}`, ...extra.map((x) => `    ${x}`)];
    const yaml = ['root: ./var', 'grace: 10m', 'upstreams:', ...route('pa', ['concurrency: 3']), ...route('one', ['concurrency: 2']), ...route('off', ['pull-ahead: false']), ''].join('\n');
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
  });
  afterAll(async () => {
    await server?.close();
    await fake?.close();
    await tmp?.cleanup();
  });

  it('a manifest GET fills config then layers, concurrency - 1 at once, skips the foreign layer, and the image commits with no blob asked for', async () => {
    const img = addImage('lib/a', 'v1', [3000, 3000, 3000, 3000], { foreign: true });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    for (const d of img.blobs) holds.set(d, held);
    maxInFlight = 0;
    try {
      expect(await manifest('pa/lib/a', 'v1')).toBe(200);
      await until('two fills at the upstream', () => inFlight === 2);
      await sleep(200);
      expect(inFlight).toBe(2);
      expect(new Set(blobGets().filter((d) => img.blobs.includes(d)))).toEqual(new Set(img.blobs.slice(0, 2)));
    } finally {
      release();
    }
    await until('every blob stored', async () => (await Promise.all(img.blobs.map((d) => fs.stat(l.storeBlob(d)).then(() => true, () => false)))).every(Boolean));
    expect(maxInFlight).toBe(2);
    // Config and first layer first (in either order; the strict order is pinned with one slot below); each once.
    expect(new Set(blobGets().filter((d) => img.blobs.includes(d)).slice(2))).toEqual(new Set(img.blobs.slice(2)));
    for (const d of img.blobs) expect(getsOf(d), d).toBe(1);
    expect(blobGets().filter((d) => !Object.keys(repos['lib/a']!.blobs).includes(d))).toEqual([]);
    await server.pullThrough!.committer.idle();
    await until('the image published', async () => (await published('pa/lib/a'))?.tags.v1 === repos['lib/a']!.tags.v1);
    expect(Object.keys((await published('pa/lib/a'))!.blobs).sort()).toEqual([...img.blobs].sort());
  });

  it('a client asking for a blob joins its pull-ahead fill; a manifest served twice fills each blob once', async () => {
    const img = addImage('lib/b', 'v1', [20_000, 20_000]);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    holds.set(img.layers[0]!, held);
    try {
      expect(await manifest('one/lib/b', 'v1')).toBe(200);
      await until('the layer fill at the upstream', () => getsOf(img.layers[0]!) === 1);
      expect(await manifest('one/lib/b', 'v1')).toBe(200);
      const client = fetch(`${server.url}/v2/one/lib/b/blobs/${img.layers[0]}`).then(async (r) => ({ status: r.status, bytes: Buffer.from(await r.arrayBuffer()) }));
      await sleep(100);
      release();
      const got = await client;
      expect(got.status).toBe(200);
      expect(sha256Digest(got.bytes)).toBe(img.layers[0]);
    } finally {
      release();
    }
    await until('every blob stored', async () => (await Promise.all(img.blobs.map((d) => fs.stat(l.storeBlob(d)).then(() => true, () => false)))).every(Boolean));
    await sleep(100);
    for (const d of img.blobs) expect(getsOf(d), d).toBe(1);
  });

  it('clients asking at once for an uncached tag share one upstream manifest fetch, counted as joins', async () => {
    const img = addImage('lib/j', 'v1', [500]);
    const digest = repos['lib/j']!.tags.v1!;
    let release!: () => void;
    holds.set(digest, new Promise<void>((r) => (release = r)));
    const text = async () => (await fetch(`${server.url}/metrics`)).text();
    const joins = async () => Number(/^derrick_cache_singleflight_joins_total (\S+)$/m.exec(await text())?.[1] ?? 0);
    const before = await joins();
    try {
      const gets = [1, 2, 3].map(() => manifest('off/lib/j', 'v1'));
      await until('two joined', async () => (await joins()) - before === 2, 5000);
      release();
      expect(await Promise.all(gets)).toEqual([200, 200, 200]);
    } finally {
      release();
    }
    const calls = fake.requests.filter((r) => r.url.startsWith('/v2/lib/j/manifests/')).map((r) => `${r.method} ${r.url}`);
    expect(calls).toEqual([`HEAD /v2/lib/j/manifests/v1`, `GET /v2/lib/j/manifests/${digest}`]);
    expect(img.blobs.map(getsOf)).toEqual(img.blobs.map(() => 0));
  });

  it('no pull-ahead for a HEAD, an index, or a route with pull-ahead off', async () => {
    const img = addImage('lib/c', 'v1', [1000]);
    const offImg = addImage('lib/d', 'v1', [1000]);
    const child = repos['lib/c']!.tags.v1!;
    const index = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ mediaType: MediaType.ociManifest, digest: child, size: repos['lib/c']!.manifests[child]!.bytes.length, platform: { os: 'linux', architecture: 'amd64' } }] }),
    );
    repos['lib/c']!.manifests[sha256Digest(index)] = { bytes: index, mediaType: MediaType.ociIndex };
    repos['lib/c']!.tags.multi = sha256Digest(index);
    expect(await manifest('pa/lib/c', 'v1', 'HEAD')).toBe(200);
    expect(await manifest('pa/lib/c', 'multi')).toBe(200);
    expect(await manifest('off/lib/d', 'v1')).toBe(200);
    await sleep(300);
    for (const d of [...img.blobs, ...offImg.blobs]) expect(getsOf(d), d).toBe(0);
  });

  it('a failed fill does not stop the queue; the manifest served again fetches it again', async () => {
    const img = addImage('lib/e', 'v1', [2000, 2000]);
    failures.set(img.layers[0]!, 500);
    expect(await manifest('one/lib/e', 'v1')).toBe(200);
    await until('the later layer stored', async () => fs.stat(l.storeBlob(img.layers[1]!)).then(() => true, () => false));
    expect(getsOf(img.layers[0]!)).toBe(1);
    // One slot (concurrency 2): one fill after the other, in manifest order.
    expect(blobGets().filter((d) => img.blobs.includes(d))).toEqual(img.blobs);
    failures.delete(img.layers[0]!);
    // The manifest served again queues what is still missing (a finished job leaves the queue's set).
    expect(await manifest('one/lib/e', 'v1')).toBe(200);
    await until('the failed layer fetched again', async () => fs.stat(l.storeBlob(img.layers[0]!)).then(() => true, () => false));
    expect(getsOf(img.layers[0]!)).toBe(2);
    const r = await fetch(`${server.url}/v2/one/lib/e/blobs/${img.layers[0]}`);
    expect(r.status).toBe(200);
    expect(sha256Digest(Buffer.from(await r.arrayBuffer()))).toBe(img.layers[0]);
    expect(getsOf(img.layers[0]!)).toBe(2);
    for (const d of [img.config, img.layers[1]!]) expect(getsOf(d), d).toBe(1);
  });

  it('layers that cannot be filled (a sha512 digest, an impossible size) are skipped and leave no fill lock behind', async () => {
    const img = addImage('lib/w', 'v1', [700]);
    const r = repos['lib/w']!;
    const doc = JSON.parse(r.manifests[r.tags.v1!]!.bytes.toString()) as { layers: Array<Record<string, unknown>> };
    const sha512 = `sha512:${'ab'.repeat(64)}`;
    doc.layers.unshift({ mediaType: MediaType.ociLayerGzip, digest: sha512, size: 10 }, { mediaType: MediaType.ociLayerGzip, digest: img.layers[0], size: -1 });
    const bytes = Buffer.from(JSON.stringify(doc));
    r.manifests[sha256Digest(bytes)] = { bytes, mediaType: MediaType.ociManifest };
    r.tags.odd = sha256Digest(bytes);
    expect(await manifest('one/lib/w', 'odd')).toBe(200);
    // The config, after the two odd layers, is filled: the queue went past them.
    await until('the config stored', async () => fs.stat(l.storeBlob(img.config)).then(() => true, () => false));
    await sleep(100);
    expect(fake.requests.filter((x) => x.url.includes(sha512))).toEqual([]);
    expect((await fs.readdir(l.locksDir)).filter((f) => f.startsWith('fill-'))).toEqual([]);
    // The client asking for the layer with the impossible size gets an error, and no lock stays either.
    const b = await fetch(`${server.url}/v2/one/lib/w/blobs/${img.layers[0]}`);
    expect(b.status).toBe(502);
    expect((await fs.readdir(l.locksDir)).filter((f) => f.startsWith('fill-'))).toEqual([]);
  });

  it('a running fill another repo started does not hold a pull-ahead slot', async () => {
    const shared = randomBytes(30_000);
    const s = sha256Digest(shared);
    (repos['lib/x'] ??= { tags: {}, manifests: {}, blobs: {} }).blobs[s] = shared;
    const img = addImage('lib/y', 'v1', [1000], { reuse: [shared] });
    let release!: () => void;
    holds.set(s, new Promise<void>((r) => (release = r)));
    try {
      const other = fetch(`${server.url}/v2/one/lib/x/blobs/${s}`).then(async (r) => (await r.arrayBuffer(), r.status));
      await until('lib/x filling', () => getsOf(s) === 1);
      expect(await manifest('one/lib/y', 'v1')).toBe(200);
      // One slot (concurrency 2): the layer after the shared one is fetched while that fill is still held.
      await until('the next layer fetched', () => getsOf(img.layers[1]!) === 1, 5000);
      release();
      expect(await other).toBe(200);
    } finally {
      release();
    }
    expect(getsOf(s)).toBe(1);
  });
});
