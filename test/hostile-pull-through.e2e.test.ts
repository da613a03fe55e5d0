// Hostile input against the pull-through cache (issue 9, sections 2 and 4), black box: a real
// `derrick serve` in front of a real docker-registry (through the fault proxy, which records
// every request derrick sends upstream), with a protected published repo in the same store.
//
// - provenance (design invariant 9): an upstream manifest naming a protected repo's layer (a
//   plain layer the upstream lacks, or a foreign layer) never gets that layer served or
//   published; a layer the upstream does have is confirmed with one HEAD, not fetched again;
//   state committed by an older derrick is handled at start without a republish by hand;
// - grammar first: a corpus of bad names, references, digests and page sizes answered with the
//   spec's status and code, exactly as on a published repo, with zero upstream requests;
// - stale answers carry `Warning: 299 - "..."` for every failure class the README promises;
// - referrers of a cache repo: an OCI index from what is cached, never a 404.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { layout as makeLayout } from '../shared/layout.js';
import { MediaType, sha256Digest } from '../shared/oci.js';
import { publishRepo } from '../shared/publish/publish.js';
import { writeRepoState, type RepoState } from '../shared/publish/repo-state.js';
import { openStore } from '../shared/publish/store.js';
import { derrick } from './helpers/derrick.js';
import { startFaultProxy, type FaultAction, type FaultProxy } from './helpers/fault-proxy.js';
import { rawRequest, type RawResponse } from './helpers/http.js';
import {
  errorCode,
  exists,
  filesUnder,
  getManifest,
  pollUntil,
  pullTo,
  putManifest,
  readAppFile,
  seedImage,
  sleep,
  startPtServe,
  waitForCommit,
  writePtConfig,
  type PtServe,
  type SeededImage,
} from './helpers/pull-through.js';
import { requireTool } from './helpers/proc.js';
import { startRegistry, writeHtpasswd, type Registry } from './helpers/registry.js';
import { seedRegistry } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools =
  requireTool('docker-registry', 'hostile pull-through e2e tests are skipped') && requireTool('skopeo', 'hostile pull-through e2e tests are skipped');

const STALE_WARNING = /^299 - "[^"]*stale[^"]*"$/i;
const FOREIGN_LAYER = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';
const HEX = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';

/** Blob upload to an auth-less docker-registry: POST a session, then PUT the bytes with the digest. */
async function uploadBlob(regUrl: string, repo: string, bytes: Buffer): Promise<string> {
  const digest = sha256Digest(bytes);
  const start = await fetch(`${regUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.arrayBuffer();
  const location = start.headers.get('location');
  if (start.status !== 202 || !location) throw new Error(`upload to ${repo}: HTTP ${start.status}`);
  const u = new URL(location, regUrl);
  u.searchParams.set('digest', digest);
  const res = await fetch(u, { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream' }, body: bytes });
  if (res.status !== 201) throw new Error(`upload ${digest} to ${repo}: HTTP ${res.status} ${await res.text()}`);
  return digest;
}

async function deleteBlob(regUrl: string, repo: string, digest: string): Promise<void> {
  const res = await fetch(`${regUrl}/v2/${repo}/blobs/${digest}`, { method: 'DELETE' });
  if (res.status !== 202) throw new Error(`delete ${digest} from ${repo}: HTTP ${res.status} ${await res.text()}`);
}

describe.skipIf(!hasTools)('pull-through cache under hostile input (real docker-registry upstream)', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let proxy: FaultProxy;
  let serve: PtServe;
  let root: string;
  let cfgFile: string;
  let secret: GeneratedImage;
  let pub: GeneratedImage;
  /** The protected layer L, the protected manifest M, and their bytes. */
  let L: string;
  let lBytes: Buffer;
  let M: string;
  let mBytes: Buffer;
  const img: Record<string, SeededImage> = {};
  /** evil/plain:v1 after the hostile rewrite: names L and M as layers the upstream does not have. */
  let plain: { digest: string; body: Buffer };
  /** evil/foreign:v1: names L as a foreign layer (with urls). */
  let foreign: { digest: string; body: Buffer };
  let outSeq = 0;
  const outDir = (name: string) => path.join(tmp.dir, 'out', `${name}-${++outSeq}`);

  /** Fails when any byte window of L or M appears in a response body. */
  const expectNoProtectedBytes = (r: RawResponse, what: string) => {
    for (const [name, bytes] of [['L', lBytes], ['M', mBytes]] as const) {
      for (const at of [0, Math.floor(bytes.length / 2), bytes.length - 32]) {
        expect(r.body.includes(bytes.subarray(at, at + 32)), `${what}: a response holds bytes of ${name}`).toBe(false);
      }
    }
  };
  const upstreamCount = () => proxy.requests.length;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-hostile-pt');
    reg = await startRegistry({ allowForeignLayers: true });
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    const dir = path.join(tmp.dir, 'serve');
    root = path.join(dir, 'var');
    const secretLayout = path.join(tmp.dir, 'layouts', 'secret');
    const pubLayout = path.join(tmp.dir, 'layouts', 'pub');
    secret = await generateImage({ layoutDir: secretLayout, tag: 'v1', seed: 'protected-secret', layers: [300_000] });
    pub = await generateImage({ layoutDir: pubLayout, tag: 'v1', seed: 'public-pub', layers: [50_000] });
    L = secret.manifests[0]!.layers[0]!;
    M = secret.digest;
    lBytes = await fs.readFile(path.join(secretLayout, 'blobs', 'sha256', L.slice(7)));
    mBytes = await fs.readFile(path.join(secretLayout, 'blobs', 'sha256', M.slice(7)));

    await fs.mkdir(dir, { recursive: true });
    cfgFile = await writePtConfig(dir, 'derrick.yaml', {
      repos: [
        { name: 'secret/app', from: `oci:${secretLayout}`, protected: true },
        { name: 'pub/app', from: `oci:${pubLayout}` },
      ],
      htpasswd: await writeHtpasswd(dir, { alice: 'wonderland' }),
      routes: [
        { prefix: 'hub', url: proxy.url, tagTtl: '1h' },
        { prefix: 'stale', url: proxy.url, tagTtl: '1h', policy: 'Always', staleOnError: true, timeout: '1s' },
        { prefix: 'strict', url: proxy.url, tagTtl: '1h', policy: 'Always', staleOnError: false, timeout: '1s' },
      ],
    });
    const published = await derrick(['publish', '-c', cfgFile]);
    expect(published.code, published.stderr).toBe(0);

    await Promise.all([
      seedImage(reg, tmp.dir, 'evil/plain', { tag: 'v1', seed: 'evil-plain', format: 'docker', layers: [60_000] }).then((s) => (img.plain = s)),
      seedImage(reg, tmp.dir, 'evil/foreign', { tag: 'v1', seed: 'evil-foreign', format: 'docker', layers: [70_000] }).then((s) => (img.foreign = s)),
      seedImage(reg, tmp.dir, 'benign/app', { tag: 'v1', seed: 'benign', layers: [80_000, 40_000] }).then((s) => (img.benign = s)),
      seedImage(reg, tmp.dir, 'stale/image', { tag: 'v1', seed: 'stale', layers: [30_000] }).then((s) => (img.stale = s)),
      seedImage(reg, tmp.dir, 'ref/image', { tag: 'v1', seed: 'ref', layers: [20_000] }).then((s) => (img.ref = s)),
      // The upstream legitimately has the protected layer too (the same image pushed there).
      seedRegistry(reg.host, 'shared/app', secretLayout, 'v1'),
    ]);

    // The hostile plain manifest: its own config and layer, plus L and M as ordinary layers.
    // docker-registry checks that a pushed manifest's layers exist, so they are uploaded, the
    // manifest pushed, and the blobs deleted again: the upstream then names what it lacks.
    const plainDoc = JSON.parse(img.plain!.body.toString('utf8'));
    plainDoc.layers.push({ mediaType: MediaType.dockerLayerGzip, digest: L, size: lBytes.length }, { mediaType: MediaType.dockerLayerGzip, digest: M, size: mBytes.length });
    const plainBody = Buffer.from(JSON.stringify(plainDoc));
    await uploadBlob(reg.url, 'evil/plain', lBytes);
    await uploadBlob(reg.url, 'evil/plain', mBytes);
    await putManifest(reg.url, 'evil/plain', 'v1', plainBody, MediaType.dockerManifest);
    await deleteBlob(reg.url, 'evil/plain', L);
    await deleteBlob(reg.url, 'evil/plain', M);
    expect((await fetch(`${reg.url}/v2/evil/plain/blobs/${L}`, { method: 'HEAD' })).status, 'the upstream must lack L').toBe(404);
    plain = { digest: sha256Digest(plainBody), body: plainBody };

    // The foreign-layer manifest: L with urls, which docker-registry accepts without the blob.
    const foreignDoc = JSON.parse(img.foreign!.body.toString('utf8'));
    foreignDoc.layers.push({ mediaType: FOREIGN_LAYER, digest: L, size: lBytes.length, urls: ['https://foreign.invalid/layers/l.tar.gz'] });
    const foreignBody = Buffer.from(JSON.stringify(foreignDoc));
    await putManifest(reg.url, 'evil/foreign', 'v1', foreignBody, MediaType.dockerManifest);
    foreign = { digest: sha256Digest(foreignBody), body: foreignBody };

    serve = await startPtServe(cfgFile);
  });

  afterAll(async () => {
    await serve?.stop();
    await proxy?.close();
    await reg?.stop();
    await tmp?.cleanup();
  });

  // -------------------------------------------------------------------------------------------
  describe('provenance: a cache repo serves and publishes only what its own upstream has', () => {
    it('sanity: the protected layer is in the store, and /v2 refuses it without credentials', async () => {
      expect(await exists(makeLayout(root).storeBlob(L))).toBe(true);
      const r = await rawRequest(serve.url, `/v2/secret/app/blobs/${L}`);
      expect(r.status).toBe(401);
      expect(errorCode(r)).toBe('UNAUTHORIZED');
    });

    it('an upstream manifest naming a protected layer it lacks: 404 BLOB_UNKNOWN, no byte of it, nothing published', async () => {
      const repo = 'hub/evil/plain';
      const m = await getManifest(serve.url, repo, 'v1');
      expect(m.status, m.text).toBe(200);
      expect(m.headers['docker-content-digest']).toBe(plain.digest);
      // The image's own blobs come from the upstream as usual.
      for (const d of img.plain!.blobs) {
        const r = await rawRequest(serve.url, `/v2/${repo}/blobs/${d}`);
        expect(r.status, `${d}: ${r.text}`).toBe(200);
        expect(sha256Digest(r.body)).toBe(d);
      }
      for (const [name, d] of [['L', L], ['M', M]] as const) {
        for (const method of ['GET', 'HEAD']) {
          const r = await rawRequest(serve.url, `/v2/${repo}/blobs/${d}`, { method });
          expect(r.status, `${method} ${name}: ${r.text}`).toBe(404);
          if (method === 'GET') expect(errorCode(r), r.text).toBe('BLOB_UNKNOWN');
          expect(r.headers.location, `${method} ${name} must not redirect`).toBeUndefined();
          expectNoProtectedBytes(r, `${method} ${name}`);
        }
      }
      // The protected manifest is not served by digest either: the upstream does not have it.
      const byDigest = await getManifest(serve.url, repo, M);
      expect(byDigest.status, byDigest.text).toBe(404);
      expect(errorCode(byDigest)).toBe('MANIFEST_UNKNOWN');
      expectNoProtectedBytes(byDigest, 'manifest M by digest');
      // The doubt was settled upstream (HEAD), never by fetching the blob there.
      expect(proxy.count('HEAD', new RegExp(`^/v2/evil/plain/blobs/${L}$`))).toBeGreaterThan(0);

      // The commit ran (it logs that L is unconfirmed) and published nothing that names L or M.
      await pollUntil(async () => /blob not confirmed at the upstream/.test(serve.output()) && serve.output().includes(repo), 10_000, 'the commit to reject L');
      await sleep(500);
      const app = await readAppFile(root, repo);
      expect(app?.derrick?.tags?.v1, 'the hostile tag must not be published').toBeUndefined();
      expect(app?.derrick?.blobs?.[L]).toBeUndefined();
      for (const f of await filesUnder(path.join(root, 'published', 'master', 'hub~evil~plain'))) {
        expect(path.basename(f)).not.toBe(L);
        const d = sha256Digest(await fs.readFile(f));
        expect([L, M], `${f} holds protected bytes`).not.toContain(d);
      }
      const catalog = await rawRequest(serve.url, '/v2/_catalog');
      expect(catalog.json().repositories).not.toContain(repo);
      expect(catalog.json().repositories).not.toContain('secret/app');
    });

    it('a foreign layer naming a protected blob: never served (the client uses its urls), never asked upstream, not in the publish', async () => {
      const repo = 'hub/evil/foreign';
      const m = await getManifest(serve.url, repo, 'v1');
      expect(m.status, m.text).toBe(200);
      expect(m.headers['docker-content-digest']).toBe(foreign.digest);
      for (const d of img.foreign!.blobs) expect((await rawRequest(serve.url, `/v2/${repo}/blobs/${d}`)).status).toBe(200);
      const lAtUpstream = () => proxy.requests.filter((x) => x.path.includes(L)).length;
      const before = lAtUpstream();
      for (const method of ['GET', 'HEAD']) {
        const r = await rawRequest(serve.url, `/v2/${repo}/blobs/${L}`, { method });
        expect(r.status, `${method}: ${r.text}`).toBe(404);
        if (method === 'GET') expect(errorCode(r)).toBe('BLOB_UNKNOWN');
        expectNoProtectedBytes(r, method);
      }
      // The image is what it is: published with its manifest, the foreign layer left to its URL.
      const app = await pollUntil(async () => {
        const a = await readAppFile(root, repo);
        return a?.derrick?.tags?.v1 === foreign.digest && a;
      }, 10_000, 'hub/evil/foreign:v1 published');
      expect(app.derrick.blobs[L]).toBeUndefined();
      expect(Object.values(app.derrick.manifestBlobs ?? {}).flat()).not.toContain(L);
      for (const f of await filesUnder(path.join(root, 'published', 'master', 'hub~evil~foreign'))) {
        expect(path.basename(f)).not.toBe(L);
        expect(sha256Digest(await fs.readFile(f))).not.toBe(L);
      }
      // Neither the requests nor the commit asked the upstream for it.
      expect(lAtUpstream() - before, 'a foreign layer is not asked for upstream').toBe(0);
      // Once published, a blob request for L still gets no redirect and no bytes.
      const warm = await rawRequest(serve.url, `/v2/${repo}/blobs/${L}`);
      expect(warm.status).toBe(404);
      expect(errorCode(warm)).toBe('BLOB_UNKNOWN');
      expectNoProtectedBytes(warm, 'after commit');
    });

    it('a layer the store already holds and the upstream has: one HEAD upstream confirms it, no GET, then it is published', async () => {
      const repo = 'hub/shared/app';
      const lPath = new RegExp(`^/v2/shared/app/blobs/${L}$`);
      const got = await pullTo(serve.host, `${repo}:v1`, outDir('shared'));
      expect(got).toBe(secret.digest);
      expect(proxy.count('GET', lPath), 'L is not fetched again').toBe(0);
      expect(proxy.count('HEAD', lPath), 'L is confirmed with a HEAD').toBeGreaterThanOrEqual(1);
      await waitForCommit(serve.url, repo, L);
      expect((await readAppFile(root, repo))?.derrick?.tags?.v1).toBe(secret.digest);
      const heads = proxy.count('HEAD', lPath);
      // Proven once, the static path serves it: no more upstream requests for it.
      const r = await rawRequest(serve.url, `/v2/${repo}/blobs/${L}`);
      expect(r.status).toBe(307);
      expect(proxy.count('HEAD', lPath)).toBe(heads);
      const proof = JSON.parse(await fs.readFile(makeLayout(root).cacheProof(repo), 'utf8'));
      expect(proof.digests).toContain(L);
    });

    it('a benign image is pulled, committed, and its proofs are on disk', async () => {
      const im = img.benign!;
      expect(await pullTo(serve.host, `hub/${im.repo}:v1`, outDir('benign'))).toBe(im.digest);
      await waitForCommit(serve.url, `hub/${im.repo}`, im.blobs.at(-1)!);
      const proof = JSON.parse(await fs.readFile(makeLayout(root).cacheProof(`hub/${im.repo}`), 'utf8'));
      expect(proof).toMatchObject({ version: 1, upstream: proxy.url, repository: im.repo });
      for (const d of im.blobs) expect(proof.digests).toContain(d);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('grammar first: bad input on cache repos is the client\'s error, and never reaches the upstream', () => {
    interface Case {
      name: string;
      method?: string;
      /** Path under /v2/<cache repo>/ (or a whole /v2 path when it starts with /v2/). */
      path: string;
      status: number;
      code?: string;
      /** The same suffix on the public published repo pub/app answers the same. */
      asPublished?: boolean;
    }
    const D = (hex: string, alg = 'sha256') => `${alg}:${hex}`;
    const cases: Case[] = [
      // manifests: digests derrick cannot verify name nothing it serves
      { name: 'manifest digest with uppercase hex', path: `manifests/${D(HEX.toUpperCase())}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'manifest digest with mixed-case hex', path: `manifests/${D('A' + HEX.slice(1))}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'manifest digest sha512', path: `manifests/${D(HEX + HEX, 'sha512')}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'manifest digest sha384', path: `manifests/${D(HEX + HEX.slice(0, 32), 'sha384')}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'manifest digest of an unknown algorithm', path: `manifests/${D(HEX, 'md5')}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'reference latest:x', path: 'manifests/latest:x', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'reference a:b', path: 'manifests/a:b', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'sha256 digest of 63 hex', path: `manifests/${D(HEX.slice(1))}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'sha256 digest of 65 hex', path: `manifests/${D(HEX + 'a')}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'sha256:totallywrong', path: 'manifests/sha256:totallywrong', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'sha256 digest with base64 padding', path: `manifests/${D(HEX.slice(2) + '==')}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'digest with a bad character', path: 'manifests/sha256:xyz!', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'digest with an empty encoding', path: 'manifests/sha256:', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'digest with an empty algorithm', path: `manifests/:${HEX}`, status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'digest with an uppercase algorithm', path: `manifests/SHA256:${HEX}`, status: 400, code: 'DIGEST_INVALID', asPublished: true },
      // manifests: tags outside the tag grammar
      { name: 'tag of 129 characters', path: `manifests/${'t'.repeat(129)}`, status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'tag starting with a dot', path: 'manifests/.hidden', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'tag starting with a dash', path: 'manifests/-v1', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'tag with an encoded space', path: 'manifests/v%201', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'tag with an encoded slash', path: 'manifests/v1%2fx', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'tag ..', path: 'manifests/..', status: 404, code: 'MANIFEST_UNKNOWN', asPublished: true },
      { name: 'HEAD of a manifest digest with uppercase hex', method: 'HEAD', path: `manifests/${D(HEX.toUpperCase())}`, status: 404, asPublished: true },
      // blobs
      { name: 'blob digest with uppercase hex', path: `blobs/${D(HEX.toUpperCase())}`, status: 404, code: 'BLOB_UNKNOWN', asPublished: true },
      { name: 'blob digest sha512', path: `blobs/${D(HEX + HEX, 'sha512')}`, status: 404, code: 'BLOB_UNKNOWN', asPublished: true },
      { name: 'blob reference latest:x', path: 'blobs/latest:x', status: 404, code: 'BLOB_UNKNOWN', asPublished: true },
      { name: 'blob sha256 digest of 63 hex', path: `blobs/${D(HEX.slice(1))}`, status: 404, code: 'BLOB_UNKNOWN', asPublished: true },
      { name: 'blob that is not a digest', path: 'blobs/notadigest', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'blob digest with a bad character', path: 'blobs/sha256:xyz!', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'blob traversal', path: 'blobs/..%2f..%2fstore', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'HEAD of a blob digest with uppercase hex', method: 'HEAD', path: `blobs/${D(HEX.toUpperCase())}`, status: 404, asPublished: true },
      // tags/list page sizes
      { name: 'tags/list n=-1', path: 'tags/list?n=-1', status: 400, code: 'PAGINATION_NUMBER_INVALID', asPublished: true },
      { name: 'tags/list n=abc', path: 'tags/list?n=abc', status: 400, code: 'PAGINATION_NUMBER_INVALID', asPublished: true },
      { name: 'tags/list n=1.5', path: 'tags/list?n=1.5', status: 400, code: 'PAGINATION_NUMBER_INVALID', asPublished: true },
      { name: 'tags/list n=0x10', path: 'tags/list?n=0x10', status: 400, code: 'PAGINATION_NUMBER_INVALID', asPublished: true },
      // referrers
      { name: 'referrers of a non-digest', path: 'referrers/nope', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      { name: 'referrers of a digest with a bad character', path: 'referrers/sha256:xyz!', status: 400, code: 'DIGEST_INVALID', asPublished: true },
      // names outside the name grammar, on a cache prefix
      { name: 'uppercase name', path: '/v2/hub/Evil/plain/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { name: 'empty name component', path: '/v2/hub/evil//plain/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { name: 'name component ending in a dash', path: '/v2/hub/evil/plain-/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { name: 'name component starting with an underscore', path: '/v2/hub/_evil/plain/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { name: 'traversal into a protected repo', path: '/v2/hub/../secret/app/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { name: 'encoded traversal', path: '/v2/hub/%2e%2e/secret/app/blobs/' + D(HEX), status: 400, code: 'NAME_INVALID' },
      { name: 'encoded slash in a name', path: '/v2/hub/evil%2fplain/manifests/v1', status: 400, code: 'NAME_INVALID' },
      { name: 'name longer than 255', path: `/v2/hub/${'a'.repeat(252)}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
      { name: 'bad name on blobs', path: `/v2/hub/EVIL/blobs/${D(HEX)}`, status: 400, code: 'NAME_INVALID' },
      { name: 'bad name on tags/list', path: '/v2/hub/evil!/tags/list', status: 400, code: 'NAME_INVALID' },
      { name: 'bad name on referrers', path: `/v2/hub/evil;x/referrers/${D(HEX)}`, status: 400, code: 'NAME_INVALID' },
      // writes
      { name: 'PUT manifest', method: 'PUT', path: 'manifests/v1', status: 405, code: 'UNSUPPORTED', asPublished: true },
      { name: 'DELETE manifest', method: 'DELETE', path: 'manifests/v1', status: 405, code: 'UNSUPPORTED', asPublished: true },
      { name: 'POST blob upload', method: 'POST', path: 'blobs/uploads/', status: 405, code: 'UNSUPPORTED', asPublished: true },
      { name: 'PATCH blob upload', method: 'PATCH', path: 'blobs/uploads/abc', status: 405, code: 'UNSUPPORTED', asPublished: true },
      { name: 'DELETE blob', method: 'DELETE', path: `blobs/${D(HEX)}`, status: 405, code: 'UNSUPPORTED', asPublished: true },
    ];

    const request = (p: string, method?: string) => rawRequest(serve.url, p, { method });
    const check = (r: RawResponse, c: Case, where: string) => {
      expect(r.status, `${where}: ${r.text}`).toBe(c.status);
      expect(r.headers['content-type'], where).toBe('application/json');
      if (c.code && (c.method ?? 'GET') !== 'HEAD') expect(errorCode(r), `${where}: ${r.text}`).toBe(c.code);
      expectNoProtectedBytes(r, where);
    };

    beforeAll(async () => {
      // Commits of earlier tests may still confirm blobs upstream: start once the upstream is quiet.
      let last = -1;
      await pollUntil(async () => {
        const n = upstreamCount();
        const quiet = n === last;
        last = n;
        return quiet;
      }, 15_000, 'a quiet upstream', 1000);
    });

    it('has at least 30 cases', () => expect(cases.length).toBeGreaterThanOrEqual(30));

    it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
      // On a repo the cache has seen (hub/evil/plain) and on one it never has (hub/corpus/never).
      const targets = c.path.startsWith('/v2/') ? [c.path] : [`/v2/hub/evil/plain/${c.path}`, `/v2/hub/corpus/never/${c.path}`];
      for (const p of targets) {
        const before = upstreamCount();
        const r = await request(p, c.method);
        check(r, c, `${c.method ?? 'GET'} ${p}`);
        expect(upstreamCount() - before, `${p} must not reach the upstream: ${proxy.requests.slice(before).map((x) => `${x.method} ${x.path}`).join(', ')}`).toBe(0);
      }
      if (c.asPublished) check(await request(`/v2/pub/app/${c.path}`, c.method), c, `published ${c.method ?? 'GET'} /v2/pub/app/${c.path}`);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('stale answers: Warning 299 for every failure class, and the error when nothing is cached', () => {
    const classes: Array<{ name: string; action: FaultAction; status: number; code: string }> = [
      { name: 'connection error', action: { kind: 'reset' }, status: 503, code: 'UNAVAILABLE' },
      { name: 'timeout', action: { kind: 'delay', ms: 2500 }, status: 504, code: 'UNAVAILABLE' },
      { name: 'HTTP 500', action: { kind: 'status', status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"boom"}]}' }, status: 502, code: 'UNAVAILABLE' },
      { name: 'HTTP 502', action: { kind: 'status', status: 502 }, status: 502, code: 'UNAVAILABLE' },
      { name: 'HTTP 503', action: { kind: 'status', status: 503 }, status: 502, code: 'UNAVAILABLE' },
      { name: 'HTTP 429', action: { kind: 'status', status: 429, headers: { 'Retry-After': '9' } }, status: 429, code: 'TOOMANYREQUESTS' },
    ];
    const repoPath = /^\/v2\/stale\/image\//;

    beforeAll(async () => {
      // Cache the tag on both Always routes while the upstream answers.
      for (const prefix of ['stale', 'strict']) {
        const r = await getManifest(serve.url, `${prefix}/stale/image`, 'v1');
        expect(r.status, r.text).toBe(200);
        expect(r.headers.warning).toBeUndefined();
      }
    });
    afterAll(() => proxy.clearRules());

    it.each(classes.map((c) => [c.name, c] as const))('%s: the cached tag with Warning 299; stale-on-error false and uncached tags get the error', async (_n, c) => {
      proxy.clearRules();
      const rule = proxy.addRule({ path: repoPath, action: c.action });
      try {
        const r = await getManifest(serve.url, 'stale/stale/image', 'v1');
        expect(r.status, r.text).toBe(200);
        expect(r.headers['docker-content-digest']).toBe(img.stale!.digest);
        expect(String(r.headers.warning)).toMatch(STALE_WARNING);
        const head = await getManifest(serve.url, 'stale/stale/image', 'v1', 'HEAD');
        expect(head.status).toBe(200);
        expect(String(head.headers.warning)).toMatch(STALE_WARNING);
        const tags = await rawRequest(serve.url, '/v2/stale/stale/image/tags/list');
        expect(tags.status, tags.text).toBe(200);
        expect(tags.json()).toEqual({ name: 'stale/stale/image', tags: ['v1'] });
        expect(String(tags.headers.warning)).toMatch(STALE_WARNING);
        expect(rule.hits(), 'the fault was applied').toBeGreaterThanOrEqual(3);

        for (const [repo, ref] of [['strict/stale/image', 'v1'], ['stale/stale/image', 'uncached']] as const) {
          const e = await getManifest(serve.url, repo, ref);
          expect(e.status, `${repo}:${ref}: ${e.text}`).toBe(c.status);
          expect(errorCode(e)).toBe(c.code);
          expect(e.headers.warning).toBeUndefined();
          if (c.status === 429) expect(e.headers['retry-after']).toBe('9');
        }
      } finally {
        proxy.clearRules();
      }
      // With the upstream back, the answer is fresh again.
      const fresh = await getManifest(serve.url, 'stale/stale/image', 'v1');
      expect(fresh.status).toBe(200);
      expect(fresh.headers.warning).toBeUndefined();
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('referrers on a cache repo', () => {
    const ARTIFACT = 'application/vnd.example.signature';
    let referrer: { digest: string; body: Buffer };

    beforeAll(async () => {
      const empty = Buffer.from('{}');
      const emptyDigest = await uploadBlob(reg.url, 'ref/image', empty);
      const im = img.ref!;
      const doc = {
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        artifactType: ARTIFACT,
        config: { mediaType: MediaType.ociEmpty, digest: emptyDigest, size: 2 },
        layers: [{ mediaType: MediaType.ociEmpty, digest: emptyDigest, size: 2 }],
        subject: { mediaType: im.mediaType, digest: im.digest, size: im.body.length },
        annotations: { 'org.example.signed-by': 'test' },
      };
      const body = Buffer.from(JSON.stringify(doc));
      referrer = { digest: sha256Digest(body), body };
      await putManifest(reg.url, 'ref/image', referrer.digest, body, MediaType.ociManifest);
    });

    it('an existing cache route answers an empty OCI index (never 404), without asking the upstream', async () => {
      for (const repo of ['hub/ref/image', 'hub/never/pulled']) {
        const before = upstreamCount();
        const r = await rawRequest(serve.url, `/v2/${repo}/referrers/${img.ref!.digest}`);
        expect(r.status, r.text).toBe(200);
        expect(r.headers['content-type']).toBe(MediaType.ociIndex);
        expect(r.json()).toEqual({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
        expect(upstreamCount() - before).toBe(0);
      }
      // A name outside every route is still unknown, which an anonymous caller sees as the same
      // 401 a protected repo gives (access.ts): names can't be discovered.
      const none = await rawRequest(serve.url, `/v2/nowhere/app/referrers/${img.ref!.digest}`);
      expect(none.status).toBe(401);
      expect(errorCode(none)).toBe('UNAUTHORIZED');
    });

    it('lists a cached manifest whose subject is the digest, with artifactType and annotations; filters by artifactType', async () => {
      const repo = 'hub/ref/image';
      expect((await getManifest(serve.url, repo, 'v1')).status).toBe(200);
      const got = await getManifest(serve.url, repo, referrer.digest);
      expect(got.status, got.text).toBe(200);
      expect(got.body.equals(referrer.body)).toBe(true);
      const r = await rawRequest(serve.url, `/v2/${repo}/referrers/${img.ref!.digest}`);
      expect(r.status).toBe(200);
      expect(r.json().manifests).toEqual([
        { mediaType: MediaType.ociManifest, digest: referrer.digest, size: referrer.body.length, artifactType: ARTIFACT, annotations: { 'org.example.signed-by': 'test' } },
      ]);
      const hit = await rawRequest(serve.url, `/v2/${repo}/referrers/${img.ref!.digest}?artifactType=${encodeURIComponent(ARTIFACT)}`);
      expect(hit.headers['oci-filters-applied']).toBe('artifactType');
      expect(hit.json().manifests).toHaveLength(1);
      const miss = await rawRequest(serve.url, `/v2/${repo}/referrers/${img.ref!.digest}?artifactType=application/x-other`);
      expect(miss.headers['oci-filters-applied']).toBe('artifactType');
      expect(miss.json().manifests).toEqual([]);
    });
  });

  // -------------------------------------------------------------------------------------------
  describe('upgrade: cache state committed by a derrick that kept no proofs', () => {
    let shadow: RepoState;

    beforeAll(async () => {
      await serve.stop();
      const l = makeLayout(root);
      // What the old cache committed for hub/evil/plain (it published whatever the store held),
      // rebuilt here with the same publish code.
      const store = await openStore(l);
      await store.putBytes(plain.digest, plain.body);
      const plainDoc = JSON.parse(plain.body.toString('utf8'));
      const blobs: Record<string, number> = {};
      for (const d of [plainDoc.config, ...plainDoc.layers]) {
        blobs[d.digest] = d.size;
        expect(await store.has(d.digest), `${d.digest} in the store`).toBe(true);
      }
      shadow = {
        name: 'hub/evil/plain',
        source: 'pull-through:evil/plain',
        lastSync: new Date().toISOString(),
        etags: {},
        tags: { v1: plain.digest },
        manifests: { [plain.digest]: { mediaType: MediaType.dockerManifest, size: plain.body.length } },
        blobs,
        referrers: {},
        manifestBlobs: { [plain.digest]: Object.keys(blobs) },
      };
      await writeRepoState(l, shadow);
      await publishRepo({ layout: l, state: shadow, protected: false });
      // The two repos the new code committed lose their proofs: as if an old derrick wrote them.
      await fs.rm(l.cacheProof('hub/shared/app'));
      await fs.rm(l.cacheProof(`hub/${img.benign!.repo}`));
    });

    it('--no-fetch: blobs only that repo names stay static redirects; shared ones (the protected layer) are refused; zero upstream requests', async () => {
      const s = await startPtServe(cfgFile, ['--no-fetch']);
      try {
        const before = upstreamCount();
        for (const d of img.benign!.blobs) {
          const r = await rawRequest(s.url, `/v2/hub/${img.benign!.repo}/blobs/${d}`);
          expect(r.status, `${d}: ${r.text}`).toBe(307);
        }
        // M is hub/shared/app's own manifest (the same image), so only L is in doubt there.
        for (const [repo, doubtful] of [['hub/evil/plain', [L, M]], ['hub/shared/app', [L]]] as const) {
          for (const d of doubtful) {
            const r = await rawRequest(s.url, `/v2/${repo}/blobs/${d}`);
            expect(r.status, `${repo} ${d}: ${r.text}`).toBe(404);
            expect(errorCode(r)).toBe('BLOB_UNKNOWN');
            expect(r.headers.location).toBeUndefined();
            expectNoProtectedBytes(r, `${repo} ${d}`);
          }
        }
        await sleep(300);
        expect(upstreamCount() - before, proxy.requests.slice(before).map((x) => `${x.method} ${x.path}`).join(', ')).toBe(0);
      } finally {
        await s.stop();
      }
    });

    it('at start the doubtful blobs are confirmed upstream: the hostile tag is unpublished, the legitimate one kept with its proof', async () => {
      const s = await startPtServe(cfgFile);
      try {
        await pollUntil(async () => (await readAppFile(root, 'hub/evil/plain'))?.derrick?.tags?.v1 === undefined, 15_000, 'hub/evil/plain:v1 unpublished');
        const r = await rawRequest(s.url, `/v2/hub/evil/plain/blobs/${L}`);
        expect(r.status, r.text).toBe(404);
        expect(errorCode(r)).toBe('BLOB_UNKNOWN');
        expectNoProtectedBytes(r, 'hub/evil/plain L after the upgrade');

        const proofFile = makeLayout(root).cacheProof('hub/shared/app');
        await pollUntil(async () => (await exists(proofFile)) && JSON.parse(await fs.readFile(proofFile, 'utf8')).digests.includes(L), 15_000, 'the proof of L for hub/shared/app');
        expect((await readAppFile(root, 'hub/shared/app'))?.derrick?.tags?.v1).toBe(secret.digest);
        const shared = await rawRequest(s.url, `/v2/hub/shared/app/blobs/${L}`);
        expect(shared.status).toBe(307);
        // The benign repo was never in doubt: it kept its publish.
        expect((await readAppFile(root, `hub/${img.benign!.repo}`))?.derrick?.tags?.v1).toBe(img.benign!.digest);
      } finally {
        await s.stop();
      }
    });

    it('the proof outlives a restart: under --no-fetch the confirmed shared layer is a static redirect, with zero upstream requests', async () => {
      const s = await startPtServe(cfgFile, ['--no-fetch']);
      try {
        const before = upstreamCount();
        const shared = await rawRequest(s.url, `/v2/hub/shared/app/blobs/${L}`);
        expect(shared.status, shared.text).toBe(307);
        const evil = await rawRequest(s.url, `/v2/hub/evil/plain/blobs/${L}`);
        expect(evil.status, evil.text).toBe(404);
        expectNoProtectedBytes(evil, 'hub/evil/plain L after the restart');
        await sleep(300);
        expect(upstreamCount() - before).toBe(0);
      } finally {
        await s.stop();
      }
    });
  });
});
