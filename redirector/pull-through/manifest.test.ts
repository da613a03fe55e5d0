// The manifest and tag side of the pull-through cache, in process (so `npm run mutate` sees it):
// startServer with routes to a real docker-registry behind the fault proxy, which counts every
// upstream request and answers 5xx, 429, resets and delays where a test asks. Each test has its
// own upstream repository, so its request counts are its own, and each can run alone.
// The clock (Date only; timers stay real) is pinned, so tag-ttl is crossed without waiting and
// a tag's Cache-Control max-age is exact.
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { generateImage, type GeneratedImage } from '../../scripts/gen-image.js';
import { pushImage } from '../../scripts/soak/upstream.js';
import { parseConfig, type Config } from '../../shared/config.js';
import { layout, repoKey } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType, digestHex, sha256Digest } from '../../shared/oci.js';
import { pushSbom, pushSignature, SBOM_TYPE } from '../../test/helpers/cosign-sign.js';
import { requireTool } from '../../test/helpers/proc.js';
import { startProxiedUpstream, type ProxiedUpstream } from '../../test/helpers/proxied-upstream.js';
import { startServer, type RunningServer } from '../serve.js';
import { STALE_WARNING } from './context.js';

const hasTools = requireTool('docker-registry', 'the in-process pull-through manifest tests are skipped');
const ACCEPT_ALL = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList].join(', ');
/** What serve logged (JSON lines at info and above): operators read these. */
const logged: Array<Record<string, unknown>> = [];
const log = createLogger({ level: 'info', stream: { write: (line: string) => void logged.push(JSON.parse(line) as Record<string, unknown>) } });
const warned = (msg: string) => logged.filter((l) => l.msg === msg && l.level === 40);

interface Got {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function get(base: string, p: string, init: { method?: string; accept?: string; headers?: Record<string, string> } = {}): Promise<Got> {
  const r = await fetch(`${base}${p}`, { method: init.method ?? 'GET', headers: { Accept: init.accept ?? ACCEPT_ALL, ...init.headers }, redirect: 'manual' });
  return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
}
const codes = (g: Got) => (JSON.parse(g.body.toString()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code);
const json = <T = any>(g: Got) => JSON.parse(g.body.toString()) as T;

describe.skipIf(!hasTools)('pull-through manifests, tags and referrers, in process', () => {
  let up: ProxiedUpstream;
  let yaml: string;
  let config: Config;
  let server: RunningServer;
  let a: GeneratedImage;
  let b: GeneratedImage;
  let idx: GeneratedImage;
  let now = Date.parse('2026-06-01T00:00:00Z');
  const base = () => server.url;
  /** Upstream requests for one repository (`/v2/<repo>/<what>/...`). */
  const ups = (method: string, repo: string, what = 'manifests') => up.proxy.count(method, new RegExp(`^/v2/${repo}/${what}(/|\\?|$)`));
  const anyUps = (repo: string) => up.proxy.requests.filter((r) => r.path.startsWith(`/v2/${repo}/`)).length;
  const metric = async (name: string) => {
    const text = (await get(base(), '/metrics')).body.toString();
    const line = text.split('\n').find((l) => l.startsWith(name + ' '));
    return Number(line?.split(' ')[1] ?? NaN);
  };
  const advance = (ms: number) => vi.setSystemTime((now += ms));
  const dirs = new Map<GeneratedImage, string>();
  /** Pushes an image to `<repo>:<tag>` upstream (each test seeds its own, so it can run alone). */
  const seed = (repo: string, img: GeneratedImage = a, tag = 'v1') => {
    const dir = dirs.get(img) ?? (img === a ? 'a' : img === b ? 'b' : 'idx');
    return pushImage(up.reg.url, repo, path.join(up.gen, dir), img, tag);
  };
  /**
   * An image no other test stores. A manifest already in the store (another repo's) is proven for
   * a new repo by a HEAD instead of a GET, so a test that counts GETs needs bytes of its own.
   */
  const fresh = async (name: string) => {
    const img = await generateImage({ layoutDir: path.join(up.gen, name), tag: 'v1', seed: name, layers: [150] });
    dirs.set(img, name);
    return img;
  };

  beforeAll(async () => {
    up = await startProxiedUpstream('derrick-pt-manifest');
    a = await generateImage({ layoutDir: path.join(up.gen, 'a'), tag: 'v1', seed: 'a', layers: [300, 200] });
    b = await generateImage({ layoutDir: path.join(up.gen, 'b'), tag: 'v1', seed: 'b', layers: [100] });
    idx = await generateImage({ layoutDir: path.join(up.gen, 'idx'), tag: 'v1', seed: 'idx', layers: [100], platforms: ['linux/arm64', 'linux/amd64'] });
    const route = (prefix: string, extra: string) => `  - { prefix: ${prefix}, url: ${JSON.stringify(up.proxy.url)}, pull-ahead: false, ${extra} }`;
    yaml = [
      'root: ./var',
      'grace: 10m',
      'upstreams:',
      route('hub', 'tag-ttl: 1m'),
      route('always', 'policy: Always, timeout: 1s'),
      route('strict', 'policy: Always, stale-on-error: false, timeout: 1s'),
      route('lazy', 'tag-ttl: 1m, stale-on-error: false'),
      route('noref', 'referrers: false'),
      `  - { prefix: ahead, url: ${JSON.stringify(up.proxy.url)} }`,
      '',
    ].join('\n');
    await fs.writeFile(up.cfgFile, yaml);
    config = parseConfig(yaml, up.cfgFile);
    server = await startServer(config, { listen: '127.0.0.1:0', log });
  });
  afterAll(async () => {
    await server?.close();
    await up?.close();
  });
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(now);
  });
  afterEach(() => {
    up.proxy.clearRules();
    vi.useRealTimers();
  });

  it('checks grammar before asking the upstream anything', async () => {
    const sha512 = `sha512:${'ab'.repeat(64)}`;
    const cases: Array<[string, number, string]> = [
      [`/v2/hub/g/app/manifests/${sha512}`, 404, 'MANIFEST_UNKNOWN'],
      ['/v2/hub/g/app/manifests/sha256:abc', 404, 'MANIFEST_UNKNOWN'],
      ['/v2/hub/g/app/manifests/-bad', 404, 'MANIFEST_UNKNOWN'],
      [`/v2/noref/g/app/manifests/sha256-${'ab'.repeat(32)}.sig`, 404, 'MANIFEST_UNKNOWN'],
      [`/v2/noref/g/app/manifests/sha256-${'ab'.repeat(32)}`, 404, 'MANIFEST_UNKNOWN'],
      ['/v2/hub/g/app/tags/list?n=abc', 400, 'PAGINATION_NUMBER_INVALID'],
      ['/v2/hub/g/app/referrers/latest', 400, 'DIGEST_INVALID'],
    ];
    for (const [p, status, code] of cases) {
      const r = await get(base(), p);
      expect(r.status, p).toBe(status);
      expect(codes(r), p).toEqual([code]);
    }
    expect(anyUps('g/app')).toBe(0);
  });

  it('a tag is resolved with one HEAD and one GET, then answered from memory within tag-ttl', async () => {
    await seed('warm/app');
    const hits = await metric('derrick_cache_hits_total');
    const misses = await metric('derrick_cache_misses_total');
    const r = await get(base(), '/v2/hub/warm/app/manifests/v1');
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(a.digest);
    expect(r.headers.get('content-type')).toBe(a.mediaType);
    expect(r.headers.get('cache-control')).toBe('public, max-age=60');
    expect(r.headers.get('etag')).toBe(`"${a.digest}"`);
    expect(r.headers.get('warning')).toBeNull();
    expect(sha256Digest(r.body)).toBe(a.digest);
    expect([ups('HEAD', 'warm/app'), ups('GET', 'warm/app')]).toEqual([1, 1]);
    expect(await metric('derrick_cache_misses_total')).toBe(misses + 1);

    advance(20_000);
    const again = await get(base(), '/v2/hub/warm/app/manifests/v1');
    expect(again.status).toBe(200);
    expect(again.body.equals(r.body)).toBe(true);
    expect(again.headers.get('cache-control')).toBe('public, max-age=40');
    expect(again.headers.get('warning')).toBeNull();
    const head = await get(base(), '/v2/hub/warm/app/manifests/v1', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(head.headers.get('content-length')).toBe(String(a.size));
    expect(head.headers.get('docker-content-digest')).toBe(a.digest);
    expect(await metric('derrick_cache_hits_total')).toBe(hits + 2);
    // By digest: the same bytes, immutable.
    const byDigest = await get(base(), `/v2/hub/warm/app/manifests/${a.digest}`);
    expect(byDigest.status).toBe(200);
    expect(byDigest.body.equals(r.body)).toBe(true);
    expect(byDigest.headers.get('cache-control')).toMatch(/immutable/);
    expect(byDigest.headers.get('warning')).toBeNull();
    expect(await metric('derrick_cache_hits_total')).toBe(hits + 3);
    const notModified = await get(base(), '/v2/hub/warm/app/manifests/v1', { headers: { 'If-None-Match': `"${a.digest}"` } });
    expect(notModified.status).toBe(304);
    expect([ups('HEAD', 'warm/app'), ups('GET', 'warm/app')]).toEqual([1, 1]);
  });

  it('after tag-ttl one HEAD rechecks the tag: unchanged costs no GET, a moved tag fetches the new manifest', async () => {
    const [x, y] = [await fresh('ttl-x'), await fresh('ttl-y')];
    await seed('ttl/app', x);
    expect((await get(base(), '/v2/hub/ttl/app/manifests/v1')).status).toBe(200);
    advance(61_000);
    const same = await get(base(), '/v2/hub/ttl/app/manifests/v1');
    expect(same.headers.get('docker-content-digest')).toBe(x.digest);
    expect(same.headers.get('cache-control')).toBe('public, max-age=60');
    expect([ups('HEAD', 'ttl/app'), ups('GET', 'ttl/app')]).toEqual([2, 1]);
    // Confirmed again just now: the next request is a hit.
    advance(59_000);
    expect((await get(base(), '/v2/hub/ttl/app/manifests/v1')).headers.get('cache-control')).toBe('public, max-age=1');
    expect(ups('HEAD', 'ttl/app')).toBe(2);

    await seed('ttl/app', y);
    const before = ups('GET', 'ttl/app');
    advance(2_000);
    const moved = await get(base(), '/v2/hub/ttl/app/manifests/v1');
    expect(moved.status).toBe(200);
    expect(moved.headers.get('docker-content-digest')).toBe(y.digest);
    expect(sha256Digest(moved.body)).toBe(y.digest);
    expect(moved.headers.get('cache-control')).toBe('public, max-age=60');
    expect(ups('GET', 'ttl/app') - before).toBe(1);
    // The old image is still there by digest, from memory.
    expect((await get(base(), `/v2/hub/ttl/app/manifests/${x.digest}`)).status).toBe(200);
    expect(ups('GET', 'ttl/app') - before).toBe(1);
  });

  it('policy Always asks the upstream on every tag request; a HEAD that finds the same digest costs no GET', async () => {
    const x = await fresh('alw');
    await seed('alw/app', x);
    for (let i = 0; i < 3; i++) {
      const r = await get(base(), '/v2/always/alw/app/manifests/v1');
      expect(r.status).toBe(200);
      expect(r.headers.get('docker-content-digest')).toBe(x.digest);
      expect(r.headers.get('cache-control')).toBe('public, max-age=300');
    }
    expect([ups('HEAD', 'alw/app'), ups('GET', 'alw/app')]).toEqual([3, 1]);
    // A digest is never rechecked, even under Always.
    expect((await get(base(), `/v2/always/alw/app/manifests/${x.digest}`)).status).toBe(200);
    expect([ups('HEAD', 'alw/app'), ups('GET', 'alw/app')]).toEqual([3, 1]);
  });

  it('stale-on-error: a cached tag is served with Warning 299 on 5xx, 429, a reset and a timeout; 404 and 401 are not outages', async () => {
    await seed('stale/app');
    expect((await get(base(), '/v2/always/stale/app/manifests/v1')).status).toBe(200);
    const stale = await metric('derrick_cache_stale_total');
    const faults = [
      { kind: 'status', status: 500 },
      { kind: 'status', status: 429, headers: { 'Retry-After': '3' } },
      { kind: 'reset' },
      { kind: 'delay', ms: 2000 },
    ] as const;
    for (const action of faults) {
      up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/stale\/app\/manifests\/v1$/, action, times: 1 });
      const r = await get(base(), '/v2/always/stale/app/manifests/v1');
      expect(r.status, action.kind).toBe(200);
      expect(r.headers.get('warning'), action.kind).toBe(STALE_WARNING);
      expect(r.headers.get('docker-content-digest')).toBe(a.digest);
      expect(sha256Digest(r.body)).toBe(a.digest);
    }
    expect(await metric('derrick_cache_stale_total')).toBe(stale + faults.length);
    const notFound = JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] });
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/stale\/app\/manifests\/v1$/, action: { kind: 'status', status: 404, body: notFound }, times: 1 });
    const gone = await get(base(), '/v2/always/stale/app/manifests/v1');
    expect(gone.status).toBe(404);
    expect(codes(gone)).toEqual(['MANIFEST_UNKNOWN']);
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/stale\/app\/manifests\/v1$/, action: { kind: 'status', status: 401 }, times: 1 });
    const refused = await get(base(), '/v2/always/stale/app/manifests/v1');
    expect(refused.status).toBe(502);
    expect(codes(refused)).toEqual(['UNAVAILABLE']);
    expect(await metric('derrick_cache_stale_total')).toBe(stale + faults.length);
  });

  it('stale-on-error false under Always: the failure is the answer, with its own status', async () => {
    await seed('strict/app');
    expect((await get(base(), '/v2/strict/strict/app/manifests/v1')).status).toBe(200);
    const cases = [
      [{ kind: 'status', status: 503 }, 502, 'UNAVAILABLE', null],
      [{ kind: 'status', status: 429, headers: { 'Retry-After': '9' } }, 429, 'TOOMANYREQUESTS', '9'],
      [{ kind: 'reset' }, 503, 'UNAVAILABLE', null],
      [{ kind: 'delay', ms: 2000 }, 504, 'UNAVAILABLE', null],
    ] as const;
    for (const [action, status, code, retryAfter] of cases) {
      up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/strict\/app\/manifests\/v1$/, action, times: 1 });
      const r = await get(base(), '/v2/strict/strict/app/manifests/v1');
      expect(r.status, action.kind).toBe(status);
      expect(codes(r), action.kind).toEqual([code]);
      expect(r.headers.get('retry-after'), action.kind).toBe(retryAfter);
      expect(r.headers.get('warning')).toBeNull();
    }
  });

  it('IfNotPresent serves its cached tag stale past tag-ttl even with stale-on-error false; with nothing cached the failure is the answer', async () => {
    await seed('lazy/app', await fresh('lazy'));
    await seed('cold/app');
    expect((await get(base(), '/v2/lazy/lazy/app/manifests/v1')).status).toBe(200);
    advance(61_000);
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/lazy\/app\/manifests\/v1$/, action: { kind: 'status', status: 500 }, times: 1 });
    const r = await get(base(), '/v2/lazy/lazy/app/manifests/v1');
    expect(r.status).toBe(200);
    expect(r.headers.get('warning')).toBe(STALE_WARNING);
    // The tag was not confirmed: its age is past tag-ttl, so caches may not keep it.
    expect(r.headers.get('cache-control')).toBe('public, max-age=0');
    // Still unconfirmed, so the next request asks again (and succeeds).
    const ok = await get(base(), '/v2/lazy/lazy/app/manifests/v1');
    expect(ok.headers.get('warning')).toBeNull();
    expect(ups('HEAD', 'lazy/app')).toBe(3);

    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/cold\/app\/manifests\/v1$/, action: { kind: 'status', status: 500 } });
    const cold = await get(base(), '/v2/hub/cold/app/manifests/v1');
    expect(cold.status).toBe(502);
    expect(codes(cold)).toEqual(['UNAVAILABLE']);
    expect(ups('GET', 'cold/app')).toBe(0);
  });

  it('an index goes to a client that accepts it; one that accepts only images gets the linux/amd64 image; one that accepts neither gets MANIFEST_UNKNOWN', async () => {
    await seed('idx/app', idx);
    const amd64 = idx.manifests.find((m) => m.platform === 'linux/amd64')!;
    const whole = await get(base(), '/v2/hub/idx/app/manifests/v1');
    expect(whole.headers.get('docker-content-digest')).toBe(idx.digest);
    expect(whole.headers.get('content-type')).toBe(idx.mediaType);
    const image = await get(base(), '/v2/hub/idx/app/manifests/v1', { accept: MediaType.ociManifest });
    expect(image.status).toBe(200);
    expect(image.headers.get('docker-content-digest')).toBe(amd64.digest);
    expect(image.headers.get('content-type')).toBe(MediaType.ociManifest);
    expect(sha256Digest(image.body)).toBe(amd64.digest);
    const neither = await get(base(), '/v2/hub/idx/app/manifests/v1', { accept: MediaType.dockerManifest });
    expect(neither.status).toBe(404);
    expect(codes(neither)).toEqual(['MANIFEST_UNKNOWN']);
    // The index, then the amd64 child once: the arm64 child nobody asked for is not fetched.
    expect(ups('GET', 'idx/app')).toBe(2);
    expect(up.proxy.count('GET', new RegExp(`/manifests/${idx.manifests.find((m) => m.platform === 'linux/arm64')!.digest}$`))).toBe(0);
  });

  it('a manifest by digest is fetched once, with no HEAD, and never rechecked; one the upstream lacks is MANIFEST_UNKNOWN', async () => {
    const x = await fresh('dig');
    await seed('dig/app', x);
    const r = await get(base(), `/v2/hub/dig/app/manifests/${x.digest}`);
    expect(r.status).toBe(200);
    expect(sha256Digest(r.body)).toBe(x.digest);
    expect(r.headers.get('cache-control')).toMatch(/immutable/);
    advance(3_600_000);
    const head = await get(base(), `/v2/hub/dig/app/manifests/${x.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(x.size));
    expect([ups('HEAD', 'dig/app'), ups('GET', 'dig/app')]).toEqual([0, 1]);
    // Another repo asking for the same bytes: they are in the store, and one HEAD to this repo's
    // own upstream proves them for it (invariant 9). The upstream sees no second GET.
    await seed('dig2/app', x);
    const again = await get(base(), `/v2/hub/dig2/app/manifests/${x.digest}`);
    expect(again.status).toBe(200);
    expect(sha256Digest(again.body)).toBe(x.digest);
    expect([ups('HEAD', 'dig2/app'), ups('GET', 'dig2/app')]).toEqual([1, 0]);
    const missing = sha256Digest('nothing here');
    const none = await get(base(), `/v2/hub/dig/app/manifests/${missing}`);
    expect(none.status).toBe(404);
    expect(codes(none)).toEqual(['MANIFEST_UNKNOWN']);
  });

  it("tags/list: the upstream's list, paginated here; referrer tags only where the route carries them; cached tags (stale) when it fails", async () => {
    await seed('tags/app');
    await seed('tags/app', a, 'v2');
    const sig = `sha256-${digestHex(a.digest)}.sig`;
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    await pushSignature(up.reg.url, 'tags/app', `${up.reg.host}/tags/app`, a.digest, privateKey);
    const all = await get(base(), '/v2/hub/tags/app/tags/list');
    expect(all.status).toBe(200);
    expect(json(all)).toEqual({ name: 'hub/tags/app', tags: [sig, 'v1', 'v2'] });
    expect(all.headers.get('warning')).toBeNull();
    const page = await get(base(), '/v2/hub/tags/app/tags/list?n=1&last=sha256-z');
    expect(json(page)).toEqual({ name: 'hub/tags/app', tags: ['v1'] });
    expect(page.headers.get('link')).toBe('</v2/hub/tags/app/tags/list?last=v1&n=1>; rel="next"');
    expect(json(await get(base(), '/v2/noref/tags/app/tags/list'))).toEqual({ name: 'noref/tags/app', tags: ['v1', 'v2'] });
    const head = await get(base(), '/v2/hub/tags/app/tags/list', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);

    // The upstream fails: the tags this cache has seen, marked stale; none seen, the failure.
    expect((await get(base(), '/v2/hub/tags/app/manifests/v2')).status).toBe(200);
    up.proxy.addRule({ method: 'GET', path: /^\/v2\/tags\/app\/tags\/list/, action: { kind: 'status', status: 500 } });
    const stale = await get(base(), '/v2/hub/tags/app/tags/list');
    expect(stale.status).toBe(200);
    expect(json(stale)).toEqual({ name: 'hub/tags/app', tags: ['v2'] });
    expect(stale.headers.get('warning')).toBe(STALE_WARNING);
    const noneCached = await get(base(), '/v2/noref/tags/app/tags/list');
    expect(noneCached.status).toBe(502);
    expect(codes(noneCached)).toEqual(['UNAVAILABLE']);
    // Never stale under Always with stale-on-error false.
    expect((await get(base(), '/v2/strict/tags/app/manifests/v1')).status).toBe(200);
    const strict = await get(base(), '/v2/strict/tags/app/tags/list');
    expect(strict.status).toBe(502);
    up.proxy.clearRules();
    up.proxy.addRule({ method: 'GET', path: /^\/v2\/tags\/app\/tags\/list/, action: { kind: 'status', status: 429 } });
    expect((await get(base(), '/v2/always/tags/app/manifests/v1')).status).toBe(200);
    const limited = await get(base(), '/v2/always/tags/app/tags/list');
    expect(json(limited)).toEqual({ name: 'always/tags/app', tags: ['v1'] });
    expect(limited.headers.get('warning')).toBe(STALE_WARNING);
    // A 404 is an answer, not an outage: a repo the upstream does not have.
    const unknown = await get(base(), '/v2/hub/nosuch/app/tags/list');
    expect(unknown.status).toBe(404);
    expect(codes(unknown)).toEqual(['NAME_UNKNOWN']);
  });

  it('referrers: about a manifest the cache holds, from the upstream (tag schema and cosign tags), kept for tag-ttl; about any other digest nothing is asked', async () => {
    await seed('ref/app');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const sig = await pushSignature(up.reg.url, 'ref/app', `${up.reg.host}/ref/app`, a.digest, privateKey);
    const sbom = await pushSbom(up.reg.url, 'ref/app', { mediaType: a.mediaType, digest: a.digest, size: a.size }, { spdxVersion: 'SPDX-2.3' });
    const before = anyUps('ref/app');
    const unheld = await get(base(), `/v2/hub/ref/app/referrers/${a.digest}`);
    expect(unheld.status).toBe(200);
    expect(json(unheld)).toMatchObject({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
    expect(anyUps('ref/app')).toBe(before);

    expect((await get(base(), '/v2/hub/ref/app/manifests/v1')).status).toBe(200);
    const r = await get(base(), `/v2/hub/ref/app/referrers/${a.digest}`);
    expect(r.status).toBe(200);
    const asked = anyUps('ref/app');
    const listed = json<{ manifests: Array<{ digest: string; artifactType?: string; annotations?: object }> }>(r).manifests;
    expect(listed.map((d) => d.digest)).toEqual([sig.digest, sbom.digest].sort());
    expect(listed.find((d) => d.digest === sbom.digest)).toMatchObject({ artifactType: SBOM_TYPE, annotations: sbom.annotations });
    const filtered = await get(base(), `/v2/hub/ref/app/referrers/${a.digest}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
    expect(json<{ manifests: Array<{ digest: string }> }>(filtered).manifests.map((d) => d.digest)).toEqual([sbom.digest]);
    // Kept: no upstream request for the second answer within tag-ttl; asked again after it.
    expect(anyUps('ref/app')).toBe(asked);
    advance(61_000);
    await get(base(), `/v2/hub/ref/app/referrers/${a.digest}`);
    expect(anyUps('ref/app')).toBeGreaterThan(asked);

    // A route with `referrers: false` asks nothing and lists nothing it did not cache.
    expect((await get(base(), '/v2/noref/ref/app/manifests/v1')).status).toBe(200);
    const n = anyUps('ref/app');
    expect(json(await get(base(), `/v2/noref/ref/app/referrers/${a.digest}`)).manifests).toEqual([]);
    expect(anyUps('ref/app')).toBe(n);
  });

  it('referrers: when the upstream fails, what the cache holds (fetched by cosign tag or with a subject) is listed', async () => {
    await seed('noref/app');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const sig = await pushSignature(up.reg.url, 'noref/app', `${up.reg.host}/noref/app`, a.digest, privateKey);
    const sbom = await pushSbom(up.reg.url, 'noref/app', { mediaType: a.mediaType, digest: a.digest, size: a.size }, { spdxVersion: 'SPDX-2.3' });
    expect((await get(base(), '/v2/strict/noref/app/manifests/v1')).status).toBe(200);
    expect((await get(base(), `/v2/strict/noref/app/manifests/sha256-${digestHex(a.digest)}.sig`)).status).toBe(200);
    up.proxy.addRule({ path: /^\/v2\/noref\/app\/referrers\//, action: { kind: 'status', status: 500 } });
    const bySig = await get(base(), `/v2/strict/noref/app/referrers/${a.digest}`);
    expect(bySig.status).toBe(200);
    expect(json(bySig).manifests.map((d: { digest: string }) => d.digest)).toEqual([sig.digest]);
    expect((await get(base(), `/v2/strict/noref/app/manifests/${sbom.digest}`)).status).toBe(200);
    const both = await get(base(), `/v2/strict/noref/app/referrers/${a.digest}`);
    const listed = json<{ manifests: Array<{ digest: string; artifactType?: string }> }>(both).manifests;
    expect(listed.map((d) => d.digest)).toEqual([sig.digest, sbom.digest].sort());
    expect(listed.find((d) => d.digest === sbom.digest)!.artifactType).toBe(SBOM_TYPE);
    // A cosign signature has no artifactType of its own: its config's media type stands in.
    expect(listed.find((d) => d.digest === sig.digest)!.artifactType).toBe(MediaType.ociConfig);
    // The referrers API, where the upstream has one, is the answer (its non-manifests left out).
    up.proxy.clearRules();
    const api = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [
      { mediaType: MediaType.ociManifest, digest: sha256Digest('api-only'), size: 10, artifactType: 'application/x-test' },
      { mediaType: 'application/octet-stream', digest: sha256Digest('not a manifest'), size: 3 },
    ] };
    up.proxy.addRule({ path: /^\/v2\/noref\/app\/referrers\//, action: { kind: 'status', status: 200, headers: { 'Content-Type': MediaType.ociIndex }, body: JSON.stringify(api) } });
    const viaApi = await get(base(), `/v2/always/noref/app/referrers/${a.digest}`);
    expect(viaApi.status).toBe(200);
    expect(json(viaApi).manifests).toEqual([]); // always/noref/app holds nothing yet
    expect((await get(base(), '/v2/always/noref/app/manifests/v1')).status).toBe(200);
    const fromApi = json<{ manifests: Array<{ digest: string }> }>(await get(base(), `/v2/always/noref/app/referrers/${a.digest}`)).manifests;
    expect(fromApi.map((d) => d.digest)).toEqual([sha256Digest('api-only')]);
  });

  it('another worker fetched the manifest for this repo: read from the store after one HEAD here, and an upstream naming another digest is UNAVAILABLE', async () => {
    await seed('w1/app');
    await seed('w2/app');
    await seed('w3/app');
    // The store has a's manifest (fetched for w1/app); w2's fetch is held by "another worker".
    expect((await get(base(), `/v2/hub/w1/app/manifests/${a.digest}`)).status).toBe(200);
    const locks = layout(path.join(up.tmp.dir, 'var')).locksDir;
    const hold = async (name: string) => {
      const f = path.join(locks, `fill-${repoKey(name)}@${digestHex(a.digest)}.lock`);
      await fs.writeFile(f, `${up.reg.pid}\n`);
      setTimeout(() => void fs.rm(f, { force: true }), 150);
    };
    await hold('hub/w2/app');
    const r = await get(base(), `/v2/hub/w2/app/manifests/${a.digest}`);
    expect(r.status).toBe(200);
    expect(sha256Digest(r.body)).toBe(a.digest);
    expect(r.headers.get('content-type')).toBe(a.mediaType);
    expect([ups('HEAD', 'w2/app'), ups('GET', 'w2/app')]).toEqual([1, 0]);

    await hold('hub/w3/app');
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/w3\/app\/manifests\//, action: { kind: 'status', status: 200, headers: { 'Docker-Content-Digest': b.digest } } });
    const wrong = await get(base(), `/v2/hub/w3/app/manifests/${a.digest}`);
    expect(wrong.status).toBe(502);
    expect(codes(wrong)).toEqual(['UNAVAILABLE']);
    expect(ups('GET', 'w3/app')).toBe(0);
  });

  it('an upstream HEAD without Docker-Content-Digest: the tag is resolved by one GET of the tag', async () => {
    await seed('nohead/app');
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/nohead\/app\/manifests\/v1$/, action: { kind: 'status', status: 200 } });
    const r = await get(base(), '/v2/hub/nohead/app/manifests/v1');
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(a.digest);
    expect(sha256Digest(r.body)).toBe(a.digest);
    expect([ups('GET', 'nohead/app'), up.proxy.count('GET', /^\/v2\/nohead\/app\/manifests\/v1$/)]).toEqual([1, 1]);
    // Cached from that GET: by digest it costs nothing more.
    expect((await get(base(), `/v2/hub/nohead/app/manifests/${a.digest}`)).status).toBe(200);
    expect(ups('GET', 'nohead/app')).toBe(1);
  });

  it("Accept: */* takes the index; an image is served to a client that accepts only indexes (there is nothing to choose)", async () => {
    await seed('acc/app', idx);
    await seed('acc/img');
    expect((await get(base(), '/v2/hub/acc/app/manifests/v1', { accept: '*/*' })).headers.get('docker-content-digest')).toBe(idx.digest);
    const image = await get(base(), '/v2/hub/acc/img/manifests/v1', { accept: MediaType.ociIndex });
    expect(image.status).toBe(200);
    expect(image.headers.get('docker-content-digest')).toBe(a.digest);
  });

  it('pull-ahead starts on a GET of an unpublished image, never on a HEAD', async () => {
    await seed('pa/app');
    const blobGets = () => up.proxy.count('GET', /^\/v2\/pa\/app\/blobs\//);
    expect((await get(base(), '/v2/ahead/pa/app/manifests/v1', { method: 'HEAD' })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    expect(blobGets()).toBe(0);
    expect((await get(base(), '/v2/ahead/pa/app/manifests/v1')).status).toBe(200);
    await expect.poll(blobGets, { timeout: 10_000 }).toBe(a.blobs.length);
  });

  it('a pull by tag, and one by the digest a tag names, record when the tag was last pulled', async () => {
    await seed('at/app');
    const file = layout(path.join(up.tmp.dir, 'var')).cacheAccessFile;
    const times = async () => {
      await server.pullThrough!.accessLog.flush();
      return (JSON.parse(await fs.readFile(file, 'utf8')) as { repos: Record<string, Record<string, number>> }).repos['hub/at/app'];
    };
    expect((await get(base(), '/v2/hub/at/app/manifests/v1')).status).toBe(200);
    expect(await times()).toEqual({ v1: now });
    advance(10_000);
    expect((await get(base(), '/v2/hub/at/app/manifests/v1')).status).toBe(200);
    expect(await times()).toEqual({ v1: now });
    advance(10_000);
    expect((await get(base(), `/v2/hub/at/app/manifests/${a.digest}`)).status).toBe(200);
    expect(await times()).toEqual({ v1: now });
    // A digest no tag names records nothing new.
    const before = now;
    advance(10_000);
    expect((await get(base(), `/v2/hub/at/app/manifests/${idx.manifests[0]!.digest}`)).status).toBe(404);
    expect(await times()).toEqual({ v1: before });
  });

  it("tags/list sorts the upstream's list; an upstream that fails is logged with the repo", async () => {
    up.proxy.addRule({ method: 'GET', path: /^\/v2\/unsorted\/app\/tags\/list/, action: { kind: 'status', status: 200, body: JSON.stringify({ name: 'unsorted/app', tags: ['v2', 'a', 'v10'] }) }, times: 1 });
    expect(json(await get(base(), '/v2/hub/unsorted/app/tags/list'))).toEqual({ name: 'hub/unsorted/app', tags: ['a', 'v10', 'v2'] });
    await seed('unsorted/app');
    expect((await get(base(), '/v2/always/unsorted/app/manifests/v1')).status).toBe(200);
    up.proxy.addRule({ method: 'GET', path: /^\/v2\/unsorted\/app\/tags\/list/, action: { kind: 'status', status: 503 }, times: 1 });
    expect((await get(base(), '/v2/always/unsorted/app/tags/list')).headers.get('warning')).toBe(STALE_WARNING);
    const w = warned('upstream failed; listing the cached tags').filter((l) => l.repo === 'always/unsorted/app');
    expect(w).toHaveLength(1);
    expect(String(w[0]!.err)).toMatch(/503/);
  });

  it('serving a tag stale is logged with the repo, the tag and the reason', async () => {
    await seed('logs/app');
    expect((await get(base(), '/v2/always/logs/app/manifests/v1')).status).toBe(200);
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/logs\/app\/manifests\/v1$/, action: { kind: 'status', status: 502 }, times: 1 });
    expect((await get(base(), '/v2/always/logs/app/manifests/v1')).headers.get('warning')).toBe(STALE_WARNING);
    const w = warned('upstream failed; serving the cached tag stale').filter((l) => l.repo === 'always/logs/app');
    expect(w).toHaveLength(1);
    expect(w[0]).toMatchObject({ tag: 'v1' });
    expect(String(w[0]!.err)).toMatch(/502/);
  });

  it('referrers: each digest has its own kept answer; a failing upstream is logged and the cached ones listed', async () => {
    await seed('kept/app');
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const sig = await pushSignature(up.reg.url, 'kept/app', `${up.reg.host}/kept/app`, a.digest, privateKey);
    expect((await get(base(), '/v2/hub/kept/app/manifests/v1')).status).toBe(200);
    expect((await get(base(), `/v2/hub/kept/app/manifests/${sig.digest}`)).status).toBe(200);
    await get(base(), `/v2/hub/kept/app/referrers/${a.digest}`);
    await get(base(), `/v2/hub/kept/app/referrers/${sig.digest}`);
    const asked = anyUps('kept/app');
    expect(json(await get(base(), `/v2/hub/kept/app/referrers/${a.digest}`)).manifests.map((d: { digest: string }) => d.digest)).toEqual([sig.digest]);
    expect(json(await get(base(), `/v2/hub/kept/app/referrers/${sig.digest}`)).manifests).toEqual([]);
    expect(anyUps('kept/app')).toBe(asked);

    // Exactly tag-ttl later the kept answer is too old.
    advance(60_000);
    up.proxy.addRule({ path: /^\/v2\/kept\/app\/referrers\//, action: { kind: 'status', status: 500 }, times: 1 });
    expect(json(await get(base(), `/v2/hub/kept/app/referrers/${a.digest}`)).manifests).toEqual([]);
    const w = warned('asking the upstream for referrers failed; listing the cached ones').filter((l) => l.repo === 'hub/kept/app');
    expect(w).toHaveLength(1);
    expect(w[0]).toMatchObject({ digest: a.digest });
    expect(String(w[0]!.err)).toMatch(/500/);
  });

  it('tags/list under IfNotPresent lists its cached tags stale even with stale-on-error false, sorted whatever the pull order', async () => {
    await seed('ltags/app');
    await seed('ltags/app', a, 'v0');
    expect((await get(base(), '/v2/lazy/ltags/app/manifests/v1')).status).toBe(200);
    expect((await get(base(), '/v2/lazy/ltags/app/manifests/v0')).status).toBe(200);
    up.proxy.addRule({ method: 'GET', path: /^\/v2\/ltags\/app\/tags\/list/, action: { kind: 'status', status: 500 }, times: 1 });
    const r = await get(base(), '/v2/lazy/ltags/app/tags/list');
    expect(r.status).toBe(200);
    expect(json(r)).toEqual({ name: 'lazy/ltags/app', tags: ['v0', 'v1'] });
    expect(r.headers.get('warning')).toBe(STALE_WARNING);
  });

  it('referrers from the cache: a cosign tag of another subject and the tag schema index are not referrers of this digest', async () => {
    await seed('rc/app');
    await seed('rc/other', b);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const sig = await pushSignature(up.reg.url, 'rc/app', `${up.reg.host}/rc/app`, a.digest, privateKey);
    await pushSignature(up.reg.url, 'rc/app', `${up.reg.host}/rc/app`, b.digest, privateKey);
    await pushSbom(up.reg.url, 'rc/app', { mediaType: a.mediaType, digest: a.digest, size: a.size }, { spdxVersion: 'SPDX-2.3' });
    for (const ref of ['v1', `sha256-${digestHex(a.digest)}.sig`, `sha256-${digestHex(b.digest)}.sig`, `sha256-${digestHex(a.digest)}`]) {
      expect((await get(base(), `/v2/strict/rc/app/manifests/${ref}`)).status, ref).toBe(200);
    }
    up.proxy.addRule({ path: /^\/v2\/rc\/app\/referrers\//, action: { kind: 'status', status: 503 } });
    const r = await get(base(), `/v2/strict/rc/app/referrers/${a.digest}`);
    expect(json(r).manifests.map((x: { digest: string }) => x.digest)).toEqual([sig.digest]);
  });

  it('referrers: the upstream answer comes sorted by digest; a referrer tag that fails (not a 404) fails the ask; the route timeout bounds it', async () => {
    await seed('rs2/app');
    expect((await get(base(), '/v2/strict/rs2/app/manifests/v1')).status).toBe(200);
    const ds = ['c', 'a', 'b'].map((x) => sha256Digest(`api ${x}`));
    const api = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: ds.map((digest) => ({ mediaType: MediaType.ociManifest, digest, size: 1 })) };
    up.proxy.addRule({ path: /^\/v2\/rs2\/app\/referrers\//, action: { kind: 'status', status: 200, headers: { 'Content-Type': MediaType.ociIndex }, body: JSON.stringify(api) }, times: 1 });
    const sorted = json<{ manifests: Array<{ digest: string }> }>(await get(base(), `/v2/strict/rs2/app/referrers/${a.digest}`)).manifests.map((x) => x.digest);
    expect(sorted).toEqual([...ds].sort());

    // No referrers API (404), and the cosign tag answers 500: nothing is kept, the failure is logged.
    await seed('rs3/app');
    expect((await get(base(), '/v2/strict/rs3/app/manifests/v1')).status).toBe(200);
    up.proxy.addRule({ method: 'GET', path: new RegExp(`^/v2/rs3/app/manifests/sha256-${digestHex(a.digest)}\\.sig$`), action: { kind: 'status', status: 500 }, times: 1 });
    expect(json(await get(base(), `/v2/strict/rs3/app/referrers/${a.digest}`)).manifests).toEqual([]);
    expect(warned('asking the upstream for referrers failed; listing the cached ones').filter((l) => l.repo === 'strict/rs3/app')).toHaveLength(1);

    // An upstream slower than the route's timeout (1 s): the answer does not wait for it.
    await seed('rs4/app');
    expect((await get(base(), '/v2/strict/rs4/app/manifests/v1')).status).toBe(200);
    up.proxy.addRule({ path: /^\/v2\/rs4\/app\/referrers\//, action: { kind: 'delay', ms: 4000 }, times: 1 });
    const t0 = performance.now();
    expect((await get(base(), `/v2/strict/rs4/app/referrers/${a.digest}`)).status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(3500);
    expect(warned('asking the upstream for referrers failed; listing the cached ones').filter((l) => l.repo === 'strict/rs4/app')).toHaveLength(1);
  });

  it('concurrent cold requests for different tags and digests each get their own manifest; exactly at tag-ttl the tag is rechecked', async () => {
    await seed('cc/app');
    await seed('cc/app', b, 'v2');
    const [t1, t2, d1, d2] = await Promise.all([
      get(base(), '/v2/hub/cc/app/manifests/v1'),
      get(base(), '/v2/hub/cc/app/manifests/v2'),
      get(base(), `/v2/hub/cc/app/manifests/${a.digest}`),
      get(base(), `/v2/hub/cc/app/manifests/${b.digest}`),
    ]);
    expect([t1, t2, d1, d2].map((r) => sha256Digest(r.body))).toEqual([a.digest, b.digest, a.digest, b.digest]);
    const heads = ups('HEAD', 'cc/app');
    advance(60_000);
    expect((await get(base(), '/v2/hub/cc/app/manifests/v1')).status).toBe(200);
    expect(ups('HEAD', 'cc/app')).toBe(heads + 1);
    // A fetch leaves no fill lock behind.
    const locks = await fs.readdir(layout(path.join(up.tmp.dir, 'var')).locksDir).catch(() => [] as string[]);
    expect(locks.filter((f) => f.includes(repoKey('hub/cc/app')))).toEqual([]);
  });

  it('policy Always counts a confirmed tag as a hit; a cold index asked by an image-only client fetches and serves its amd64 image', async () => {
    await seed('hits/app');
    expect((await get(base(), '/v2/always/hits/app/manifests/v1')).status).toBe(200);
    const hits = await metric('derrick_cache_hits_total');
    expect((await get(base(), '/v2/always/hits/app/manifests/v1')).headers.get('warning')).toBeNull();
    expect(await metric('derrick_cache_hits_total')).toBe(hits + 1);
    await seed('coldidx/app', idx);
    const amd64 = idx.manifests.find((m) => m.platform === 'linux/amd64')!;
    const r = await get(base(), '/v2/always/coldidx/app/manifests/v1', { accept: MediaType.ociManifest });
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(amd64.digest);
  });

  it("another worker's fetch, and an upstream HEAD without a digest: the stored manifest is served", async () => {
    await seed('w4/app');
    expect((await get(base(), `/v2/hub/w4/app/manifests/${a.digest}`)).status).toBe(200);
    await seed('w5/app');
    const f = path.join(layout(path.join(up.tmp.dir, 'var')).locksDir, `fill-${repoKey('hub/w5/app')}@${digestHex(a.digest)}.lock`);
    await fs.writeFile(f, `${up.reg.pid}\n`);
    setTimeout(() => void fs.rm(f, { force: true }), 150);
    up.proxy.addRule({ method: 'HEAD', path: /^\/v2\/w5\/app\/manifests\//, action: { kind: 'status', status: 200 }, times: 1 });
    const r = await get(base(), `/v2/hub/w5/app/manifests/${a.digest}`);
    expect(r.status).toBe(200);
    expect(sha256Digest(r.body)).toBe(a.digest);
    expect(ups('GET', 'w5/app')).toBe(0);
  });
});
