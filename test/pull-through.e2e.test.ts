// Pull-through cache (issue 5), black box: real `derrick serve` processes in front of a real
// docker-registry upstream (through the fault proxy where a test needs faults), pulled by skopeo
// and by raw HTTP. Each describe has its own derrick root; each upstream repo belongs to one test,
// so the registry's access log can be counted per repo.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { derrick } from './helpers/derrick.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { rawRequest } from './helpers/http.js';
import {
  appFilePath,
  blobRequest,
  errorCode,
  errorMessage,
  exists,
  findTmpFiles,
  getManifest,
  metric,
  pollUntil,
  pullTo,
  putManifest,
  readAppFile,
  seedImage,
  sleep,
  startHeaderProxy,
  startPtServe,
  storeBlobPath,
  waitForCommit,
  writePtConfig,
  type HeaderProxy,
  type PtServe,
  type SeededImage,
} from './helpers/pull-through.js';
import { requireTool } from './helpers/proc.js';
import { skopeoListTags } from './helpers/skopeo.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools =
  requireTool('docker-registry', 'pull-through e2e tests are skipped') && requireTool('skopeo', 'pull-through e2e tests are skipped');

const sha256File = async (p: string) => 'sha256:' + createHash('sha256').update(await fs.readFile(p)).digest('hex');
const digestOf = (res: { headers: Record<string, unknown> }) => String(res.headers['docker-content-digest']);
/** Sum of the sizes of these blobs in an OCI layout. */
const blobBytes = async (layoutDir: string, digests: string[]) => {
  let n = 0;
  for (const d of digests) n += (await fs.stat(path.join(layoutDir, 'blobs', 'sha256', d.slice(7)))).size;
  return n;
};
/** The distribution spec's warning code for a stale answer (agent "-"). */
const STALE_WARNING = /^299 - "Response is stale/;

describe.skipIf(!hasTools)('pull-through cache (real docker-registry upstream)', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let proxy: FaultProxy;
  let hdr: HeaderProxy;
  const img: Record<string, SeededImage> = {};
  let outSeq = 0;
  /** A fresh directory for a skopeo oci: destination. */
  const outDir = (name: string) => path.join(tmp.dir, 'out', `${name}-${++outSeq}`);

  beforeAll(async () => {
    tmp = await tmpDir('derrick-pull-through');
    reg = await startRegistry();
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    hdr = await startHeaderProxy({ host: '127.0.0.1', port: reg.port });
    const seed = async (key: string, repo: string, o: Parameters<typeof seedImage>[3]) => {
      img[key] = await seedImage(reg, tmp.dir, repo, o);
    };
    // Distinct upstream repos per test; several seeded at once (each has its own layout).
    await Promise.all([
      seed('cw', 'cw/app', { tag: 'v1', layers: [600_000, 1_200_000, 300_000] }),
      seed('multi', 'cw/multi', { tag: 'v1', platforms: ['linux/amd64', 'linux/arm64'], layers: [250_000, 400_000] }),
      seed('sf', 'sf/image', { tag: 'v1', format: 'docker', layers: [400_000, 800_000, 1_200_000, 2_000_000] }),
      seed('corrupt', 'corrupt/image', { tag: 'v1', layers: [300_000, 700_000, 200_000] }),
    ]);
    await Promise.all([
      (async () => {
        await seed('movedA', 'moved/image', { tag: 'v1', seed: 'moved-a', layers: [200_000, 300_000] });
        await seed('movedB', 'moved/image', { tag: 'next', seed: 'moved-b', layers: [250_000, 350_000] });
      })(),
      seed('pin', 'pin/image', { tag: 'v1', layers: [200_000] }),
      seed('hdr', 'hdr/image', { tag: 'v1', layers: [100_000] }),
      seed('sfm', 'sfm/image', { tag: 'v1', layers: [100_000] }),
      seed('neverCached', 'never/cached', { tag: 'v1', layers: [300_000, 200_000] }),
    ]);
    await Promise.all([
      seed('neverUncached', 'never/uncached', { tag: 'v1', layers: [200_000] }),
      seed('force', 'force/image', { tag: 'v1', layers: [200_000] }),
      seed('evictOne', 'evict/one', { tag: 'v1', seed: 'evict-one', layers: [300_000, 600_000, 500_000] }),
      seed('evictTwo', 'evict/two', { tag: 'v1', seed: 'evict-two', layers: [600_000, 500_000, 300_000] }),
      seed('gc', 'gc/image', { tag: 'v1', seed: 'gc-image', layers: [300_000, 200_000] }),
      seed('tags', 'tags/image', { tag: 'v1', seed: 'tags-image', layers: [100_000] }),
    ]);
    await Promise.all(['a', 'b', 'c'].map((x) => seed(`lru-${x}`, `lru/${x}`, { tag: 'v1', seed: `lru-${x}`, layers: [400_000, 300_000] })));
  });

  afterAll(async () => {
    await proxy?.close();
    await hdr?.close();
    await reg?.stop();
    await tmp?.cleanup();
  });

  // -------------------------------------------------------------------------------------------
  describe('IfNotPresent routes on one serve (upstream through the fault proxy)', () => {
    let serve: PtServe;
    let root: string;

    beforeAll(async () => {
      const dir = path.join(tmp.dir, 'main');
      root = path.join(dir, 'var');
      const file = await writePtConfig(dir, 'derrick.yaml', {
        routes: [
          { prefix: 'hub', url: proxy.url, tagTtl: '2s' },
          { prefix: 'pin', url: proxy.url, tagTtl: '1h' },
          { prefix: 'hdr', url: hdr.url, tagTtl: '1h' },
        ],
      });
      serve = await startPtServe(file);
    });
    afterAll(async () => {
      proxy?.clearRules();
      await serve?.stop();
    });

    it('cold then warm skopeo pull: upstream digests; the warm pull is redirected and makes no upstream blob GET', async () => {
      const im = img.cw!;
      const repo = 'hub/cw/app';
      const misses0 = await metric(serve.url, 'derrick_cache_misses_total');
      const bytes0 = await metric(serve.url, 'derrick_cache_upstream_bytes_total');

      const cold = await pullTo(serve.host, `${repo}:v1`, outDir('cw-cold'));
      expect(cold).toBe(im.digest);
      for (const d of im.blobs) expect(await reg.waitForRequests('GET', `/v2/cw/app/blobs/${d}`, 1), `upstream GETs of ${d}`).toBe(1);
      expect(await metric(serve.url, 'derrick_cache_misses_total')).toBeGreaterThan(misses0);
      expect(await metric(serve.url, 'derrick_cache_upstream_bytes_total') - bytes0).toBeGreaterThanOrEqual(await blobBytes(im.layoutDir, im.blobs));

      // Commit: the cache repo is published and its blobs are answered with redirects.
      const location = await waitForCommit(serve.url, repo, im.blobs.at(-1)!);
      expect(location).toMatch(/\/published\/master\//);
      expect(await exists(appFilePath(root, repo)), 'published/app/hub~cw~app.json').toBe(true);
      expect((await readAppFile(root, repo))?.derrick?.tags?.v1).toBe(im.digest);

      const redirects0 = await metric(serve.url, 'derrick_redirects_total', { kind: 'blob' });
      const warm = await pullTo(serve.host, `${repo}:v1`, outDir('cw-warm'));
      expect(warm).toBe(im.digest);
      await sleep(500); // access-log lines are written after the response
      for (const d of im.blobs) expect(reg.blobGets(d, 'cw/app'), `upstream GETs of ${d} after the warm pull`).toBe(1);
      expect(await metric(serve.url, 'derrick_redirects_total', { kind: 'blob' }) - redirects0).toBeGreaterThanOrEqual(im.blobs.length);
    });

    it('cold then warm pull of a multi-arch index (--all): index and children committed, warm pull redirected', async () => {
      const im = img.multi!;
      const repo = 'hub/cw/multi';
      expect(im.manifests).toHaveLength(3);
      const cold = await pullTo(serve.host, `${repo}:v1`, outDir('multi-cold'), { all: true });
      expect(cold).toBe(im.digest);
      for (const d of im.blobs) expect(await reg.waitForRequests('GET', `/v2/cw/multi/blobs/${d}`, 1), `upstream GETs of ${d}`).toBe(1);
      await waitForCommit(serve.url, repo, im.blobs.at(-1)!);
      // Each child manifest is served by digest, byte for byte.
      for (const child of im.gen.manifests) {
        const r = await getManifest(serve.url, repo, child.digest);
        expect(r.status).toBe(200);
        expect(digestOf(r)).toBe(child.digest);
        expect('sha256:' + createHash('sha256').update(r.body).digest('hex')).toBe(child.digest);
      }
      const redirects0 = await metric(serve.url, 'derrick_redirects_total', { kind: 'blob' });
      const warm = await pullTo(serve.host, `${repo}:v1`, outDir('multi-warm'), { all: true });
      expect(warm).toBe(im.digest);
      await sleep(500);
      for (const d of im.blobs) expect(reg.blobGets(d, 'cw/multi'), `upstream GETs of ${d} after the warm pull`).toBe(1);
      expect(await metric(serve.url, 'derrick_redirects_total', { kind: 'blob' }) - redirects0).toBeGreaterThanOrEqual(im.blobs.length);
    });

    it('single-flight: 10 concurrent cold pulls make exactly one upstream GET per blob', async () => {
      const im = img.sf!;
      // Slow the upstream blob answers so that every client surely overlaps with the first fill.
      const delay = proxy.addRule({ method: 'GET', path: /^\/v2\/sf\/image\/blobs\//, action: { kind: 'delay', ms: 1500 } });
      const joins0 = await metric(serve.url, 'derrick_cache_singleflight_joins_total');
      try {
        const digests = await Promise.all(Array.from({ length: 10 }, (_, i) => pullTo(serve.host, 'pin/sf/image:v1', outDir(`sf-${i}`), { dest: 'dir' })));
        for (const d of digests) expect(d).toBe(im.digest);
      } finally {
        proxy.clearRules();
      }
      expect(delay.hits()).toBeGreaterThan(0);
      for (const d of im.blobs) await reg.waitForRequests('GET', `/v2/sf/image/blobs/${d}`, 1);
      await sleep(500);
      for (const d of im.blobs) expect(reg.blobGets(d, 'sf/image'), `upstream GETs of ${d}`).toBe(1);
      expect(await metric(serve.url, 'derrick_cache_singleflight_joins_total')).toBeGreaterThan(joins0);
    });

    it('single-flight: manifest GETs arriving while a tag miss is in flight join it (one upstream HEAD, one GET)', async () => {
      const im = img.sfm!;
      // Slow both upstream steps of the miss so that it is surely in flight when the second wave
      // arrives: the first wave during the HEAD, the second during the manifest GET.
      proxy.addRule({ method: 'HEAD', path: /^\/v2\/sfm\/image\/manifests\//, action: { kind: 'delay', ms: 300 } });
      proxy.addRule({ method: 'GET', path: /^\/v2\/sfm\/image\/manifests\//, action: { kind: 'delay', ms: 1000 } });
      let res;
      try {
        const wave = () => Array.from({ length: 5 }, () => getManifest(serve.url, 'pin/sfm/image', 'v1'));
        const first = wave();
        await sleep(600);
        res = await Promise.all([...first, ...wave()]);
      } finally {
        proxy.clearRules();
      }
      for (const r of res) {
        expect(r.status, r.text).toBe(200);
        expect(digestOf(r)).toBe(im.digest);
      }
      await reg.waitForRequests('HEAD', '/v2/sfm/image/manifests/v1', 1);
      await sleep(500);
      // Seeding made GETs too: count derrick's requests only (tag-ttl is 1h on this route).
      const mine = reg.requests().filter((r) => r.path.startsWith('/v2/sfm/image/manifests/') && r.userAgent.startsWith('derrick/'));
      const lines = mine.map((r) => r.line).join('\n');
      expect(mine.filter((r) => r.method === 'HEAD').length, `one tag resolution expected:\n${lines}`).toBe(1);
      expect(mine.filter((r) => r.method === 'GET').length, `at most one manifest GET expected:\n${lines}`).toBeLessThanOrEqual(1);
    });

    it('IfNotPresent: within tag-ttl a cached tag is served without any upstream request', async () => {
      const im = img.pin!;
      const repoPath = /^\/v2\/pin\/image\//;
      const first = await getManifest(serve.url, 'pin/pin/image', 'v1');
      expect(first.status).toBe(200);
      expect(digestOf(first)).toBe(im.digest);
      await sleep(300);
      const before = proxy.count('HEAD', repoPath) + proxy.count('GET', repoPath);
      const hits0 = await metric(serve.url, 'derrick_cache_hits_total');
      for (let i = 0; i < 3; i++) {
        const r = await getManifest(serve.url, 'pin/pin/image', 'v1', i === 1 ? 'HEAD' : 'GET');
        expect(r.status).toBe(200);
        expect(digestOf(r)).toBe(im.digest);
      }
      // ETag / If-None-Match on a cached tag.
      expect(first.headers.etag).toBeTruthy();
      const notModified = await getManifest(serve.url, 'pin/pin/image', 'v1', 'GET', { 'If-None-Match': String(first.headers.etag) });
      expect(notModified.status).toBe(304);
      await sleep(300);
      expect(proxy.count('HEAD', repoPath) + proxy.count('GET', repoPath)).toBe(before);
      expect(await metric(serve.url, 'derrick_cache_hits_total')).toBeGreaterThan(hits0);
    });

    it('tag moved upstream: the old digest within tag-ttl, the new one after it (also once committed)', async () => {
      const a = img.movedA!;
      const b = img.movedB!;
      const repo = 'hub/moved/image';
      expect(a.digest).not.toBe(b.digest);

      const r1 = await getManifest(serve.url, repo, 'v1');
      const t1 = Date.now();
      expect(r1.status).toBe(200);
      expect(digestOf(r1)).toBe(a.digest);
      expect(r1.headers['content-type']).toBe(a.mediaType);
      expect(Number(r1.headers['content-length'])).toBe(a.body.length);
      expect(r1.body.equals(a.body)).toBe(true);
      expect(r1.headers.etag).toBeTruthy();
      const maxAge = /max-age=(\d+)/.exec(String(r1.headers['cache-control']))?.[1];
      expect(maxAge, `Cache-Control: ${String(r1.headers['cache-control'])}`).toBeDefined();
      expect(Number(maxAge)).toBeLessThanOrEqual(2);

      await putManifest(reg.url, 'moved/image', 'v1', b.body, b.mediaType);
      const r2 = await getManifest(serve.url, repo, 'v1');
      expect(Date.now() - t1, 'the second GET must come within tag-ttl (2 s) of the first').toBeLessThan(1800);
      expect(digestOf(r2)).toBe(a.digest);

      await sleep(2600);
      const r3 = await getManifest(serve.url, repo, 'v1');
      expect(r3.status).toBe(200);
      expect(digestOf(r3)).toBe(b.digest);

      // Pull B fully, let it commit, then move the tag back: the published tag must not win after the TTL.
      expect(await pullTo(serve.host, `${repo}:v1`, outDir('moved-b'))).toBe(b.digest);
      await waitForCommit(serve.url, repo, b.blobs.at(-1)!);
      await pollUntil(async () => (await readAppFile(root, repo))?.derrick?.tags?.v1 === b.digest, 10_000, 'the published tag v1 -> B');
      await putManifest(reg.url, 'moved/image', 'v1', a.body, a.mediaType);
      await sleep(2600);
      const r4 = await getManifest(serve.url, repo, 'v1');
      expect(digestOf(r4)).toBe(a.digest);
      expect(await pullTo(serve.host, `${repo}:v1`, outDir('moved-a'))).toBe(a.digest);
    });

    it('a corrupted blob fails the pull, is not stored, leaves no temp file; the next pull succeeds', async () => {
      const im = img.corrupt!;
      const repo = 'hub/corrupt/image';
      const bad = im.gen.manifests[0]!.layers[1]!;
      const rule = proxy.addRule({ method: 'GET', path: new RegExp(`^/v2/corrupt/image/blobs/${bad}$`), action: { kind: 'corrupt' } });
      try {
        await expect(pullTo(serve.host, `${repo}:v1`, outDir('corrupt-1'), { timeoutMs: 60_000 })).rejects.toThrow();
        expect(rule.hits(), 'the corrupted blob was requested upstream').toBeGreaterThanOrEqual(1);
        const storeDir = path.join(root, 'store');
        await pollUntil(async () => (await findTmpFiles(storeDir)).length === 0, 5000, 'no .tmp- files under store').catch(async (err) => {
          throw new Error(`${String(err)}: ${(await findTmpFiles(storeDir)).join(', ')}`);
        });
        expect(await exists(storeBlobPath(root, bad)), 'the corrupted blob must not be in the store').toBe(false);
      } finally {
        proxy.clearRules();
      }
      expect(await pullTo(serve.host, `${repo}:v1`, outDir('corrupt-2'))).toBe(im.digest);
      const stored = await pollUntil(async () => (await exists(storeBlobPath(root, bad))) && storeBlobPath(root, bad), 5000, 'the blob in the store');
      expect(await sha256File(stored)).toBe(bad);
    });

    it('upstream 429 with nothing cached: 429 TOOMANYREQUESTS with the same Retry-After', async () => {
      proxy.addRule({
        path: /^\/v2\/ratelimited\/image\/manifests\//,
        action: {
          kind: 'status',
          status: 429,
          headers: { 'Retry-After': '7' },
          body: JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down', detail: null }] }),
        },
      });
      try {
        const r = await getManifest(serve.url, 'hub/ratelimited/image', 'v1');
        expect(r.status, r.text).toBe(429);
        expect(errorCode(r)).toBe('TOOMANYREQUESTS');
        expect(r.headers['retry-after']).toBe('7');
        expect(proxy.count('HEAD', /^\/v2\/ratelimited\//) + proxy.count('GET', /^\/v2\/ratelimited\//)).toBeGreaterThan(0);
      } finally {
        proxy.clearRules();
      }
    });

    it('upstream 404 with nothing cached: 404 MANIFEST_UNKNOWN or NAME_UNKNOWN', async () => {
      const r = await getManifest(serve.url, 'hub/does/not/exist', 'v1');
      expect(r.status, r.text).toBe(404);
      expect(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN']).toContain(errorCode(r));
      const t = await getManifest(serve.url, 'hub/cw/app', 'no-such-tag');
      expect(t.status, t.text).toBe(404);
      expect(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN']).toContain(errorCode(t));
    });

    it('tags/list of a cache repo is the upstream\'s list, uncached tags too, paginated with Link (skopeo list-tags)', async () => {
      const im = img.tags!;
      for (const t of ['v2', 'latest', '1.0']) await putManifest(reg.url, im.repo, t, im.body, im.mediaType);
      const all = ['1.0', 'latest', 'v1', 'v2'];
      expect((await skopeoListTags(`docker://${serve.host}/hub/${im.repo}`)).sort()).toEqual(all);
      const first = await rawRequest(serve.url, `/v2/hub/${im.repo}/tags/list?n=2`);
      expect(first.status, first.text).toBe(200);
      expect(first.json()).toEqual({ name: `hub/${im.repo}`, tags: ['1.0', 'latest'] });
      expect(first.headers.link).toBe(`</v2/hub/${im.repo}/tags/list?last=latest&n=2>; rel="next"`);
      const rest = await rawRequest(serve.url, `/v2/hub/${im.repo}/tags/list?last=latest&n=2`);
      expect(rest.json().tags).toEqual(['v1', 'v2']);
      expect(rest.headers.link).toBeUndefined();
      const missing = await rawRequest(serve.url, '/v2/hub/no/such/repo/tags/list');
      expect(missing.status).toBe(404);
      expect(errorCode(missing)).toBe('NAME_UNKNOWN');
    });

    it('upstream requests carry User-Agent derrick/... and X-Forwarded-For with the client address', async () => {
      const r = await getManifest(serve.url, 'hdr/hdr/image', 'v1');
      expect(r.status, r.text).toBe(200);
      expect(digestOf(r)).toBe(img.hdr!.digest);
      const mine = hdr.requests.filter((q) => q.path.startsWith('/v2/hdr/image/'));
      expect(mine.length).toBeGreaterThan(0);
      for (const q of mine) {
        expect(String(q.headers['user-agent'])).toMatch(/^derrick\//);
        expect(String(q.headers['x-forwarded-for'])).toContain('127.0.0.1');
      }
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('Never: route policy and serve --no-fetch (cache only)', () => {
    let dir: string;
    let seedFile: string;
    let neverFile: string;

    beforeAll(async () => {
      dir = path.join(tmp.dir, 'never');
      // tag-ttl 1s: by the time the Never servers run, the cached tag is past its TTL too.
      seedFile = await writePtConfig(dir, 'derrick.yaml', { routes: [{ prefix: 'hub', url: reg.url, tagTtl: '1s' }] });
      neverFile = await writePtConfig(dir, 'never.yaml', { routes: [{ prefix: 'hub', url: reg.url, tagTtl: '1s', policy: 'Never' }] });
      const seeder = await startPtServe(seedFile);
      try {
        expect(await pullTo(seeder.host, 'hub/never/cached:v1', outDir('never-seed'))).toBe(img.neverCached!.digest);
        await waitForCommit(seeder.url, 'hub/never/cached', img.neverCached!.blobs.at(-1)!);
      } finally {
        await seeder.stop();
      }
      await sleep(1100);
    });

    for (const v of [
      { name: 'route policy Never', file: () => neverFile, args: [] as string[] },
      { name: 'serve --no-fetch (route IfNotPresent)', file: () => seedFile, args: ['--no-fetch'] },
    ]) {
      it(`${v.name}: cached image served, uncached → 404 MANIFEST_UNKNOWN, zero upstream requests`, async () => {
        const serve = await startPtServe(v.file(), v.args);
        try {
          const never = /^\/v2\/never\//;
          await sleep(200);
          const before = reg.requests().filter((r) => never.test(r.path)).length;
          const unc = img.neverUncached!;

          const byTag = await getManifest(serve.url, 'hub/never/uncached', 'v1');
          expect(byTag.status, byTag.text).toBe(404);
          expect(errorCode(byTag)).toBe('MANIFEST_UNKNOWN');
          const byDigest = await getManifest(serve.url, 'hub/never/uncached', unc.digest);
          expect(byDigest.status, byDigest.text).toBe(404);
          const blob = await blobRequest(serve.url, 'hub/never/uncached', unc.blobs[0]!, 'GET');
          expect(blob.status, blob.text).toBe(404);

          expect(await pullTo(serve.host, 'hub/never/cached:v1', outDir('never-cached'))).toBe(img.neverCached!.digest);
          const cached = await getManifest(serve.url, 'hub/never/cached', 'v1');
          expect(cached.status).toBe(200);
          expect(digestOf(cached)).toBe(img.neverCached!.digest);
          // tags/list: what is cached, never the upstream's list.
          const tags = await rawRequest(serve.url, '/v2/hub/never/cached/tags/list');
          expect(tags.json()).toEqual({ name: 'hub/never/cached', tags: ['v1'] });
          const noTags = await rawRequest(serve.url, '/v2/hub/never/uncached/tags/list');
          expect(errorCode(noTags)).toBe('NAME_UNKNOWN');

          await sleep(500);
          const after = reg.requests().filter((r) => never.test(r.path));
          expect(after.length - before, `upstream requests: ${after.slice(before).map((r) => r.line).join('\n')}`).toBe(0);
        } finally {
          await serve.stop();
        }
      });
    }
  });

  // -------------------------------------------------------------------------------------------
  describe('serve --force-fetch (route IfNotPresent, tag-ttl 1h)', () => {
    let serve: PtServe;
    beforeAll(async () => {
      const file = await writePtConfig(path.join(tmp.dir, 'force'), 'derrick.yaml', { routes: [{ prefix: 'hub', url: reg.url, tagTtl: '1h' }] });
      serve = await startPtServe(file, ['--force-fetch']);
    });
    afterAll(async () => serve?.stop());

    it('two GETs of a tag within the TTL make two upstream HEADs', async () => {
      const im = img.force!;
      const p = '/v2/force/image/manifests/v1';
      const first = await getManifest(serve.url, 'hub/force/image', 'v1');
      expect(first.status, first.text).toBe(200);
      expect(digestOf(first)).toBe(im.digest);
      await sleep(300);
      const before = reg.countRequests('HEAD', p);
      for (let i = 0; i < 2; i++) {
        const r = await getManifest(serve.url, 'hub/force/image', 'v1');
        expect(r.status).toBe(200);
        expect(digestOf(r)).toBe(im.digest);
      }
      await reg.waitForRequests('HEAD', p, before + 2);
      await sleep(300);
      expect(reg.countRequests('HEAD', p) - before).toBe(2);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('upstream down (its own registry, stopped mid-test)', () => {
    let reg2: Registry;
    let serve: PtServe;
    const im2: Record<string, SeededImage> = {};
    let stopped = false;

    beforeAll(async () => {
      reg2 = await startRegistry();
      const dir = path.join(tmp.dir, 'down');
      await Promise.all([
        seedImage(reg2, dir, 'down/image', { tag: 'v1', layers: [300_000, 500_000, 200_000] }).then((s) => (im2.down = s)),
        seedImage(reg2, dir, 'down/other', { tag: 'v1', layers: [100_000] }).then((s) => (im2.other = s)),
        seedImage(reg2, dir, 'always/strict', { tag: 'v1', layers: [200_000, 100_000] }).then((s) => (im2.strict = s)),
        seedImage(reg2, dir, 'always/lenient', { tag: 'v1', layers: [200_000, 150_000] }).then((s) => (im2.lenient = s)),
      ]);
      const file = await writePtConfig(dir, 'derrick.yaml', {
        routes: [
          { prefix: 'hub', url: reg2.url, tagTtl: '1s' },
          { prefix: 'strict', url: reg2.url, tagTtl: '1h', policy: 'Always', staleOnError: false },
          { prefix: 'lenient', url: reg2.url, tagTtl: '1h', policy: 'Always', staleOnError: true },
        ],
      });
      serve = await startPtServe(file);
    });
    afterAll(async () => {
      await serve?.stop();
      if (!stopped) await reg2?.stop();
    });

    it('route policy Always: two GETs of a tag within the TTL make two upstream HEADs', async () => {
      const p = '/v2/always/strict/manifests/v1';
      const first = await getManifest(serve.url, 'strict/always/strict', 'v1');
      expect(first.status, first.text).toBe(200);
      await sleep(300);
      const before = reg2.countRequests('HEAD', p);
      for (let i = 0; i < 2; i++) {
        const r = await getManifest(serve.url, 'strict/always/strict', 'v1');
        expect(r.status).toBe(200);
        expect(digestOf(r)).toBe(im2.strict!.digest);
      }
      await reg2.waitForRequests('HEAD', p, before + 2);
      await sleep(300);
      expect(reg2.countRequests('HEAD', p) - before).toBe(2);
    });

    it('pulls and commits while the upstream is up', async () => {
      for (const [prefix, key] of [['hub', 'down'], ['strict', 'strict'], ['lenient', 'lenient']] as const) {
        const im = im2[key]!;
        expect(await pullTo(serve.host, `${prefix}/${im.repo}:v1`, outDir(`down-${key}`))).toBe(im.digest);
        await waitForCommit(serve.url, `${prefix}/${im.repo}`, im.blobs.at(-1)!);
      }
    });

    it('with the upstream stopped and the tag past its TTL: stale by tag (Warning 299), by digest, and skopeo pulls both', async () => {
      await reg2.stop();
      stopped = true;
      await sleep(1300);
      const im = im2.down!;
      const stale0 = await metric(serve.url, 'derrick_cache_stale_total');
      const r = await getManifest(serve.url, 'hub/down/image', 'v1');
      expect(r.status, r.text).toBe(200);
      expect(digestOf(r)).toBe(im.digest);
      expect(String(r.headers.warning)).toMatch(STALE_WARNING);
      expect(await metric(serve.url, 'derrick_cache_stale_total')).toBeGreaterThan(stale0);
      expect(await pullTo(serve.host, 'hub/down/image:v1', outDir('down-tag'))).toBe(im.digest);
      expect(await pullTo(serve.host, `hub/down/image@${im.digest}`, outDir('down-digest'))).toBe(im.digest);
    });

    it('tags/list with the upstream stopped: the cached tags with Warning 299; nothing cached: a 5xx spec error', async () => {
      const r = await rawRequest(serve.url, '/v2/hub/down/image/tags/list');
      expect(r.status, r.text).toBe(200);
      expect(r.json()).toEqual({ name: 'hub/down/image', tags: ['v1'] });
      expect(String(r.headers.warning)).toMatch(STALE_WARNING);
      const none = await rawRequest(serve.url, '/v2/hub/down/other/tags/list');
      expect([502, 503, 504], none.text).toContain(none.status);
      expect(errorMessage(none)).toMatch(/unreachable/i);
    });

    it('with the upstream stopped and nothing cached: 502/503/504 saying the upstream is unreachable', async () => {
      const r = await getManifest(serve.url, 'hub/down/other', 'v1');
      expect([502, 503, 504], r.text).toContain(r.status);
      expect(Array.isArray(r.json().errors)).toBe(true);
      expect(errorMessage(r)).toMatch(/unreachable/i);
    });

    it('Always with the upstream stopped: stale-on-error false → 5xx spec error; stale-on-error true → stale with Warning', async () => {
      const strict = await getManifest(serve.url, 'strict/always/strict', 'v1');
      expect(strict.status, strict.text).toBeGreaterThanOrEqual(500);
      expect(strict.status).toBeLessThan(600);
      expect(Array.isArray(strict.json().errors)).toBe(true);
      expect(errorMessage(strict)).toMatch(/unreachable/i);

      const lenient = await getManifest(serve.url, 'lenient/always/lenient', 'v1');
      expect(lenient.status, lenient.text).toBe(200);
      expect(digestOf(lenient)).toBe(im2.lenient!.digest);
      expect(String(lenient.headers.warning)).toMatch(STALE_WARNING);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('LRU order across a serve restart (cache.max-size holds two of three images)', () => {
    let serve: PtServe | undefined;
    let root: string;
    let file: string;

    beforeAll(async () => {
      const dir = path.join(tmp.dir, 'lru');
      root = path.join(dir, 'var');
      const sizes = await Promise.all(['a', 'b', 'c'].map((x) => img[`lru-${x}`]!).map((m) => blobBytes(m.layoutDir, [...m.blobs, m.digest])));
      const maxSize = Math.max(...sizes) * 2 + Math.floor(Math.min(...sizes) / 2);
      file = await writePtConfig(dir, 'derrick.yaml', { routes: [{ prefix: 'hub', url: reg.url, tagTtl: '1h' }], maxSize });
    });
    afterAll(async () => serve?.stop());

    it('evicts the image pulled least recently before the restart, not the one committed first', async () => {
      const [a, b, c] = ['a', 'b', 'c'].map((x) => img[`lru-${x}`]!);
      serve = await startPtServe(file);
      for (const [x, im] of [['a', a], ['b', b]] as const) {
        expect(await pullTo(serve.host, `hub/lru/${x}:v1`, outDir(`lru-${x}`))).toBe(im!.digest);
        await waitForCommit(serve.url, `hub/lru/${x}`, im!.blobs.at(-1)!);
        await sleep(50);
      }
      // a again: now b is the least recently pulled, though a was committed first.
      expect(await pullTo(serve.host, 'hub/lru/a:v1', outDir('lru-a-again'))).toBe(a!.digest);
      await serve.stop();
      expect(await exists(path.join(root, 'store', 'cache-access.json'))).toBe(true);

      serve = await startPtServe(file);
      expect(await pullTo(serve.host, 'hub/lru/c:v1', outDir('lru-c'))).toBe(c!.digest);
      await waitForCommit(serve.url, 'hub/lru/c', c!.blobs.at(-1)!);
      await pollUntil(async () => (await readAppFile(root, 'hub/lru/b'))?.derrick?.tags?.v1 === undefined, 10_000, 'hub/lru/b:v1 evicted');
      expect((await readAppFile(root, 'hub/lru/a'))?.derrick?.tags?.v1).toBe(a!.digest);
      expect((await readAppFile(root, 'hub/lru/c'))?.derrick?.tags?.v1).toBe(c!.digest);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('derrick gc beside a running serve', () => {
    let serve: PtServe;
    let root: string;
    let file: string;
    let graceZero: string;

    beforeAll(async () => {
      const dir = path.join(tmp.dir, 'gc');
      root = path.join(dir, 'var');
      // No pull-ahead: the test needs an image left incomplete after its manifest is served.
      const routes = [{ prefix: 'hub', url: reg.url, tagTtl: '1h', pullAhead: false }];
      file = await writePtConfig(dir, 'derrick.yaml', { routes });
      graceZero = await writePtConfig(dir, 'grace-zero.yaml', { routes, grace: '0s' });
      serve = await startPtServe(file);
    });
    afterAll(async () => serve?.stop());

    it('leaves fetched-but-unpublished objects younger than grace; past it they go, and are fetched again', async () => {
      const im = img.gc!;
      const repo = 'hub/gc/image';
      const layer = im.gen.manifests[0]!.layers[0]!;
      // A blob and the manifest fetched, the image not complete: nothing published names them.
      const blob = await blobRequest(serve.url, repo, layer, 'GET');
      expect(blob.status).toBe(200);
      expect(digestOf(blob)).toBe(layer);
      expect((await getManifest(serve.url, repo, 'v1')).status).toBe(200);
      await pollUntil(async () => exists(storeBlobPath(root, layer)), 10_000, 'the layer in the store');
      expect(await exists(storeBlobPath(root, im.digest))).toBe(true);

      const young = await derrick(['gc', '-c', file]);
      expect(young.code, young.stderr).toBe(0);
      expect(young.stdout).toMatch(/^gc: deleted 0 masters and 0 blobs \(.*\); 2 unreferenced blobs younger than grace kept$/m);
      expect(await exists(storeBlobPath(root, layer))).toBe(true);

      const old = await derrick(['gc', '-c', graceZero]);
      expect(old.code, old.stderr).toBe(0);
      const deleted = [...old.stdout.matchAll(/^deleted blob (sha256:[0-9a-f]{64})/gm)].map((m) => m[1]).sort();
      expect(deleted).toEqual([layer, im.digest].sort());
      expect(await exists(storeBlobPath(root, layer))).toBe(false);

      // The pull fetches what gc took, and the commit still happens (the manifest the serve held
      // in memory is put back into the store).
      expect(await pullTo(serve.host, `${repo}:v1`, outDir('gc'))).toBe(im.digest);
      await waitForCommit(serve.url, repo, im.blobs.at(-1)!);
      await pollUntil(async () => (await readAppFile(root, repo))?.derrick?.tags?.v1 === im.digest, 10_000, `${repo}:v1 published`);
      for (const d of [...im.blobs, im.digest]) expect(await sha256File(storeBlobPath(root, d)), d).toBe(d);

      // Published now: even with grace 0, gc takes nothing of it.
      const after = await derrick(['gc', '-c', graceZero]);
      expect(after.code, after.stderr).toBe(0);
      expect(after.stdout).toMatch(/^gc: deleted 0 masters and 0 blobs/m);
      expect(await pullTo(serve.host, `${repo}:v1`, outDir('gc-warm'))).toBe(im.digest);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('eviction (cache.max-size below two images)', () => {
    let serve: PtServe;
    let root: string;
    let local: GeneratedImage;

    beforeAll(async () => {
      const dir = path.join(tmp.dir, 'evict');
      root = path.join(dir, 'var');
      // A published (non-cache) repo whose only layer is byte-identical to evict/one's first layer
      // (same seed, same index, same size).
      const localLayout = path.join(dir, 'local-layout');
      local = await generateImage({ layoutDir: localLayout, tag: 'v1', seed: 'evict-one', layers: [300_000] });
      const one = img.evictOne!;
      const two = img.evictTwo!;
      const shared = local.manifests[0]!.layers[0]!;
      expect(shared).toBe(one.gen.manifests[0]!.layers[0]);
      const sizeOne = await blobBytes(one.layoutDir, [...one.blobs, one.digest]);
      const sizeTwo = await blobBytes(two.layoutDir, [...two.blobs, two.digest]);
      const sharedSize = await blobBytes(localLayout, [shared]);
      // Holds either image alone, never both, whether or not the shared layer counts for image 1.
      const both = sizeOne + sizeTwo - sharedSize; // the smaller of the two ways to count both images
      const maxSize = Math.floor((Math.max(sizeOne, sizeTwo) + both) / 2);
      expect(maxSize).toBeGreaterThan(Math.max(sizeOne, sizeTwo));
      expect(maxSize).toBeLessThan(both);
      const file = await writePtConfig(dir, 'derrick.yaml', {
        repos: [{ name: 'local/shared', from: `oci:${localLayout}` }],
        routes: [{ prefix: 'hub', url: reg.url, tagTtl: '1h' }],
        maxSize,
      });
      const pub = await derrick(['publish', '-c', file]);
      expect(pub.code, pub.stderr).toBe(0);
      expect(await exists(storeBlobPath(root, shared))).toBe(true);
      serve = await startPtServe(file);
    });
    afterAll(async () => serve?.stop());

    it('pulling image 2 evicts image 1 (LRU): unpublished, unique blobs deleted; the blob a published repo shares survives', async () => {
      const one = img.evictOne!;
      const two = img.evictTwo!;
      const shared = local.manifests[0]!.layers[0]!;
      const uniqueToOne = one.blobs.filter((d) => d !== shared && !two.blobs.includes(d));
      expect(uniqueToOne.length).toBeGreaterThanOrEqual(3);

      expect(await pullTo(serve.host, 'hub/evict/one:v1', outDir('evict-one'))).toBe(one.digest);
      await waitForCommit(serve.url, 'hub/evict/one', one.blobs.at(-1)!);
      expect((await readAppFile(root, 'hub/evict/one'))?.derrick?.tags?.v1).toBe(one.digest);
      for (const d of uniqueToOne) expect(await exists(storeBlobPath(root, d)), `${d} stored`).toBe(true);
      await sleep(200);

      const ev0 = await metric(serve.url, 'derrick_cache_evictions_total');
      expect(await pullTo(serve.host, 'hub/evict/two:v1', outDir('evict-two'))).toBe(two.digest);
      await waitForCommit(serve.url, 'hub/evict/two', two.blobs.at(-1)!);

      // Image 1 is unpublished (its cache repo had nothing else, so the app file goes) ...
      await pollUntil(async () => (await readAppFile(root, 'hub/evict/one'))?.derrick?.tags?.v1 === undefined, 10_000, 'hub/evict/one:v1 unpublished');
      expect(await exists(appFilePath(root, 'hub/evict/one')), 'published/app/hub~evict~one.json').toBe(false);
      // ... then its unique blobs are deleted.
      await pollUntil(
        async () => (await Promise.all(uniqueToOne.map((d) => exists(storeBlobPath(root, d))))).every((e) => !e),
        10_000,
        'image 1 blobs deleted from the store',
      );
      expect(await metric(serve.url, 'derrick_cache_evictions_total')).toBeGreaterThan(ev0);

      // The shared layer survives and the published repo still serves it.
      expect(await exists(storeBlobPath(root, shared)), 'the blob shared with local/shared').toBe(true);
      expect(await sha256File(storeBlobPath(root, shared))).toBe(shared);
      const redirect = await blobRequest(serve.url, 'local/shared', shared, 'GET');
      expect(redirect.status).toBe(307);
      const loc = new URL(String(redirect.headers.location), serve.url);
      const file = await rawRequest(loc.origin, loc.pathname + loc.search);
      expect(file.status).toBe(200);
      expect('sha256:' + createHash('sha256').update(file.body).digest('hex')).toBe(shared);

      // Image 2 is still cached, published and served.
      expect((await readAppFile(root, 'hub/evict/two'))?.derrick?.tags?.v1).toBe(two.digest);
      for (const d of two.blobs) expect(await exists(storeBlobPath(root, d)), `${d} of image 2`).toBe(true);
      expect(await pullTo(serve.host, 'hub/evict/two:v1', outDir('evict-two-again'))).toBe(two.digest);
    });
  });
});
