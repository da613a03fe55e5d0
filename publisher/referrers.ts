// What refers to a manifest at its source: the referrers API when the source has one, the
// referrers tag schema's index (`sha256-<hex>`) and cosign's tags (`sha256-<hex>.sig`, `.att`,
// `.sbom`). Sync brings each one in like any manifest, and asks again about each of them, so a
// signature of an SBOM comes too.
import { type Descriptor, isManifestType, parseReferrerTag, referrerTagsOf } from '../shared/oci.js';
import type { Source } from './sources/source.js';

export interface FoundReferrer {
  desc: Descriptor;
  /** The source's tag that named it, which the publish lists as the source had it. */
  tag?: string;
  /** 'index': the tag schema's list of referrers; 'sig' | 'att' | 'sbom': cosign's, which name their subject only by tag. */
  kind?: 'index' | 'sig' | 'att' | 'sbom';
}

export interface ReferrerDiscoveryOptions {
  source: Source;
  /** Every referrer tag the source lists. */
  referrerTags: ReadonlySet<string>;
  /** Referrer tags already resolved in this run (the up-to-date check asked for them). */
  resolved: ReadonlyMap<string, Descriptor>;
  /** Rethrows a failure naming the repo and what was being asked. */
  wrap: (what: string, digest?: string) => (err: unknown) => never;
}

export type DiscoverReferrers = (subject: string) => Promise<FoundReferrer[]>;

export function referrerDiscovery(o: ReferrerDiscoveryOptions): DiscoverReferrers {
  return async (subject) => {
    const found: FoundReferrer[] = [];
    const api = await o.source.referrers(subject).catch(o.wrap(`asking ${o.source.description} for the referrers of ${subject}`, subject));
    // Only manifests can be referrers; anything else in a broken answer is not followed.
    for (const d of api ?? []) if (isManifestType(d.mediaType)) found.push({ desc: d });
    for (const tag of referrerTagsOf(subject)) {
      if (!o.referrerTags.has(tag)) continue;
      const desc = o.resolved.get(tag) ?? (await o.source.resolveTag(tag).catch(o.wrap(`resolving referrer tag ${tag}`, subject)));
      found.push({ desc, tag, kind: parseReferrerTag(tag)!.kind });
    }
    return found;
  };
}
