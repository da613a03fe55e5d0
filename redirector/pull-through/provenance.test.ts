// The proof record on disk: written for what the repo's manifests name, read back only for the
// same upstream, and told apart from "no record at all" (state from before proofs were kept).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { layout, type Layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { addManifest, cachedManifest, newCacheRepo } from './cache-repo.js';
import { createProofs } from './provenance.js';
import type { RouteMatch } from './routes.js';
import { createSingleFlight } from './single-flight.js';

const log = createLogger({ level: 'silent' });
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
