// What the cache knows of one cached repo: tags with the time they were last confirmed upstream,
// manifests it fetched, the digests its upstream was seen to have, and when each tag was last
// pulled (for LRU eviction).
import type { Descriptor } from '../../shared/oci.js';
import { parseManifest, parseReferrerTag } from '../../shared/oci.js';
import type { ManifestEntry } from '../../shared/redirect-file.js';
import type { RepoState } from '../../shared/publish/repo-state.js';

export interface CachedManifest extends ManifestEntry {
  /** Held while unpublished, so a pull in flight needs no disk read. */
  bytes?: Buffer;
  blobs: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export interface CacheRepo {
  name: string;
  upstreamRepo: string;
  tags: Map<string, { digest: string; checkedAt: number }>;
  manifests: Map<string, CachedManifest>;
  /**
   * Digests this repo's own upstream was seen to have: fetched from it (manifests, fills it
   * started) or confirmed by a HEAD there. Only these are served or published (invariant 9):
   * a blob in the shared store may be there for another repo's sake.
   */
  proven: Set<string>;
  /** tag -> last pull; the eviction order. */
  access: Map<string, number>;
}

export function newCacheRepo(name: string, upstreamRepo: string): CacheRepo {
  return { name, upstreamRepo, tags: new Map(), manifests: new Map(), proven: new Set(), access: new Map() };
}

export function cachedManifest(bytes: Buffer, mediaType: string): CachedManifest {
  const parsed = parseManifest(bytes, mediaType);
  const m: CachedManifest = { mediaType: parsed.mediaType, size: bytes.length, bytes, blobs: parsed.blobs };
  if (parsed.manifests.length) m.children = parsed.manifests.map((c) => ({ digest: c.digest, ...(c.platform ? { platform: { ...c.platform } } : {}) }));
  if (parsed.subject) m.subject = parsed.subject;
  if (parsed.artifactType) m.artifactType = parsed.artifactType;
  if (parsed.annotations && typeof parsed.annotations === 'object') m.annotations = parsed.annotations;
  return m;
}

/** A manifest fetched from this repo's upstream (or its own publish): its bytes are proof. */
export function addManifest(repo: CacheRepo, digest: string, m: CachedManifest): CachedManifest {
  repo.manifests.set(digest, m);
  repo.proven.add(digest);
  return m;
}

/**
 * A foreign (non-distributable) layer: its descriptor lists `urls`, and the client fetches it
 * from there. The cache neither fills nor publishes it.
 */
export function isForeign(d: Descriptor): boolean {
  return Array.isArray(d.urls) && d.urls.length > 0;
}

/** How this repo's known manifests describe a blob: its size, or that it is only a foreign layer. */
export function describeBlob(repo: CacheRepo, digest: string): { size?: number; foreign: boolean } {
  let foreign = false;
  for (const m of repo.manifests.values()) {
    for (const b of m.blobs) {
      if (b.digest !== digest) continue;
      if (!isForeign(b)) return { size: b.size, foreign: false };
      foreign = true;
    }
  }
  return { foreign };
}

/**
 * The publishable part: tags whose image is complete in the store and proven (every blob came
 * from, or was confirmed by, this repo's upstream). Foreign layers are left out: they are not
 * in the store and the client fetches them from their URLs. An index is published with the
 * children that are complete; a platform nobody pulled is fetched on its first request.
 */
export function committedState(repo: CacheRepo, inStore: (digest: string) => boolean): RepoState | undefined {
  const manifests: RepoState['manifests'] = {};
  const blobs: RepoState['blobs'] = {};
  const referrers: RepoState['referrers'] = {};
  const manifestBlobs: RepoState['manifestBlobs'] = {};
  const ours = (b: Descriptor) => isForeign(b) || (inStore(b.digest) && repo.proven.has(b.digest));
  const complete = (digest: string): boolean => {
    const m = repo.manifests.get(digest);
    if (!m || !inStore(digest)) return false;
    if (m.children) return true;
    return m.blobs.every(ours);
  };
  const add = (digest: string) => {
    const m = repo.manifests.get(digest)!;
    const entry: ManifestEntry = { mediaType: m.mediaType, size: m.size };
    if (m.children) entry.children = m.children;
    manifests[digest] = entry;
    const stored = m.blobs.filter((b) => !isForeign(b));
    manifestBlobs[digest] = stored.map((b) => b.digest);
    for (const b of stored) blobs[b.digest] = b.size;
    if (m.subject) addReferrer(m.subject.digest, digest);
    for (const c of m.children ?? []) if (complete(c.digest)) add(c.digest);
  };
  const addReferrer = (subject: string, digest: string) => {
    const m = repo.manifests.get(digest)!;
    const list = (referrers[subject] ??= []);
    if (list.some((d) => d.digest === digest)) return;
    list.push({
      mediaType: m.mediaType, digest, size: m.size,
      ...(m.artifactType ? { artifactType: m.artifactType } : {}),
      ...(m.annotations ? { annotations: m.annotations } : {}),
    });
  };
  const tags: RepoState['tags'] = {};
  const entries = [...repo.tags.entries()].sort();
  for (const [tag, t] of entries) {
    if (!complete(t.digest) || parseReferrerTag(tag)) continue;
    tags[tag] = t.digest;
    add(t.digest);
  }
  // A referrer tag (cosign's .sig, the tag schema's index) is published only beside its subject:
  // it lives as long as the image it names. Repeated, so a signature of an SBOM follows the SBOM.
  for (let more = true; more; ) {
    more = false;
    for (const [tag, t] of entries) {
      const ref = parseReferrerTag(tag);
      if (!ref || tags[tag] || !manifests[ref.subject] || !complete(t.digest)) continue;
      tags[tag] = t.digest;
      add(t.digest);
      if (ref.kind !== 'index') addReferrer(ref.subject, t.digest);
      more = true;
    }
  }
  if (Object.keys(tags).length === 0) return undefined;
  return {
    name: repo.name,
    source: `pull-through:${repo.upstreamRepo}`,
    lastSync: new Date().toISOString(),
    etags: {},
    tags: Object.fromEntries(Object.entries(tags).sort()),
    manifests: Object.fromEntries(Object.entries(manifests).sort()),
    blobs: Object.fromEntries(Object.entries(blobs).sort()),
    referrers,
    manifestBlobs,
  };
}

/**
 * Rebuilds a cache repo from its state file after a restart: tags count as unconfirmed. Its
 * manifests are proven (the cache only ever fetched manifests from the repo's own upstream);
 * which blobs are proven is the caller's decision (see restore.ts).
 */
export function cacheRepoFromState(state: RepoState, upstreamRepo: string, readManifest: (digest: string) => Buffer | undefined): CacheRepo {
  const repo = newCacheRepo(state.name, upstreamRepo);
  const lastSync = Date.parse(state.lastSync) || 0;
  for (const [tag, digest] of Object.entries(state.tags)) {
    repo.tags.set(tag, { digest, checkedAt: 0 });
    repo.access.set(tag, lastSync);
  }
  for (const [digest, m] of Object.entries(state.manifests)) {
    repo.proven.add(digest);
    const bytes = readManifest(digest);
    if (bytes) addManifest(repo, digest, cachedManifest(bytes, m.mediaType));
  }
  return repo;
}
