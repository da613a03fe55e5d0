// GET /v2/<cache-repo>/referrers/<digest>, answered from what the cache holds: the manifests
// this repo fetched from its upstream (in memory or in its publish) whose subject is <digest>,
// and the cosign signatures, attestations and SBOMs it fetched by their tags (`sha256-<hex>.sig`),
// which name their subject only through the tag.
// For a manifest the cache holds, unless the route's policy is Never (or it has `referrers:
// false`), the upstream is asked too (upstream-referrers.ts); when that fails, the answer is
// what the cache holds. An empty index, never a 404, when nothing refers to the digest.
import { type Descriptor, parseReferrerTag } from '../../shared/oci.js';
import { referrersIndexReply } from '../referrers.js';
import type { Reply } from '../reply.js';
import type { PullThroughContext, PullThroughRequest } from './context.js';
import type { RouteMatch } from './routes.js';
import { createUpstreamReferrers } from './upstream-referrers.js';

export type ReferrersPath = (req: PullThroughRequest, name: string, digest: string, artifactType: string | undefined) => Promise<Reply>;

export function createReferrersPath(c: PullThroughContext, match: (name: string) => RouteMatch | undefined): ReferrersPath {
  const upstream = createUpstreamReferrers(c);
  return async (req, name, digest, artifactType) => {
    const found = new Map<string, Descriptor>();
    const published = await c.o.index.load(name);
    const repo = c.repos.get(name);
    const m = match(name);
    // Only about a manifest this cache fetched: a digest nobody pulled costs the upstream nothing,
    // so random digests can't turn into upstream traffic.
    const held = repo?.manifests.has(digest) || published?.current.manifests.has(digest);
    if (held && m && m.route.policy !== 'Never' && m.route.cfg.referrers) {
      try {
        for (const d of await upstream(req, m, digest)) found.set(d.digest, d);
      } catch (err) {
        // A listing is advice, not content: whatever went wrong upstream, list what is cached.
        c.o.log.warn({ repo: name, digest, err: (err as Error).message }, 'asking the upstream for referrers failed; listing the cached ones');
      }
    }
    for (const d of published?.referrers[digest] ?? []) found.set(d.digest, d);
    const byTag = new Set<string>();
    // (A route with `referrers: false` never caches such a tag: see manifest-path.ts.)
    for (const [tag, t] of repo?.tags ?? []) {
      const ref = parseReferrerTag(tag);
      if (ref && ref.kind !== 'index' && ref.subject === digest) byTag.add(t.digest);
    }
    for (const [d, m] of repo?.manifests ?? []) {
      if (m.subject?.digest !== digest && !byTag.has(d)) continue;
      found.set(d, {
        mediaType: m.mediaType,
        digest: d,
        size: m.size,
        ...(m.artifactType ? { artifactType: m.artifactType } : {}),
        ...(m.annotations ? { annotations: m.annotations } : {}),
      });
    }
    const list = [...found.values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    return referrersIndexReply(list, artifactType, req.method);
  };
}
