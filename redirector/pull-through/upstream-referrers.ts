// What the upstream says refers to a digest, for a cache repo's referrers answer: its referrers
// API when it has one, else the referrers tag schema's index (`sha256-<hex>`) and cosign's tags
// (`sha256-<hex>.sig`, `.att`, `.sbom`), as the publisher looks (publisher/referrers.ts). Only
// descriptors are listed; a client that wants one fetches it through the cache, from this same
// upstream (invariant 9). One flight per digest, and the answer is kept for the route's tag-ttl.
import { isUpstreamError } from '../../shared/registry/errors.js';
import { type Descriptor, isManifestType, parseManifest, parseReferrerTag, referrerDescriptor, referrerTagsOf } from '../../shared/oci.js';
import type { PullThroughContext, PullThroughRequest } from './context.js';
import type { RouteMatch } from './routes.js';

export type UpstreamReferrers = (req: PullThroughRequest, m: RouteMatch, digest: string) => Promise<Descriptor[]>;

/** Answers kept at most: a bound on memory, whatever clients ask for. */
const MAX_KEPT = 10_000;

export function createUpstreamReferrers(c: PullThroughContext): UpstreamReferrers {
  const kept = new Map<string, { at: number; list: Descriptor[] }>();

  const ask = async (req: PullThroughRequest, m: RouteMatch, digest: string): Promise<Descriptor[]> => {
    const { client } = m.route;
    const opts = () => c.requestOpts(req, m);
    const api = await client.getReferrers(m.upstreamRepo, digest, opts());
    if (api) return api.filter((d) => isManifestType(d.mediaType));
    const found: Descriptor[] = [];
    for (const tag of referrerTagsOf(digest)) {
      let got;
      try {
        got = await client.getManifest(m.upstreamRepo, tag, opts());
      } catch (err) {
        if (isUpstreamError(err, 'not-found')) continue;
        throw err;
      }
      const parsed = parseManifest(got.bytes, got.mediaType);
      if (parseReferrerTag(tag)!.kind === 'index') found.push(...parsed.manifests.filter((d) => isManifestType(d.mediaType)));
      else found.push(referrerDescriptor(got.digest, got.bytes.length, parsed));
    }
    return found;
  };

  return (req, m, digest) => {
    const key = `${m.route.cfg.prefix}/${m.upstreamRepo}@${digest}`;
    const have = kept.get(key);
    if (have && Date.now() - have.at < m.route.cfg['tag-ttl']) return Promise.resolve(have.list);
    return c.once(`referrers ${key}`, async () => {
      const list = await ask(req, m, digest);
      if (kept.size >= MAX_KEPT) kept.delete(kept.keys().next().value!);
      kept.set(key, { at: Date.now(), list });
      return list;
    });
  };
}
