// The /v2 handler in process, called with request facts the way serve-handler.ts calls it, over a
// real published tree and a real repo index: what it answers, what it counts and logs, when it
// stays synchronous (everything in memory) and when it waits (a cold repo, a manifest read, a
// password check), and how the versions replaced less than `grace` ago keep redirecting.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Readable } from 'node:stream';
import { generateImage } from '../scripts/gen-image.js';
import { pushImage } from '../scripts/soak/upstream.js';
import { parseConfig } from '../shared/config.js';
import { layout, manifestRelPath } from '../shared/layout.js';
import { createLogger } from '../shared/log.js';
import { MediaType, sha256Digest } from '../shared/oci.js';
import { requireTool } from '../test/helpers/proc.js';
import { makeHtpasswd, startRegistry, type Registry } from '../test/helpers/registry.js';
import { makePublishedTree, type PublishedTree } from '../test/helpers/published.js';
import { tmpDir, type TmpDir } from '../test/helpers/tmp.js';
import { createAuthenticator } from './auth.js';
import { createRepoIndex, type RepoIndex } from './index.js';
import { createMetrics } from './metrics.js';
import { createPullThrough, type PullThrough } from './pull-through/pull-through.js';
import type { Reply } from './reply.js';
import { createV2Handler, type V2Options } from './v2.js';

const CRANE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test/fixtures/crane');
const ALL = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest].join(', ');
const GOOD = 'Basic ' + Buffer.from('alice:s3cret').toString('base64');
const BAD = 'Basic ' + Buffer.from('alice:wrong').toString('base64');

let tmp: TmpDir;
let tree: PublishedTree;
let htpasswd: string;
const indexes: RepoIndex[] = [];

beforeAll(async () => {
  tmp = await tmpDir('derrick-v2-handler');
  htpasswd = path.join(tmp.dir, 'htpasswd');
  await fs.writeFile(htpasswd, makeHtpasswd('alice', 's3cret') + '\n');
  tree = await makePublishedTree(tmp.dir, [
    { name: 'demo/app', images: [{ tag: 'v1', layers: [2048, 4096] }, { tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'] }, { tag: 't2' }, { tag: 't3' }] },
    { name: 'demo/grace', images: [{ tag: 'v1', layers: [1024] }] },
    { name: 'demo/broken', images: [{ tag: 'v1' }] },
    { name: 'locked', protected: true, images: [{ tag: 'latest' }] },
  ]);
});

afterAll(async () => {
  for (const i of indexes) await i.close();
  await tmp?.cleanup();
});

afterEach(() => void vi.useRealTimers());

/** pino lines kept in memory, parsed. */
function memoryLog(level: string) {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level, stream: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
  return { log, lines };
}

async function makeIndex(o: { graceMs?: number; craneData?: string } = {}) {
  const index = await createRepoIndex({
    layout: layout(tree.config.root), graceMs: o.graceMs ?? 60_000, rescanMs: 3_600_000, watch: false, craneData: o.craneData,
    protectedNames: new Set(['locked']), log: createLogger({ level: 'silent' }),
  });
  indexes.push(index);
  return index;
}

async function makeHandler(over: Partial<V2Options> & { index?: RepoIndex; users?: boolean } = {}) {
  const metrics = createMetrics();
  const mem = memoryLog('warn');
  const index = over.index ?? (await makeIndex());
  const handler = createV2Handler({
    index, metrics, log: mem.log,
    urls: { blobs: 'embedded', filesPrefix: '/published' },
    manifests: 'inline', redirectStatus: 307, anonymous: true,
    auth: createAuthenticator(over.users === false ? undefined : htpasswd),
    ...over,
  });
  /** A request as serve-handler.ts makes it (no remoteAddress: the handler must not need one). */
  const call = (method: string, target: string, headers: Record<string, string> = {}) => {
    const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    return handler({ method, target, header: (n) => lower[n] });
  };
  const get = async (target: string, headers?: Record<string, string>) => call('GET', target, headers);
  const metricsText = async () => (await metrics.registry()).metrics();
  return { handler, call, get, metrics, metricsText, index, lines: mem.lines };
}

const img = (ref: string) => tree.images.get(ref)!;
const bodyOf = (r: Reply) => Buffer.from(r.body as string | Uint8Array);
const json = (r: Reply) => JSON.parse(bodyOf(r).toString('utf8'));
const codeOf = (r: Reply) => json(r).errors[0].code as string;

describe('v2 handler: synchronous from memory, waiting only for the disk or a password check', () => {
  it('loads a cold repo and reads a manifest once; then answers the same requests synchronously', async () => {
    const { call, index } = await makeHandler();
    const target = '/v2/demo/app/manifests/v1';
    const first = call('GET', target, { Accept: ALL });
    expect(first).toBeInstanceOf(Promise);
    const r1 = await first;
    expect(r1.status).toBe(200);
    expect(sha256Digest(bodyOf(r1))).toBe(img('demo/app:v1').digest);
    const reads = index.filesRead();
    const second = call('GET', target, { Accept: ALL });
    expect(second).not.toBeInstanceOf(Promise);
    expect(bodyOf(second as Reply).equals(bodyOf(r1))).toBe(true);
    expect(index.filesRead()).toBe(reads);

    // Blobs: the redirect is built once per version and digest, the same for GET and HEAD.
    const layer = img('demo/app:v1').manifests[0]!.layers[0]!;
    const b1 = call('GET', `/v2/demo/app/blobs/${layer}`) as Reply;
    const b2 = call('HEAD', `/v2/demo/app/blobs/${layer}`) as Reply;
    expect(b1).not.toBeInstanceOf(Promise);
    expect(b1.status).toBe(307);
    expect(b1.headers['Docker-Content-Digest']).toBe(layer);
    expect(b1.headers.Location).toMatch(new RegExp(`^/published/master/demo~app/[^/]+/blobs/${layer}$`));
    expect(b2).toBe(b1);
    const other = img('demo/app:v1').manifests[0]!.layers[1]!;
    const o1 = call('GET', `/v2/demo/app/blobs/${other}`) as Reply;
    expect(o1.headers.Location).toMatch(new RegExp(`/blobs/${other}$`));
    expect(call('GET', `/v2/demo/app/blobs/${layer}`)).toBe(b1);
    expect(call('GET', `/v2/demo/app/blobs/${other}`)).toBe(o1);
  });

  it('an index and its amd64 child for a single-manifest client: three loads in one request', async () => {
    const { get } = await makeHandler();
    const amd64 = img('demo/app:multi').manifests.find((m) => m.platform === 'linux/amd64')!;
    const r = await get('/v2/demo/app/manifests/multi', { Accept: MediaType.ociManifest });
    expect(r.status).toBe(200);
    expect(r.headers['Docker-Content-Digest']).toBe(amd64.digest);
    expect(sha256Digest(bodyOf(r))).toBe(amd64.digest);
  });

  it('a manifest fetched through the blobs endpoint redirects to its manifests/ path', async () => {
    const { get } = await makeHandler();
    const digest = img('demo/app:v1').digest;
    const r = await get(`/v2/demo/app/blobs/${digest}`);
    expect(r.status).toBe(307);
    expect(r.headers.Location).toMatch(new RegExp(`^/published/master/demo~app/[^/]+/${manifestRelPath(MediaType.ociManifest, digest)}$`));
    expect(r.headers['Docker-Content-Digest']).toBe(digest);
  });

  it('a damaged master is a 500 UNAVAILABLE, logged as an internal error, not bytes that fail the digest', async () => {
    const { get, index, lines } = await makeHandler();
    expect((await get('/v2/demo/broken/tags/list')).status).toBe(200);
    const version = index.peek('demo/broken')!.current;
    const digest = img('demo/broken:v1').digest;
    const file = path.join(version.dir!, manifestRelPath(version.manifests.get(digest)!.mediaType, digest));
    const size = (await fs.stat(file)).size;
    // Replaced by rename (not written in place): the master's file may be a hard link into the store.
    await fs.writeFile(file + '.tmp', Buffer.alloc(size, 'x'));
    await fs.rename(file + '.tmp', file);
    const r = await get(`/v2/demo/broken/manifests/v1`, { Accept: ALL });
    expect(r.status).toBe(500);
    expect(json(r).errors[0]).toMatchObject({ code: 'UNAVAILABLE', message: 'internal error' });
    const logged = lines.find((l) => l.msg === 'internal error');
    expect(logged).toMatchObject({ path: '/v2/demo/broken/manifests/v1' });
    expect(String(logged!.err)).toContain('does not hash to');
    expect(String(logged!.err)).toMatch(/\n\s+at /); // the stack, not just the message
  });
});

describe('v2 handler: versions replaced less than grace ago', () => {
  it('keep redirecting their blobs and serving their manifests until grace ends, then are unknown', async () => {
    const { get, index } = await makeHandler();
    const old = img('demo/grace:v1');
    const oldLayer = old.manifests[0]!.layers[0]!;
    const before = await get(`/v2/demo/grace/blobs/${oldLayer}`);
    expect(before.status).toBe(307);

    // Republish the repo with other content under the same tag: the old layer leaves the current version.
    const layoutDir = path.join(tmp.dir, 'images', 'demo_grace');
    await fs.rm(layoutDir, { recursive: true });
    tree.images.set('demo/grace:v1', await generateImage({ layoutDir, tag: 'v1', seed: 'second', layers: [1024] }));
    await tree.publish();
    await index.reload(layout(tree.config.root).app('demo/grace'));
    const fresh = img('demo/grace:v1');
    expect(fresh.digest).not.toBe(old.digest);
    const now = await get('/v2/demo/grace/manifests/v1', { Accept: ALL });
    expect(now.headers['Docker-Content-Digest']).toBe(fresh.digest);
    expect(index.peek('demo/grace')!.current.blobs.has(oldLayer)).toBe(false);

    const graceCases = async () => ({
      layer: await get(`/v2/demo/grace/blobs/${oldLayer}`),
      manifestAsBlob: await get(`/v2/demo/grace/blobs/${old.digest}`),
      manifest: await get(`/v2/demo/grace/manifests/${old.digest}`, { Accept: ALL }),
      freshLayer: await get(`/v2/demo/grace/blobs/${fresh.manifests[0]!.layers[0]!}`),
      unknown: await get(`/v2/demo/grace/blobs/sha256:${'0'.repeat(64)}`),
    });
    const inGrace = await graceCases();
    expect(inGrace.layer.status).toBe(307);
    expect(inGrace.layer.headers.Location).toBe(before.headers.Location);
    expect(inGrace.manifestAsBlob.status).toBe(307);
    expect(inGrace.manifestAsBlob.headers.Location).toBe(before.headers.Location!.replace(`blobs/${oldLayer}`, manifestRelPath(MediaType.ociManifest, old.digest)));
    expect(inGrace.manifest.status).toBe(200);
    expect(sha256Digest(bodyOf(inGrace.manifest))).toBe(old.digest);
    expect(inGrace.freshLayer.status).toBe(307);
    // Grace keeps what the old version had, nothing more.
    expect([inGrace.unknown.status, codeOf(inGrace.unknown)]).toEqual([404, 'BLOB_UNKNOWN']);

    // Past grace, without any reload: the handler itself stops serving the old version.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 61_000);
    const after = await graceCases();
    expect([after.layer.status, codeOf(after.layer)]).toEqual([404, 'BLOB_UNKNOWN']);
    expect([after.manifestAsBlob.status, codeOf(after.manifestAsBlob)]).toEqual([404, 'BLOB_UNKNOWN']);
    expect([after.manifest.status, codeOf(after.manifest)]).toEqual([404, 'MANIFEST_UNKNOWN']);
    expect(after.freshLayer.status).toBe(307);
  });

  it('a listed repo whose redirect file has no good version: one load, then unknown (not a retry loop)', async () => {
    const { get, index } = await makeHandler();
    const l = layout(tree.config.root);
    const file = l.app('demo/garbage');
    await fs.writeFile(file + '.tmp', '{"type": "pulp-docker-redirect", "trunc');
    await fs.rename(file + '.tmp', file);
    try {
      await index.reload(file);
      expect(index.has('demo/garbage')).toBe(true);
      const anon = await get('/v2/demo/garbage/tags/list');
      expect([anon.status, codeOf(anon)]).toEqual([401, 'UNAUTHORIZED']);
      const reads = index.filesRead();
      const authed = await get('/v2/demo/garbage/manifests/v1', { Authorization: GOOD });
      expect([authed.status, codeOf(authed)]).toEqual([404, 'NAME_UNKNOWN']);
      expect(index.filesRead() - reads).toBeLessThanOrEqual(1);
    } finally {
      await fs.rm(file);
      await index.reload(file);
    }
  });
});

describe('v2 handler: what it counts and logs', () => {
  it('counts requests by route, method and status, and redirects by kind; logs each request at info', async () => {
    const mem = memoryLog('info');
    const { call, metricsText } = await makeHandler({ log: mem.log });
    const layer = img('demo/app:v1').manifests[0]!.layers[0]!;
    const t0 = performance.now();
    await call('GET', '/v2/demo/app/manifests/v1', { Accept: ALL });
    const firstMs = performance.now() - t0;
    await call('GET', '/v2/demo/app/manifests/v1', { Accept: ALL });
    await call('HEAD', '/v2/demo/app/manifests/v1', { Accept: ALL });
    await call('GET', '/v2/demo/app/manifests/nope');
    for (let i = 0; i < 3; i++) await call('GET', `/v2/demo/app/blobs/${layer}`);
    await call('GET', '/v2/demo/app/tags/list');
    const text = await metricsText();
    const count = (labels: string) => Number(new RegExp(`^${labels.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1]);
    expect(count('derrick_http_requests_total{route="manifest",method="GET",status="200"}')).toBe(2);
    expect(count('derrick_http_requests_total{route="manifest",method="HEAD",status="200"}')).toBe(1);
    expect(count('derrick_http_requests_total{route="manifest",method="GET",status="404"}')).toBe(1);
    expect(count('derrick_http_requests_total{route="blob",method="GET",status="307"}')).toBe(3);
    expect(count('derrick_http_requests_total{route="tags",method="GET",status="200"}')).toBe(1);
    expect(count('derrick_redirects_total{kind="blob"}')).toBe(3);
    expect(text).not.toMatch(/derrick_redirects_total\{kind="manifest"\} [1-9]/);

    const requests = mem.lines.filter((l) => l.msg === 'request');
    expect(requests.map((l) => [l.method, l.path, l.status])).toEqual([
      ['GET', '/v2/demo/app/manifests/v1', 200],
      ['GET', '/v2/demo/app/manifests/v1', 200],
      ['HEAD', '/v2/demo/app/manifests/v1', 200],
      ['GET', '/v2/demo/app/manifests/nope', 404],
      ...Array.from({ length: 3 }, () => ['GET', `/v2/demo/app/blobs/${layer}`, 307]),
      ['GET', '/v2/demo/app/tags/list', 200],
    ]);
    // The first (a cold load and a read) took measurable time, and no more than the call itself.
    expect(requests[0]!.ms as number).toBeGreaterThan(0);
    expect(requests[0]!.ms as number).toBeLessThanOrEqual(firstMs + 0.01);
    for (const l of requests) {
      expect(typeof l.ms).toBe('number');
      expect(l.ms as number).toBeGreaterThanOrEqual(0);
      expect(l.ms as number).toBeLessThan(30_000);
    }
    // At the default level (warn) a request logs nothing.
    const quiet = await makeHandler();
    await quiet.call('GET', '/v2/demo/app/manifests/v1');
    expect(quiet.lines).toEqual([]);
  });

  it('serve.manifests: redirect counts manifest redirects; crane repos redirect manifests, blobs and tags', async () => {
    const { get, metricsText } = await makeHandler({ manifests: 'redirect', index: await makeIndex({ craneData: CRANE }) });
    const m = await get('/v2/demo/app/manifests/v1', { Accept: ALL });
    expect(m.status).toBe(307);
    expect(m.headers.Location).toMatch(new RegExp(`^/published/master/demo~app/[^/]+/${manifestRelPath(MediaType.ociManifest, img('demo/app:v1').digest)}$`));
    const crane = [
      await get('/v2/acme/tools/manifests/2.0', { Accept: MediaType.dockerManifest }),
      await get('/v2/acme/tools/manifests/2.0', { Accept: MediaType.dockerManifest }),
      await get(`/v2/acme/tools/blobs/sha256:${'9'.repeat(64)}`),
      await get('/v2/acme/tools/tags/list'),
    ];
    expect(crane.map((r) => [r.status, r.headers.Location])).toEqual([
      [307, 'http://cdn.example.test/pulp/docker/v2/tools/manifests/2/2.0'],
      [307, 'http://cdn.example.test/pulp/docker/v2/tools/manifests/2/2.0'],
      [307, `http://cdn.example.test/pulp/docker/v2/tools/blobs/sha256:${'9'.repeat(64)}`],
      [307, 'http://cdn.example.test/pulp/docker/v2/tools/tags/list'],
    ]);
    const text = await metricsText();
    expect(text).toMatch(/^derrick_redirects_total\{kind="manifest"\} 3$/m);
    expect(text).toMatch(/^derrick_redirects_total\{kind="blob"\} 1$/m);
    expect(text).toMatch(/^derrick_redirects_total\{kind="tags"\} 1$/m);
  });
});

describe('v2 handler: credentials', () => {
  it('serve.anonymous on: /v2/ and the catalog take credentials only if sent, and then they must be right', async () => {
    const { get, call } = await makeHandler();
    const base = (await get('/v2/')) as Reply;
    expect(base.status).toBe(200);
    expect(bodyOf(base).toString()).toBe('{}');
    expect(base.headers).toMatchObject({ 'Content-Type': 'application/json', 'Content-Length': '2', 'WWW-Authenticate': 'Basic realm="derrick", charset="UTF-8"' });
    expect((await get('/v2/', { Authorization: BAD })).status).toBe(401);
    expect((await get('/v2/', { Authorization: GOOD })).status).toBe(200);
    // The answer for these credentials is remembered: the second check is synchronous.
    const again = call('GET', '/v2/', { Authorization: GOOD });
    expect(again).not.toBeInstanceOf(Promise);
    expect((again as Reply).status).toBe(200);
    expect(json(await get('/v2/_catalog'))).toEqual({ repositories: ['demo/app', 'demo/broken', 'demo/grace'] });
    expect(json(await get('/v2/_catalog', { Authorization: GOOD }))).toEqual({ repositories: ['demo/app', 'demo/broken', 'demo/grace', 'locked'] });
    expect((await get('/v2/_catalog', { Authorization: BAD })).status).toBe(401);
    const page = await get('/v2/_catalog?n=1&last=demo/app');
    expect(json(page)).toEqual({ repositories: ['demo/broken'] });
    expect(page.headers.Link).toBe('</v2/_catalog?last=demo%2Fbroken&n=1>; rel="next"');

    // A protected repo's 401 names the repository, as the spec's detail for the token flow.
    const locked = await get('/v2/locked/tags/list');
    expect(locked.status).toBe(401);
    expect(json(locked).errors[0].detail).toEqual([{ Type: 'repository', Name: 'locked', Action: 'pull' }]);
    expect((await get('/v2/locked/tags/list', { Authorization: BAD })).status).toBe(401);
    const lockedDigest = img('locked:latest').digest;
    for (const t of [`/v2/locked/referrers/${lockedDigest}`, `/v2/locked/manifests/${lockedDigest}`, `/v2/locked/blobs/${lockedDigest}`]) {
      expect([t, (await get(t)).status]).toEqual([t, 401]);
    }
    expect((await get(`/v2/locked/referrers/${lockedDigest}`, { Authorization: GOOD })).status).toBe(200);
    expect(json(await get('/v2/locked/tags/list', { Authorization: GOOD }))).toEqual({ name: 'locked', tags: ['latest'] });
    // A public repo ignores credentials, even wrong ones.
    expect((await get('/v2/demo/app/tags/list', { Authorization: BAD })).status).toBe(200);
  });

  it('without users, /v2/ names no challenge', async () => {
    const { get } = await makeHandler({ users: false });
    const base = await get('/v2/');
    expect(base.status).toBe(200);
    expect(base.headers['WWW-Authenticate']).toBeUndefined();
  });

  it('serve.anonymous off: everything needs credentials, except a name that is invalid for everyone', async () => {
    const { get } = await makeHandler({ anonymous: false });
    for (const target of ['/v2/', '/v2/_catalog', '/v2/demo/app/tags/list', `/v2/demo/app/blobs/${img('demo/app:v1').digest}`, '/v2/no/such/manifests/v1']) {
      const r = await get(target);
      expect([target, r.status, codeOf(r)]).toEqual([target, 401, 'UNAUTHORIZED']);
      expect(r.headers['WWW-Authenticate']).toBe('Basic realm="derrick", charset="UTF-8"');
    }
    expect((await get('/v2/', { Authorization: GOOD })).status).toBe(200);
    expect(json(await get('/v2/_catalog', { Authorization: GOOD })).repositories).toEqual(['demo/app', 'demo/broken', 'demo/grace', 'locked']);
    expect((await get('/v2/demo/app/tags/list', { Authorization: GOOD })).status).toBe(200);
    const invalid = await get('/v2/Demo/App/tags/list');
    expect([invalid.status, codeOf(invalid)]).toEqual([400, 'NAME_INVALID']);
  });
});

describe('v2 handler: errors and methods', () => {
  it.each([
    ['PUT a manifest', 'PUT', '/v2/demo/app/manifests/v1', 405, 'UNSUPPORTED', { Allow: 'GET, HEAD' }],
    ['DELETE on /v2/', 'DELETE', '/v2/', 405, 'UNSUPPORTED', { Allow: 'GET, HEAD' }],
    ['POST an upload', 'POST', '/v2/demo/app/blobs/uploads/', 405, 'UNSUPPORTED', { Allow: '' }],
    ['GET an upload', 'GET', '/v2/demo/app/blobs/uploads/abc', 405, 'UNSUPPORTED', { Allow: '' }],
    ['an unknown endpoint', 'GET', '/v2/demo/app/whatever', 404, 'NAME_UNKNOWN', {}],
    ['a path outside /v2/', 'GET', '/v2x/demo/app/tags/list', 404, 'NAME_UNKNOWN', {}],
    ['referrers of an unknown repo, bad digest: the name first', 'GET', '/v2/no/such/referrers/nope', 404, 'NAME_UNKNOWN', {}],
    ['referrers with a bad digest', 'GET', '/v2/demo/app/referrers/nope', 400, 'DIGEST_INVALID', {}],
    ['a blob digest without algorithm', 'GET', '/v2/demo/app/blobs/nope', 400, 'DIGEST_INVALID', {}],
    ['a blob path that only starts like an upload', 'GET', '/v2/demo/app/blobs/uploadsx', 400, 'DIGEST_INVALID', {}],
    ['a blob not in the repo', 'GET', `/v2/demo/app/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN', {}],
    ['a tag not in the repo', 'GET', '/v2/demo/app/manifests/nope', 404, 'MANIFEST_UNKNOWN', {}],
    ['tags of an unknown repo', 'GET', '/v2/no/such/tags/list', 404, 'NAME_UNKNOWN', {}],
    ['an invalid name', 'GET', '/v2/a//b/tags/list', 400, 'NAME_INVALID', {}],
  ] as const)('%s', async (_name, method, target, status, code, headers) => {
    const { call } = await makeHandler();
    const r = await call(method, target, { Authorization: GOOD });
    expect(r.status).toBe(status);
    expect(json(r).errors[0].code).toBe(code);
    expect(r.headers).toMatchObject(headers);
    if (code === 'DIGEST_INVALID') expect(json(r).errors[0]).toEqual({ code, message: 'invalid digest', detail: { digest: target.split('/').pop() } });
  });

  it('an unknown endpoint names itself; tags pages link to the repo\'s own list', async () => {
    const { get } = await makeHandler();
    expect(json(await get('/v2/demo/app/whatever')).errors[0]).toEqual({ code: 'NAME_UNKNOWN', message: 'unknown endpoint', detail: { path: '/v2/demo/app/whatever' } });
    const page = await get('/v2/demo/app/tags/list?n=2');
    expect(json(page)).toEqual({ name: 'demo/app', tags: ['multi', 't2'] });
    expect(page.headers.Link).toBe('</v2/demo/app/tags/list?last=t2&n=2>; rel="next"');
    const refs = await get(`/v2/demo/app/referrers/${img('demo/app:v1').digest}?artifactType=application/x-sig`);
    expect(refs.headers['OCI-Filters-Applied']).toBe('artifactType');
  });

  it('serve.signing: blob redirects are signed afresh each time, never reused from the cache', async () => {
    const { get } = await makeHandler({ urls: { blobs: 'embedded', filesPrefix: '/published', signing: { secret: 's', ttlMs: 60_000 } } });
    const layer = img('demo/app:v1').manifests[0]!.layers[0]!;
    vi.useFakeTimers({ toFake: ['Date'] });
    const first = await get(`/v2/demo/app/blobs/${layer}`);
    vi.setSystemTime(Date.now() + 5_000);
    const second = await get(`/v2/demo/app/blobs/${layer}`);
    const expires = (r: Reply) => Number(new URL(r.headers.Location!, 'http://x').searchParams.get('expires'));
    expect(first.headers.Location).toMatch(/\?md5=[A-Za-z0-9_-]+&expires=\d+$/);
    expect(expires(second) - expires(first)).toBe(5);
  });
});

const hasRegistry = requireTool('docker-registry', 'the /v2 handler tests through pull-through are skipped');

/** A reply's body, whether bytes or a pull-through stream. */
async function readBody(r: Reply): Promise<Buffer> {
  if (r.body instanceof Readable) {
    const chunks: Buffer[] = [];
    for await (const c of r.body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }
  return r.body === null ? Buffer.alloc(0) : bodyOf(r);
}

describe.skipIf(!hasRegistry)('v2 handler: names under an upstream prefix go through the pull-through cache', () => {
  let reg: Registry;
  let pt: PullThrough;
  let ptIndex: RepoIndex;
  let app: Awaited<ReturnType<typeof makeHandler>>;
  let v1: Awaited<ReturnType<typeof generateImage>>;
  let multi: Awaited<ReturnType<typeof generateImage>>;

  beforeAll(async () => {
    reg = await startRegistry();
    const gen = path.join(tmp.dir, 'pt-gen');
    v1 = await generateImage({ layoutDir: gen, tag: 'v1', layers: [3000] });
    await pushImage(reg.url, 'lib/app', gen, v1, 'v1');
    const v2 = await generateImage({ layoutDir: gen, tag: 'v2', layers: [3000] });
    await pushImage(reg.url, 'lib/app', gen, v2, 'v2');
    multi = await generateImage({ layoutDir: gen, tag: 'multi', platforms: ['linux/arm64', 'linux/amd64'] });
    await pushImage(reg.url, 'lib/multi', gen, multi, 'multi');
    const dir = path.join(tmp.dir, 'pt');
    await fs.mkdir(dir);
    const yaml = ['root: ./var', 'upstreams:', '  - prefix: hub', `    url: ${JSON.stringify(reg.url)}`, '    tls-verify: false', ''].join('\n');
    const config = parseConfig(yaml, path.join(dir, 'derrick.yaml'));
    ptIndex = await createRepoIndex({ layout: layout(config.root), graceMs: 60_000, rescanMs: 3_600_000, watch: false, log: createLogger({ level: 'silent' }) });
    indexes.push(ptIndex);
    const metrics = createMetrics();
    const urls = { blobs: 'embedded', filesPrefix: '/published' };
    pt = await createPullThrough({ config, layout: layout(config.root), index: ptIndex, metrics, log: createLogger({ level: 'silent' }), urls, manifests: 'inline', redirectStatus: 307 });
    // Users exist, so only the pull-through names are open to an anonymous caller.
    app = await makeHandler({ index: ptIndex, pullThrough: pt, metrics, urls });
  });

  afterAll(async () => {
    await pt?.committer.idle();
    await pt?.accessLog.flush();
    await reg?.stop();
  });

  it('manifests, blobs, tags and referrers of an upstream repo, to an anonymous caller', async () => {
    const m = await app.get('/v2/hub/lib/app/manifests/v1', { Accept: ALL });
    expect(m.status).toBe(200);
    expect(sha256Digest(await readBody(m))).toBe(v1.digest);
    const layer = v1.manifests[0]!.layers[0]!;
    const b = await app.get(`/v2/hub/lib/app/blobs/${layer}`);
    expect(b.status).toBe(200);
    expect(sha256Digest(await readBody(b))).toBe(layer);

    const page = await app.get('/v2/hub/lib/app/tags/list?n=1');
    expect(page.status).toBe(200);
    expect(JSON.parse((await readBody(page)).toString())).toEqual({ name: 'hub/lib/app', tags: ['v1'] });
    const rest = await app.get('/v2/hub/lib/app/tags/list?n=1&last=v1');
    expect(JSON.parse((await readBody(rest)).toString())).toEqual({ name: 'hub/lib/app', tags: ['v2'] });

    const refs = await app.get(`/v2/hub/lib/app/referrers/${v1.digest}`);
    expect(refs.status).toBe(200);
    expect(JSON.parse((await readBody(refs)).toString())).toMatchObject({ schemaVersion: 2, manifests: [] });
    const filtered = await app.get(`/v2/hub/lib/app/referrers/${v1.digest}?artifactType=application/x-sig`);
    expect(filtered.headers['OCI-Filters-Applied']).toBe('artifactType');
    const bad = await app.get('/v2/hub/lib/app/referrers/nope');
    expect(json(bad).errors[0]).toEqual({ code: 'DIGEST_INVALID', message: 'invalid digest', detail: { digest: 'nope' } });
    expect(bad.status).toBe(400);
    const badBlob = await app.get('/v2/hub/lib/app/blobs/nope');
    expect([badBlob.status, codeOf(badBlob)]).toEqual([400, 'DIGEST_INVALID']);
  });

  it('passes the method, Accept and If-None-Match through, and serves a pulled blob again before its commit is indexed', async () => {
    const layer = v1.manifests[0]!.layers[0]!;
    const noAccept = await app.get('/v2/hub/lib/app/manifests/v1');
    expect(noAccept.status).toBe(200);
    expect(sha256Digest(await readBody(noAccept))).toBe(v1.digest);
    // An index to a client that accepts only single manifests: its linux/amd64 image.
    const amd64 = multi.manifests.find((m) => m.platform === 'linux/amd64')!;
    const single = await app.get('/v2/hub/lib/multi/manifests/multi', { Accept: MediaType.ociManifest });
    expect([single.status, single.headers['Docker-Content-Digest']]).toEqual([200, amd64.digest]);
    expect(sha256Digest(await readBody(single))).toBe(amd64.digest);
    const anyType = await app.get('/v2/hub/lib/multi/manifests/multi');
    expect([anyType.status, anyType.headers['Docker-Content-Digest']]).toEqual([200, multi.digest]);
    await readBody(anyType);
    const cond = await app.get('/v2/hub/lib/app/manifests/v1', { Accept: ALL, 'If-None-Match': `"${v1.digest}"` });
    expect(cond.status).toBe(304);
    for (const t of ['/v2/hub/lib/app/manifests/v1', `/v2/hub/lib/app/blobs/${layer}`, '/v2/hub/lib/app/tags/list', `/v2/hub/lib/app/referrers/${v1.digest}`]) {
      const head = await app.call('HEAD', t, { Accept: ALL });
      expect([t, head.status, head.body]).toEqual([t, 200, null]);
    }
    // The index has not been reloaded, so the repo is not published as far as it knows: the
    // blob (proven at the upstream now) still comes through the cache.
    await readBody(await app.get(`/v2/hub/lib/app/blobs/${layer}`));
    expect(pt.proven('hub/lib/app', layer)).toBe(true);
    const again = await app.get(`/v2/hub/lib/app/blobs/${layer}`);
    expect(again.status).toBe(200);
    expect(sha256Digest(await readBody(again))).toBe(layer);
  });

  it('once committed, a blob the upstream was seen to have takes the static redirect', async () => {
    const layer = v1.manifests[0]!.layers[0]!;
    // Pulled here too, so the test stands alone (Stryker runs only the tests that cover a mutant).
    await readBody(await app.get(`/v2/hub/lib/app/manifests/v1`, { Accept: ALL }));
    await readBody(await app.get(`/v2/hub/lib/app/blobs/${layer}`));
    await pt.committer.idle();
    await ptIndex.reload();
    expect(pt.proven('hub/lib/app', layer)).toBe(true);
    const r = await app.get(`/v2/hub/lib/app/blobs/${layer}`);
    expect(r.status).toBe(307);
    expect(r.headers.Location).toMatch(new RegExp(`^/published/master/hub~lib~app/[^/]+/blobs/${layer}$`));
    // A digest this repo's upstream was never seen to have still goes to the upstream, even
    // though the store may hold it: an unknown blob, not a redirect.
    const other = await app.get(`/v2/hub/lib/app/blobs/sha256:${'ab'.repeat(32)}`);
    expect([other.status, codeOf(other)]).toEqual([404, 'BLOB_UNKNOWN']);
  });
});
