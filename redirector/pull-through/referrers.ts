// GET /v2/<cache-repo>/referrers/<digest>, answered from what the cache holds: the manifests
// this repo fetched from its upstream (in memory or in its publish) whose subject is <digest>,
// and the cosign signatures, attestations and SBOMs it fetched by their tags (`sha256-<hex>.sig`),
// which name their subject only through the tag.
// The upstream is not asked: docker-registry 2.8 and many mirrors have no referrers API, and an
// answer listing only what this cache has keeps it to what it can serve. An empty index, never a
// 404, when nothing cached refers to the digest.
import { type Descriptor, parseReferrerTag } from '../../shared/oci.js';
import { referrersIndexReply } from '../referrers.js';
import type { Reply } from '../reply.js';
import type { PullThroughContext, PullThroughRequest } from './context.js';

export type ReferrersPath = (req: PullThroughRequest, name: string, digest: string, artifactType: string | undefined) => Promise<Reply>;

export function createReferrersPath(c: PullThroughContext): ReferrersPath {
  return async (req, name, digest, artifactType) => {
    const found = new Map<string, Descriptor>();
    for (const d of (await c.o.index.load(name))?.referrers[digest] ?? []) found.set(d.digest, d);
    const repo = c.repos.get(name);
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
