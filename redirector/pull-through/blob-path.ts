// GET/HEAD /v2/<cache-repo>/blobs/<digest> for what is not published yet: from the store when
// this repo has proven the blob (invariant 9), else one upstream GET per digest however many
// clients ask, streamed to them while it is verified and stored. Across serve's workers the fill
// lock makes it one GET per digest (upstream-fill.ts): a worker that finds another one fetching
// waits and then serves the stored blob like any other hit.
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import { errors, RegistryError } from '../../shared/errors.js';
import { isSha256Digest } from '../../shared/oci.js';
import { reply, type Reply } from '../reply.js';
import { describeBlob } from './cache-repo.js';
import type { PullThroughContext, PullThroughRequest } from './context.js';
import { upstreamToRegistryError } from './errors.js';
import type { UpstreamFill } from './upstream-fill.js';
import type { RouteMatch } from './routes.js';

export type BlobPath = (req: PullThroughRequest, m: RouteMatch, name: string, digest: string) => Promise<Reply>;

const blobHeaders = (digest: string, size: number | undefined): Record<string, string> => ({
  'Content-Type': 'application/octet-stream',
  'Docker-Content-Digest': digest,
  ...(size === undefined ? {} : { 'Content-Length': String(size) }),
  'Cache-Control': 'public, max-age=31536000, immutable',
});

export function createBlobPath(c: PullThroughContext, startFill: UpstreamFill): BlobPath {
  const { o, store, proofs } = c;
  const l = o.layout;

  /** The store's copy, once this repo's upstream is known to have the blob (invariant 9). */
  const fromStore = async (req: PullThroughRequest, m: RouteMatch, name: string, digest: string): Promise<Reply> => {
    await proofs.check(c.repoFor(name, m), m, digest, c.requestOpts(req, m));
    const { size } = await fs.stat(l.storeBlob(digest));
    return reply(req.method, 200, blobHeaders(digest, size), req.method === 'HEAD' ? null : createReadStream(l.storeBlob(digest)));
  };

  const fromUpstream = async (req: PullThroughRequest, m: RouteMatch, name: string, digest: string, size: number | undefined): Promise<Reply> => {
    const repo = c.repoFor(name, m);
    if (req.method === 'HEAD') {
      const head = await m.route.client.headBlob(m.upstreamRepo, digest, c.requestOpts(req, m));
      repo.proven.add(digest);
      return reply('HEAD', 200, blobHeaders(digest, head.size ?? size));
    }
    o.metrics.cache.misses.inc();
    const started = await startFill(m, name, digest, size, c.requestOpts(req, m).headers);
    // Another worker stored it while this one waited: a hit like any other.
    if (started === 'stored') return fromStore(req, m, name, digest);
    const { fill, joined, foreignOwner } = started;
    if (joined) o.metrics.cache.joins.inc();
    // A fill another cached repo started streams its upstream's bytes: this one's must have them too.
    if (foreignOwner) await proofs.check(repo, m, digest, c.requestOpts(req, m));
    const ready = await fill.ready;
    return reply('GET', 200, blobHeaders(digest, ready.size), fill.reader());
  };

  return async (req, m, name, digest) => {
    // Grammar first: only sha256 can be verified, so any other digest is unknown here (as on a
    // published repo), and is never sent upstream.
    if (!isSha256Digest(digest)) throw errors.blobUnknown(name, digest);
    const repo = c.repoFor(name, m);
    const described = describeBlob(repo, digest);
    if (described.foreign) {
      throw new RegistryError('BLOB_UNKNOWN', 'a foreign layer: fetch it from the URLs its descriptor lists', { name, digest });
    }
    try {
      if (await store.has(digest)) {
        // In the store, perhaps for another repo's sake: served only once proven for this one.
        o.metrics.cache.hits.inc();
        return await fromStore(req, m, name, digest);
      }
      if (m.route.policy === 'Never') throw errors.blobUnknown(name, digest);
      return await fromUpstream(req, m, name, digest, described.size);
    } catch (err) {
      throw upstreamToRegistryError(err, m.route.cfg.url, 'blob', name, digest);
    }
  };
}
