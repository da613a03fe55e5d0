// What the cache knows of one cached repo: tags with the time they were last confirmed upstream,
// manifests it fetched, and when each tag was last pulled (for LRU eviction).
import type { Descriptor } from '../../shared/oci.js';
import { parseManifest } from '../../shared/oci.js';
import type { ManifestEntry } from '../../shared/redirect-file.js';
import type { RepoState } from '../../shared/publish/repo-state.js';

export interface CachedManifest extends ManifestEntry {
  /** Held while unpublished, so a pull in flight needs no disk read. */
  bytes?: Buffer;
  blobs: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
}

export interface CacheRepo {
  name: string;
  upstreamRepo: string;
  tags: Map<string, { digest: string; checkedAt: number }>;
  manifests: Map<string, CachedManifest>;
  /** tag -> last pull; the eviction order. */
  access: Map<string, number>;
}

export function newCacheRepo(name: string, upstreamRepo: string): CacheRepo {
  return { name, upstreamRepo, tags: new Map(), manifests: new Map(), access: new Map() };
}

export function cachedManifest(bytes: Buffer, mediaType: string): CachedManifest {
  const parsed = parseManifest(bytes, mediaType);
  const m: CachedManifest = { mediaType: parsed.mediaType, size: bytes.length, bytes, blobs: parsed.blobs };
  if (parsed.manifests.length) m.children = parsed.manifests.map((c) => ({ digest: c.digest, ...(c.platform ? { platform: { ...c.platform } } : {}) }));
  if (parsed.subject) m.subject = parsed.subject;
  if (parsed.artifactType) m.artifactType = parsed.artifactType;
  return m;
}

/** The blob sizes this repo's known manifests name: the only blobs it serves from the store. */
export function blobSize(repo: CacheRepo, digest: string): number | undefined {
  for (const m of repo.manifests.values()) {
    const b = m.blobs.find((x) => x.digest === digest);
    if (b) return b.size;
  }
  return undefined;
}

/**
 * The publishable part: tags whose image is complete in the store. An index is published with
 * the children that are complete; a platform nobody pulled is fetched on its first request.
 */
export function committedState(repo: CacheRepo, inStore: (digest: string) => boolean): RepoState | undefined {
  const manifests: RepoState['manifests'] = {};
  const blobs: RepoState['blobs'] = {};
  const referrers: RepoState['referrers'] = {};
  const manifestBlobs: RepoState['manifestBlobs'] = {};
  const complete = (digest: string): boolean => {
    const m = repo.manifests.get(digest);
    if (!m || !inStore(digest)) return false;
    if (m.children) return true;
    return m.blobs.every((b) => inStore(b.digest));
  };
  const add = (digest: string) => {
    const m = repo.manifests.get(digest)!;
    const entry: ManifestEntry = { mediaType: m.mediaType, size: m.size };
    if (m.children) entry.children = m.children;
    manifests[digest] = entry;
    manifestBlobs[digest] = m.blobs.map((b) => b.digest);
    for (const b of m.blobs) blobs[b.digest] = b.size;
    if (m.subject) (referrers[m.subject.digest] ??= []).push({ mediaType: m.mediaType, digest, size: m.size, ...(m.artifactType ? { artifactType: m.artifactType } : {}) });
    for (const c of m.children ?? []) if (complete(c.digest)) add(c.digest);
  };
  const tags: RepoState['tags'] = {};
  for (const [tag, t] of [...repo.tags.entries()].sort()) {
    if (!complete(t.digest)) continue;
    tags[tag] = t.digest;
    add(t.digest);
  }
  if (Object.keys(tags).length === 0) return undefined;
  return {
    name: repo.name,
    source: `pull-through:${repo.upstreamRepo}`,
    lastSync: new Date().toISOString(),
    etags: {},
    tags,
    manifests: Object.fromEntries(Object.entries(manifests).sort()),
    blobs: Object.fromEntries(Object.entries(blobs).sort()),
    referrers,
    manifestBlobs,
  };
}

/** Rebuilds a cache repo from its state file after a restart: tags count as unconfirmed. */
export function cacheRepoFromState(state: RepoState, upstreamRepo: string, readManifest: (digest: string) => Buffer | undefined): CacheRepo {
  const repo = newCacheRepo(state.name, upstreamRepo);
  const lastSync = Date.parse(state.lastSync) || 0;
  for (const [tag, digest] of Object.entries(state.tags)) {
    repo.tags.set(tag, { digest, checkedAt: 0 });
    repo.access.set(tag, lastSync);
  }
  for (const [digest, m] of Object.entries(state.manifests)) {
    const bytes = readManifest(digest);
    if (bytes) repo.manifests.set(digest, cachedManifest(bytes, m.mediaType));
  }
  return repo;
}
