// The proof record on disk: written for what the repo's manifests name, read back only for the
// same upstream, and told apart from "no record at all" (state from before proofs were kept).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../../scripts/gen-image.js';
import { pushImage } from '../../scripts/soak/upstream.js';
import { loadConfig } from '../../shared/config.js';
import { requireTool } from '../../test/helpers/proc.js';
import { startProxiedUpstream, type ProxiedUpstream } from '../../test/helpers/proxied-upstream.js';
import { layout, type Layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { addManifest, cachedManifest, newCacheRepo } from './cache-repo.js';
import { createProofs } from './provenance.js';
import { createRoutes, type RouteMatch } from './routes.js';
import { createSingleFlight } from './single-flight.js';

const log = createLogger({ level: 'silent' });
const hasRegistry = requireTool('docker-registry', 'the provenance checks against an upstream are skipped');
let dir: string;
let l: Layout;

/** Only what the record needs of a route: its URL, policy, and the upstream repository. */
const routeTo = (url: string, upstreamRepo = 'x'): RouteMatch => ({ upstreamRepo, route: { cfg: { url }, policy: 'IfNotPresent' } }) as unknown as RouteMatch;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-proofs-'));
  l = layout(dir);
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function repoWithImage() {
  const layer = sha256Digest('layer');
  const config = sha256Digest('config');
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: config, size: 6 },
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer, size: 5 }],
    }),
  );
  const repo = newCacheRepo('hub/x', 'x');
  const digest = sha256Digest(bytes);
  addManifest(repo, digest, cachedManifest(bytes, MediaType.ociManifest));
  return { repo, digest, layer, config };
}

describe('proof records', () => {
  it('no record at all is undefined: the repo was committed before proofs were kept', async () => {
    const m = routeTo('http://up.example');
    const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 1000, log });
    expect(await proofs.load('hub/x', m)).toBeUndefined();
  });

  it('saves the proven digests its manifests name, not the unproven nor the no longer named, and reads them back', async () => {
    const m = routeTo('http://up.example');
    const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 1000, log });
    const { repo, digest, layer, config } = repoWithImage();
    repo.proven.add(layer).add(sha256Digest('evicted long ago'));
    await proofs.save(repo);
    expect(await proofs.load('hub/x', m)).toEqual(new Set([digest, layer].sort()));
    expect((await proofs.load('hub/x', m))!.has(config)).toBe(false);
    const onDisk = JSON.parse(await fs.readFile(l.cacheProof('hub/x'), 'utf8'));
    expect(onDisk).toMatchObject({ version: 1, upstream: 'http://up.example', repository: 'x' });
  });

  it('a record about another upstream (or upstream repository) proves nothing', async () => {
    const m = routeTo('http://up.example');
    const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 1000, log });
    const { repo, layer } = repoWithImage();
    repo.proven.add(layer);
    await proofs.save(repo);
    expect(await proofs.load('hub/x', routeTo('http://elsewhere.example'))).toEqual(new Set());
    expect(await proofs.load('hub/x', routeTo('http://up.example', 'y'))).toEqual(new Set());
  });

  it('an unreadable record proves nothing (every blob is confirmed again), and drop removes it', async () => {
    const m = routeTo('http://up.example');
    const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 1000, log });
    await fs.mkdir(l.cacheProofDir, { recursive: true });
    await fs.writeFile(l.cacheProof('hub/x'), '{"version":1,"upstream":');
    expect(await proofs.load('hub/x', m)).toEqual(new Set());
    await proofs.drop('hub/x');
    expect(await proofs.load('hub/x', m)).toBeUndefined();
  });

  it('under policy Never a doubt is not settled upstream: BLOB_UNKNOWN', async () => {
    const m = { ...routeTo('http://up.example'), route: { cfg: { url: 'http://up.example' }, policy: 'Never' } } as unknown as RouteMatch;
    const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 1000, log });
    const { repo, layer } = repoWithImage();
    await expect(proofs.check(repo, m, layer, { signal: AbortSignal.timeout(1000) })).rejects.toMatchObject({ code: 'BLOB_UNKNOWN' });
    repo.proven.add(layer);
    await expect(proofs.check(repo, m, layer, { signal: AbortSignal.timeout(1000) })).resolves.toBeUndefined();
  });
});

describe.skipIf(!hasRegistry)('settling a doubt at the upstream (a real docker-registry behind the fault proxy)', () => {
  let up: ProxiedUpstream;
  let img: GeneratedImage;
  let m: RouteMatch;
  beforeAll(async () => {
    up = await startProxiedUpstream('derrick-proofs-up');
    img = await generateImage({ layoutDir: up.gen, tag: 'v1', seed: 'proofs', layers: [100] });
    await pushImage(up.reg.url, 'lib/p', up.gen, img, 'v1');
    const file = path.join(up.tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, `root: ./var\nupstreams:\n  - { prefix: hub, url: ${JSON.stringify(up.proxy.url)} }\n`);
    m = createRoutes(loadConfig(file).upstreams).match('hub/lib/p')!;
  });
  afterAll(async () => {
    await up?.close();
  });
  const opts = () => ({ signal: AbortSignal.timeout(10_000) });
  const heads = (digest: string) => up.proxy.count('HEAD', new RegExp(`^/v2/lib/p/blobs/${digest}$`));
  const make = () => createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 10_000, log });

  it('one HEAD for concurrent askers proves a blob the upstream has; a proven one costs nothing', async () => {
    const proofs = make();
    const repo = newCacheRepo('hub/lib/p', 'lib/p');
    const [layer] = img.manifests[0]!.layers;
    await Promise.all([proofs.check(repo, m, layer!, opts()), proofs.check(repo, m, layer!, opts()), proofs.check(repo, m, layer!, opts())]);
    expect(repo.proven.has(layer!)).toBe(true);
    expect(heads(layer!)).toBe(1);
    await proofs.check(repo, m, layer!, opts());
    expect(heads(layer!)).toBe(1);
  });

  it("a blob the upstream lacks stays unproven (the upstream's 404); an answer about another digest is UNAVAILABLE", async () => {
    const proofs = make();
    const repo = newCacheRepo('hub/lib/p', 'lib/p');
    const missing = sha256Digest('not at the upstream');
    await expect(proofs.check(repo, m, missing, opts())).rejects.toMatchObject({ name: 'UpstreamError', kind: 'not-found' });
    expect(repo.proven.has(missing)).toBe(false);
    const config = img.manifests[0]!.config;
    up.proxy.addRule({ method: 'HEAD', path: /\/blobs\//, action: { kind: 'status', status: 200, headers: { 'Docker-Content-Digest': missing } }, times: 1 });
    await expect(proofs.check(repo, m, config, opts())).rejects.toMatchObject({ code: 'UNAVAILABLE', status: 502 });
    expect(repo.proven.has(config)).toBe(false);
    // An answer without a digest header is the registry's word that it has the blob.
    up.proxy.addRule({ method: 'HEAD', path: /\/blobs\//, action: { kind: 'status', status: 200 }, times: 1 });
    await proofs.check(repo, m, config, opts());
    expect(repo.proven.has(config)).toBe(true);
  });

  it("another process's record proves a digest (and the rest of the record) without asking the upstream", async () => {
    const writer = newCacheRepo('hub/lib/p', 'lib/p');
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: sha256Digest('rc'), size: 2 }, layers: [{ mediaType: MediaType.ociLayerGzip, digest: sha256Digest('rl'), size: 2 }] }));
    addManifest(writer, sha256Digest(bytes), cachedManifest(bytes, MediaType.ociManifest));
    writer.proven.add(sha256Digest('rc')).add(sha256Digest('rl'));
    await make().save(writer);
    const reader = newCacheRepo('hub/lib/p', 'lib/p');
    await make().check(reader, m, sha256Digest('rl'), opts());
    expect([...reader.proven].sort()).toEqual([sha256Digest(bytes), sha256Digest('rc'), sha256Digest('rl')].sort());
    expect(heads(sha256Digest('rl'))).toBe(0);
  });

  it('checkAll confirms what it can and leaves the rest unproven; under Never, or for a name no route takes, it asks nothing', async () => {
    const repo = newCacheRepo('hub/lib/p', 'lib/p');
    const missing = sha256Digest('checkAll: not there');
    const config = img.manifests[0]!.config;
    const before = up.proxy.requests.length;
    await createProofs({ layout: l, match: () => undefined, once: createSingleFlight(), timeoutMs: () => 10_000, log }).checkAll(repo, [config]);
    const never = { ...m, route: { ...m.route, policy: 'Never' } } as RouteMatch;
    await createProofs({ layout: l, match: () => never, once: createSingleFlight(), timeoutMs: () => 10_000, log }).checkAll(repo, [config]);
    expect(up.proxy.requests.length).toBe(before);
    await make().checkAll(repo, [config, missing]);
    expect(repo.proven.has(config)).toBe(true);
    expect(repo.proven.has(missing)).toBe(false);
    // The route's timeout bounds each HEAD.
    up.proxy.addRule({ method: 'HEAD', path: /\/blobs\//, action: { kind: 'delay', ms: 2000 }, times: 1 });
    const slow = newCacheRepo('hub/lib/p', 'lib/p');
    const t0 = Date.now();
    await createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 200, log }).checkAll(slow, [config]);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(slow.proven.has(config)).toBe(false);
  });

  it('save writes nothing for a name no route takes', async () => {
    const { repo } = repoWithImage();
    await createProofs({ layout: l, match: () => undefined, once: createSingleFlight(), timeoutMs: () => 1000, log }).save(repo);
    await expect(fs.access(l.cacheProof('hub/x'))).rejects.toThrow();
  });
});

describe.skipIf(!hasRegistry)('a proof record that cannot be read', () => {
  it('is no proof: the digest is confirmed at the upstream instead', async () => {
    const up = await startProxiedUpstream('derrick-proofs-eisdir');
    try {
      const img = await generateImage({ layoutDir: up.gen, tag: 'v1', seed: 'eisdir', layers: [50] });
      await pushImage(up.reg.url, 'lib/q', up.gen, img, 'v1');
      const file = path.join(up.tmp.dir, 'derrick.yaml');
      await fs.writeFile(file, `root: ./var\nupstreams:\n  - { prefix: hub, url: ${JSON.stringify(up.proxy.url)} }\n`);
      const m = createRoutes(loadConfig(file).upstreams).match('hub/lib/q')!;
      // A directory where the record should be: reading it fails with EISDIR, not ENOENT.
      await fs.mkdir(l.cacheProof('hub/lib/q'), { recursive: true });
      const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 10_000, log });
      await expect(proofs.load('hub/lib/q', m)).rejects.toMatchObject({ code: 'EISDIR' });
      const repo = newCacheRepo('hub/lib/q', 'lib/q');
      const config = img.manifests[0]!.config;
      await proofs.check(repo, m, config, { signal: AbortSignal.timeout(10_000) });
      expect(repo.proven.has(config)).toBe(true);
      expect(up.proxy.count('HEAD', new RegExp(`^/v2/lib/q/blobs/${config}$`))).toBe(1);
    } finally {
      await up.close();
    }
  });
});

describe('what the proofs tell the operator', () => {
  const capture = () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info', stream: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
    return { lines, logger };
  };

  it('a record about another upstream, and an unreadable one, are logged with the file and why', async () => {
    const { lines, logger } = capture();
    const m = routeTo('http://up.example');
    const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 1000, log: logger });
    const { repo } = repoWithImage();
    await proofs.save(repo);
    await proofs.load('hub/x', routeTo('http://elsewhere.example', 'y'));
    expect(lines.at(-1)).toMatchObject({ level: 40, msg: 'cache proofs are about another upstream; every blob will be confirmed again', repo: 'hub/x', file: l.cacheProof('hub/x'), was: 'http://up.example x' });
    await fs.writeFile(l.cacheProof('hub/x'), '[]');
    await proofs.load('hub/x', m);
    expect(lines.at(-1)).toMatchObject({ level: 40, msg: 'unreadable cache proofs; every blob will be confirmed again', repo: 'hub/x', file: l.cacheProof('hub/x') });
    expect(String(lines.at(-1)!.err)).not.toBe('');
    expect(lines).toHaveLength(2);
  });

  it('checkAll under Never, or for a name no route takes, neither asks nor warns; dropping a record twice is fine', async () => {
    const { lines, logger } = capture();
    const never = { ...routeTo('http://up.example'), route: { cfg: { url: 'http://up.example' }, policy: 'Never' } } as unknown as RouteMatch;
    const { repo, layer } = repoWithImage();
    await createProofs({ layout: l, match: () => never, once: createSingleFlight(), timeoutMs: () => 1000, log: logger }).checkAll(repo, [layer]);
    const proofs = createProofs({ layout: l, match: () => undefined, once: createSingleFlight(), timeoutMs: () => 1000, log: logger });
    await proofs.checkAll(repo, [layer]);
    expect(lines).toEqual([]);
    expect(repo.proven.has(layer)).toBe(false);
    await proofs.drop('hub/x');
    await expect(proofs.drop('hub/x')).resolves.toBeUndefined();
  });
});

describe.skipIf(!hasRegistry)('what the proofs tell the operator, with an upstream', () => {
  it('a blob confirmed is logged at info; one that cannot be is a warning naming the repo, the digest and the error', async () => {
    const up = await startProxiedUpstream('derrick-proofs-log');
    try {
      const img = await generateImage({ layoutDir: up.gen, tag: 'v1', seed: 'log', layers: [50] });
      await pushImage(up.reg.url, 'lib/r', up.gen, img, 'v1');
      const file = path.join(up.tmp.dir, 'derrick.yaml');
      await fs.writeFile(file, `root: ./var\nupstreams:\n  - { prefix: hub, url: ${JSON.stringify(up.proxy.url)} }\n`);
      const m = createRoutes(loadConfig(file).upstreams).match('hub/lib/r')!;
      const lines: Array<Record<string, unknown>> = [];
      const logger = createLogger({ level: 'info', stream: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
      const proofs = createProofs({ layout: l, match: () => m, once: createSingleFlight(), timeoutMs: () => 10_000, log: logger });
      const repo = newCacheRepo('hub/lib/r', 'lib/r');
      const config = img.manifests[0]!.config;
      const missing = sha256Digest('log: not there');
      await proofs.checkAll(repo, [config, missing]);
      expect(lines.find((x) => x.msg === 'blob confirmed at the upstream')).toMatchObject({ level: 30, repo: 'hub/lib/r', digest: config });
      const warn = lines.find((x) => x.level === 40)!;
      expect(warn).toMatchObject({ msg: 'blob not confirmed at the upstream; its image stays unpublished', repo: 'hub/lib/r', digest: missing });
      expect(String(warn.err)).toMatch(/blob unknown|404/);
    } finally {
      await up.close();
    }
  });
});
