// The cache commit in process: a pulled image becomes an ordinary publish (web and app links to
// one master, the repo state), two serve processes on one root keep each other's tags, above
// cache.max-size the least recently pulled image is unpublished and only its unshared blobs
// deleted, old masters go by keep/grace, an index is republished when more children complete,
// a manifest gc took from the store is put back, and a restart counts what was committed.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
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
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Img {
  digest: string;
  manifestSize: number;
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number }>;
  /** Config and layers. */
  blobs: string[];
}

interface Published {
  tags: Record<string, string>;
  manifests: Record<string, unknown>;
  blobs: Record<string, number>;
}

describe('pull-through commit in process', () => {
  let tmp: TmpDir;
  let fake: TestServer;
  const repos: Record<string, FakeRepo> = {};
  const servers: RunningServer[] = [];
  let n = 0;

  /** An image of the given layers (new random ones for numbers, given bytes as they are) under repo:tag. */
  const addImage = (repo: string, tag: string, layers: Array<number | Buffer>): Img => {
    const r = (repos[repo] ??= { tags: {}, manifests: {}, blobs: {} });
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed: randomBytes(8).toString('hex') }));
    const bufs = layers.map((x) => (typeof x === 'number' ? randomBytes(x) : x));
    for (const b of [config, ...bufs]) r.blobs[sha256Digest(b)] = b;
    const desc = (b: Buffer, mediaType: string) => ({ mediaType, digest: sha256Digest(b), size: b.length });
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: desc(config, MediaType.ociConfig), layers: bufs.map((b) => desc(b, MediaType.ociLayerGzip)) }));
    r.manifests[sha256Digest(bytes)] = { bytes, mediaType: MediaType.ociManifest };
    r.tags[tag] = sha256Digest(bytes);
    const ls = bufs.map((b) => ({ digest: sha256Digest(b), size: b.length }));
    return { digest: sha256Digest(bytes), manifestSize: bytes.length, config: { digest: sha256Digest(config), size: config.length }, layers: ls, blobs: [sha256Digest(config), ...ls.map((x) => x.digest)] };
  };

  /** A derrick serve in this process on `root` (a fresh one unless given), with a route `c` to the fake upstream. */
  const serve = async (lines: string[], root = `var${n++}`): Promise<{ server: RunningServer; l: Layout }> => {
    const yaml = [`root: ./${root}`, ...lines, 'upstreams:', '  - prefix: c', `    url: ${JSON.stringify(fake.origin)}`, ''].join('\n');
    const file = path.join(tmp.dir, `derrick-${n++}.yaml`);
    await fs.writeFile(file, yaml);
    const server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
    servers.push(server);
    return { server, l: layout(path.join(tmp.dir, root)) };
  };
  const close = async (s: RunningServer) => {
    servers.splice(servers.indexOf(s), 1);
    await s.close();
  };
  /** A client's pull: the manifest by tag, then every blob (pull-ahead may have them filling already). */
  const pull = async (s: RunningServer, name: string, ref: string, img: Img, l?: Layout) => {
    const m = await fetch(`${s.url}/v2/${name}/manifests/${ref}`, { headers: { Accept: ACCEPT } });
    expect(m.status, `${name}:${ref}`).toBe(200);
    await m.arrayBuffer();
    for (const d of img.blobs) {
      const b = await fetch(`${s.url}/v2/${name}/blobs/${d}`, { redirect: 'manual' });
      expect(b.status, d).toBeLessThan(400);
      await b.arrayBuffer();
    }
    // A client has its bytes once they are verified, a moment before the fill's rename and the
    // commit it schedules: wait for those, then for the commit.
    if (l) await until(`${name}: blobs stored`, async () => (await Promise.all(img.blobs.map((d) => inStore(l, d)))).every(Boolean));
    await sleep(50);
    await s.pullThrough!.committer.idle();
  };
  const published = async (l: Layout, name: string): Promise<Published | undefined> => {
    const text = await fs.readFile(l.app(name), 'utf8').catch(() => undefined);
    return text ? (JSON.parse(text) as { derrick: Published }).derrick : undefined;
  };
  const inStore = (l: Layout, d: string) => fs.stat(l.storeBlob(d)).then(() => true, () => false);
  const metric = async (s: RunningServer, name: string) => {
    const text = await (await fetch(`${s.url}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-pt-commit');
    fake = await startFake(registryRoutes(repos));
  });
  afterAll(async () => {
    for (const s of [...servers]) await s.close();
    await fake?.close();
    await tmp?.cleanup();
  });

  it('a pulled image is published: web and app on one master, repo state; old masters go by keep and grace', async () => {
    const v1 = addImage('lib/k', 'v1', [3000]);
    const v2 = addImage('lib/k', 'v2', [3000]);
    const { server, l } = await serve(['keep: 0', 'grace: 0s', 'serve:', '  blobs: http://cdn.example.invalid/base/']);
    await pull(server, 'c/lib/k', 'v1', v1, l);
    const p1 = await published(l, 'c/lib/k');
    // The publish names where its files are served: serve.blobs.
    const file = JSON.parse(await fs.readFile(l.app('c/lib/k'), 'utf8')) as { url: string };
    expect(file.url).toBe(`http://cdn.example.invalid/base/${l.masterUrlPath('c/lib/k', path.basename(path.dirname(await fs.readlink(l.app('c/lib/k')))))}`);
    expect(p1?.tags).toEqual({ v1: v1.digest });
    expect(Object.keys(p1!.blobs).sort()).toEqual([...v1.blobs].sort());
    const master1 = path.basename(await fs.readlink(l.web('c/lib/k')));
    expect(path.basename(path.dirname(await fs.readlink(l.app('c/lib/k'))))).toBe(master1);
    const state = JSON.parse(await fs.readFile(l.repoState('c/lib/k'), 'utf8')) as { source: string; tags: Record<string, string> };
    expect(state.source).toBe('pull-through:lib/k');
    expect(state.tags).toEqual({ v1: v1.digest });
    expect(server.pullThrough!.committer.usage()).toEqual({ images: 1, bytes: v1.manifestSize + v1.config.size + v1.layers[0]!.size });
    expect(await fs.stat(l.cacheProof('c/lib/k')).then(() => 'saved', () => 'missing')).toBe('saved');
    // Committed and proven: the next GET of a blob is a static redirect to where serve.blobs serves it.
    const hit = await fetch(`${server.url}/v2/c/lib/k/blobs/${v1.layers[0]!.digest}`, { redirect: 'manual' });
    expect(hit.status).toBe(307);
    expect(hit.headers.get('location')).toMatch(/^http:\/\/cdn\.example\.invalid\/base\//);
    // Every blob was fetched for this repo: the commit needs no confirmation from the upstream.
    expect(fake.requests.filter((r) => r.method === 'HEAD' && r.url.startsWith('/v2/lib/k/blobs/'))).toEqual([]);

    await sleep(20); // master names carry the time
    await pull(server, 'c/lib/k', 'v2', v2, l);
    expect((await published(l, 'c/lib/k'))?.tags).toEqual({ v1: v1.digest, v2: v2.digest });
    const master2 = path.basename(await fs.readlink(l.web('c/lib/k')));
    expect(master2).not.toBe(master1);
    // keep 0, grace 0: the first master is out of service and goes at once.
    expect((await fs.readdir(l.masterDir('c/lib/k'))).filter((x) => !x.startsWith('.'))).toEqual([master2]);
    await close(server);
  });

  it('two serve processes on one root keep each other\'s tags in the commit', async () => {
    const v1 = addImage('lib/m', 'v1', [2000]);
    const v2 = addImage('lib/m', 'v2', [2000]);
    const a = await serve([], 'shared-root');
    const b = await serve([], 'shared-root');
    await pull(a.server, 'c/lib/m', 'v1', v1, a.l);
    expect((await published(a.l, 'c/lib/m'))?.tags).toEqual({ v1: v1.digest });
    await pull(b.server, 'c/lib/m', 'v2', v2, b.l);
    const p = await published(a.l, 'c/lib/m');
    expect(p?.tags).toEqual({ v1: v1.digest, v2: v2.digest });
    expect(Object.keys(p!.blobs).sort()).toEqual([...v1.blobs, ...v2.blobs].sort());
    await close(a.server);
    await close(b.server);
  });

  it('above max-size the least recently pulled image is unpublished, its unshared blobs deleted and refetched on the next pull', async () => {
    const shared = randomBytes(4000);
    const p = addImage('lib/p', 'v1', [shared, 8000]);
    const q = addImage('lib/q', 'v1', [shared, 8000]);
    const r = addImage('lib/r', 'v1', [8000]);
    const t = addImage('lib/t', 'v1', [1000]);
    // An image that never completes (its layer is missing upstream): a cached repo with nothing committed.
    const u = addImage('lib/u', 'v1', [1000]);
    delete repos['lib/u']!.blobs[u.layers[0]!.digest];
    const sizeOf = (i: Img) => i.manifestSize + i.config.size + i.layers.reduce((s, x) => s + x.size, 0);
    // Exactly p and q (their shared layer counted once): at the limit is not above it.
    const max = sizeOf(p) + sizeOf(q) - shared.length;
    const { server, l } = await serve(['cache:', `  max-size: ${max}`]);
    await pull(server, 'c/lib/p', 'v1', p, l);
    await sleep(5);
    await pull(server, 'c/lib/q', 'v1', q, l);
    expect(server.pullThrough!.committer.usage()).toEqual({ images: 2, bytes: max });
    expect(await metric(server, 'derrick_cache_evictions_total')).toBe(0);
    await sleep(5);
    // p is pulled again: q is now the least recently pulled.
    expect((await fetch(`${server.url}/v2/c/lib/p/manifests/v1`, { headers: { Accept: ACCEPT } })).status).toBe(200);
    expect((await fetch(`${server.url}/v2/c/lib/u/manifests/v1`, { headers: { Accept: ACCEPT } })).status).toBe(200);
    await sleep(5);
    await pull(server, 'c/lib/r', 'v1', r, l);

    expect(await metric(server, 'derrick_cache_evictions_total')).toBe(1);
    for (const f of [l.app('c/lib/q'), l.web('c/lib/q'), l.repoState('c/lib/q'), l.cacheProof('c/lib/q')]) expect(await fs.lstat(f).catch(() => 'gone'), f).toBe('gone');
    expect((await published(l, 'c/lib/p'))?.tags).toEqual({ v1: p.digest });
    expect((await published(l, 'c/lib/r'))?.tags).toEqual({ v1: r.digest });
    expect(await inStore(l, q.layers[1]!.digest)).toBe(false);
    expect(await inStore(l, q.config.digest)).toBe(false);
    expect(await inStore(l, sha256Digest(shared))).toBe(true);
    expect(await inStore(l, p.layers[1]!.digest)).toBe(true);
    expect(server.pullThrough!.committer.usage()).toEqual({ images: 2, bytes: sizeOf(p) + sizeOf(r) });

    // A served redirect file names blobs too: with a copy of p's in app/, evicting p keeps them.
    await fs.writeFile(path.join(l.appDir, 'keeper.json'), await fs.readFile(l.app('c/lib/p')));
    await sleep(5);
    await pull(server, 'c/lib/t', 'v1', t, l);
    expect(await metric(server, 'derrick_cache_evictions_total')).toBe(2);
    expect(await fs.lstat(l.app('c/lib/p')).catch(() => 'gone')).toBe('gone');
    for (const d of p.blobs) expect(await inStore(l, d), d).toBe(true);

    // A repo state names blobs too (a commit between its state and its swap): with a copy of r's,
    // evicting r keeps them. And evicted means fetched again: q's manifest too, not served from memory.
    // The copy names r's layer only; r's config and manifest go. Beside it: files that name
    // nothing (not JSON, JSON that is no repo state) and, in app/, a dot file (a swap's temp),
    // which protects nothing either.
    const rState = JSON.parse(await fs.readFile(l.repoState('c/lib/r'), 'utf8')) as { manifests: object; blobs: Record<string, number>; manifestBlobs: object };
    const kept = { ...rState, manifests: {}, manifestBlobs: {}, blobs: { [r.layers[0]!.digest]: r.layers[0]!.size } };
    await fs.writeFile(path.join(l.repoStateDir, 'keeper-r.json'), JSON.stringify(kept));
    await fs.writeFile(path.join(l.repoStateDir, 'notes.txt'), 'not a repo state');
    await fs.writeFile(path.join(l.repoStateDir, 'other.json'), '{}');
    await fs.writeFile(path.join(l.appDir, '.pending.json'), await fs.readFile(l.app('c/lib/r')));
    const manifestGets = () => fake.requests.filter((x) => x.method === 'GET' && x.url === `/v2/lib/q/manifests/${q.digest}`).length;
    const before = manifestGets();
    await sleep(5);
    await pull(server, 'c/lib/q', 'v1', q, l);
    expect(manifestGets()).toBe(before + 1);
    expect(await metric(server, 'derrick_cache_evictions_total')).toBe(3);
    expect(await fs.lstat(l.app('c/lib/r')).catch(() => 'gone')).toBe('gone');
    expect(await inStore(l, r.layers[0]!.digest)).toBe(true);
    for (const d of [r.config.digest, r.digest]) expect(await inStore(l, d), d).toBe(false);
    expect((await published(l, 'c/lib/q'))?.tags).toEqual({ v1: q.digest });
    await close(server);
  });

  it('an index is republished when a child completes after its first commit', async () => {
    const one = addImage('lib/i', 'one', [1500]);
    const two = addImage('lib/i', 'two', [1500]);
    const repo = repos['lib/i']!;
    const child = (i: Img, arch: string) => ({ mediaType: MediaType.ociManifest, digest: i.digest, size: i.manifestSize, platform: { os: 'linux', architecture: arch } });
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [child(one, 'amd64'), child(two, 'arm64')] }));
    repo.manifests[sha256Digest(index)] = { bytes: index, mediaType: MediaType.ociIndex };
    repo.tags.multi = sha256Digest(index);
    const { server, l } = await serve([]);
    const get = async (ref: string) => {
      const r = await fetch(`${server.url}/v2/c/lib/i/manifests/${ref}`, { headers: { Accept: ACCEPT } });
      expect(r.status, ref).toBe(200);
      await r.arrayBuffer();
    };
    await get('multi');
    await pull(server, 'c/lib/i', one.digest, one, l);
    const first = await published(l, 'c/lib/i');
    expect(first?.tags).toEqual({ multi: sha256Digest(index) });
    // serve.blobs embedded: the publish names its files by their path on this server.
    const url = (JSON.parse(await fs.readFile(l.app('c/lib/i'), 'utf8')) as { url: string }).url;
    expect(url).toBe(l.masterUrlPath('c/lib/i', path.basename(path.dirname(await fs.readlink(l.app('c/lib/i'))))));
    expect(Object.keys(first!.manifests).sort()).toEqual([sha256Digest(index), one.digest].sort());
    await get('multi');
    await pull(server, 'c/lib/i', two.digest, two, l);
    const second = await published(l, 'c/lib/i');
    expect(Object.keys(second!.manifests).sort()).toEqual([sha256Digest(index), one.digest, two.digest].sort());
    expect(Object.keys(second!.blobs).sort()).toEqual([...one.blobs, ...two.blobs].sort());
    await close(server);
  });

  it('a manifest that left the store before its image completed is put back, and the image commits', async () => {
    const img = addImage('lib/g', 'v1', [2500]);
    const { server, l } = await serve([]);
    const m = await fetch(`${server.url}/v2/c/lib/g/manifests/v1`, { headers: { Accept: ACCEPT } });
    expect(m.status).toBe(200);
    await m.arrayBuffer();
    // Pull-ahead fills the blobs; take the manifest out as gc would, before they are in.
    await fs.rm(l.storeBlob(img.digest), { force: true });
    await pull(server, 'c/lib/g', 'v1', img, l);
    expect((await published(l, 'c/lib/g'))?.tags).toEqual({ v1: img.digest });
    expect(sha256Digest(await fs.readFile(l.storeBlob(img.digest)))).toBe(img.digest);
    await close(server);
  });

  it('a restart counts what the last process committed', async () => {
    const img = addImage('lib/s', 'v1', [5000]);
    const first = await serve([], 'restart-root');
    await pull(first.server, 'c/lib/s', 'v1', img, first.l);
    const usage = first.server.pullThrough!.committer.usage();
    expect(usage).toEqual({ images: 1, bytes: img.manifestSize + img.config.size + img.layers[0]!.size });
    await close(first.server);
    const second = await serve([], 'restart-root');
    expect(second.server.pullThrough!.committer.usage()).toEqual(usage);
    // Its proofs were saved with the commit: nothing to confirm again at the upstream.
    await sleep(300);
    await second.server.pullThrough!.committer.idle();
    expect(fake.requests.filter((r) => r.method === 'HEAD' && r.url.startsWith('/v2/lib/s/blobs/'))).toEqual([]);
    await close(second.server);
  });
});
