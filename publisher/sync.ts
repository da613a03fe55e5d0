// Sync one repo from its Source into the store, under a fetch policy, and describe what the
// store now holds for it (a RepoState). Publishing reads only that state and the store.
import picomatch from 'picomatch';
import type { RepoConfig } from '../shared/config.js';
import { type Descriptor, parseManifest, isManifestType, REFERRER_TAG_RE, referrerDescriptor, referrerTagsOf } from '../shared/oci.js';
import type { ManifestEntry } from '../shared/redirect-file.js';
import { mapLimit } from '../shared/publish/fsutil.js';
import type { RepoState } from '../shared/publish/repo-state.js';
import type { Source } from './sources/source.js';
import { referrerDiscovery } from './referrers.js';
import { DigestMismatchError, type Store } from '../shared/publish/store.js';
import { isNetworkError } from '../shared/registry/retry.js';

export type FetchPolicy = 'default' | 'no-fetch' | 'force-fetch';

export interface SyncStats {
  tags: number;
  manifestsFetched: number;
  blobsFetched: number;
  bytesFetched: number;
  blobsVerified: number;
  /** Store objects that failed re-verification (--force-fetch) and were fetched again. */
  repaired: number;
}

export interface SyncProgress {
  onBlobStart?(digest: string, size: number): void;
  onBlobBytes?(n: number): void;
  onBlobDone?(digest: string): void;
}

/** A repo-level failure with the repo and the object it concerns in the message. */
export class SyncError extends Error {
  constructor(
    readonly repo: string,
    message: string,
    readonly digest?: string,
  ) {
    super(`${repo}: ${message}`);
    this.name = 'SyncError';
  }
}

export function tagFilter(include: string[], exclude: string[]): (tag: string) => boolean {
  const inc = picomatch(include, { dot: true });
  const exc = exclude.length ? picomatch(exclude, { dot: true }) : () => false;
  return (tag) => inc(tag) && !exc(tag);
}

/** Blob attempts: the registry client retries requests; this retries bodies cut off or corrupted. */
const BLOB_ATTEMPTS = 3;

/** Rethrows `err` as a SyncError naming the repo and what was being done (a SyncError as is). */
const failedAt = (repo: string, what: string, digest?: string) => (err: unknown): never => {
  if (err instanceof SyncError) throw err;
  throw new SyncError(repo, `${what}: ${(err as Error).message}`, digest);
};

/**
 * The source's tags that the repo's tags/exclude globs select, sorted; none is an error. When the
 * repo mirrors referrers, referrer tags (`sha256-<hex>`, `.sig`, ...) are never selected by a glob:
 * they come with their subject, and only while it is published.
 */
export async function listSelectedTags(repo: RepoConfig, source: Source): Promise<{ selected: string[]; referrerTags: Set<string> }> {
  const wanted = tagFilter(repo.tags, repo.exclude);
  const all = await source.listTags().catch(failedAt(repo.name, `listing tags of ${source.description}`));
  const referrerTags = new Set(repo.referrers ? all.filter((t) => REFERRER_TAG_RE.test(t)) : []);
  const tags = all.filter((t) => !referrerTags.has(t) && wanted(t)).sort();
  if (tags.length === 0) throw new SyncError(repo.name, `no tags of ${source.description} match ${JSON.stringify(repo.tags)}`);
  return { selected: tags, referrerTags };
}

export interface ResolvedTags {
  /** The selected tags, and the referrer tags of the manifests the last sync found, with what they point at now. */
  tags: Map<string, Descriptor>;
  /** Every referrer tag the source lists (none when the repo does not mirror referrers). */
  referrerTags: Set<string>;
}

/**
 * What each selected tag points at now: the tag list, filtered, then one resolve per tag (a
 * HEAD for a registry, a lookup in the once-read index.json for a layout). This is the whole
 * of what a run where nothing changed asks the source.
 */
export async function resolveSelectedTags(
  repo: RepoConfig, source: Source, concurrency: number,
  /** The manifests the last sync found: their referrer tags are resolved too, so a new signature is a change. */
  knownManifests: Iterable<string> = [],
): Promise<ResolvedTags> {
  const { selected, referrerTags } = await listSelectedTags(repo, source);
  const tags = [...selected, ...[...new Set(knownManifests)].flatMap(referrerTagsOf).filter((t) => referrerTags.has(t))];
  const found = await mapLimit(tags, concurrency * 2, (tag) => source.resolveTag(tag).catch(failedAt(repo.name, `resolving tag ${tag}`)));
  return { tags: new Map(tags.map((t, i) => [t, found[i]!])), referrerTags };
}

export interface SyncOptions {
  repo: RepoConfig;
  source: Source;
  store: Store;
  prev: RepoState | undefined;
  policy: Exclude<FetchPolicy, 'no-fetch'>;
  concurrency: number;
  progress?: SyncProgress;
  /** The tags as resolveSelectedTags found them moments ago, so they are not asked for twice. */
  resolved?: ResolvedTags;
  /** Blob downloads running in this run, by digest, shared by the repos syncing at once. */
  blobsInFlight?: Map<string, Promise<void>>;
}

export async function syncRepo(opts: SyncOptions): Promise<{ state: RepoState; stats: SyncStats }> {
  const { repo, source, store, prev, policy, concurrency, progress } = opts;
  const force = policy === 'force-fetch';
  const stats: SyncStats = { tags: 0, manifestsFetched: 0, blobsFetched: 0, bytesFetched: 0, blobsVerified: 0, repaired: 0 };
  const wrap = (what: string, digest?: string) => failedAt(repo.name, what, digest);

  // --force-fetch GETs every tag's manifest instead of resolving it first.
  const found = force ? undefined : (opts.resolved ?? (await resolveSelectedTags(repo, source, concurrency, Object.keys(prev?.manifests ?? {}))));
  const listed = found ? undefined : await listSelectedTags(repo, source);
  const referrerTags = found?.referrerTags ?? listed!.referrerTags;
  const resolved = found && new Map([...found.tags].filter(([t]) => !referrerTags.has(t)));
  const tags = resolved ? [...resolved.keys()] : listed!.selected;
  stats.tags = tags.length;

  /** Makes sure a manifest is in the store, fetching it when missing (or always, when forced). */
  const fetched = new Set<string>();
  const ensureManifest = async (ref: string, knownDigest?: string): Promise<string> => {
    // A digest the last sync stored is trusted to be there: only gc deletes, and gc keeps what
    // repo states name. --force-fetch is the way to re-check.
    if (knownDigest && !force && (prev?.manifests[knownDigest] || (await store.has(knownDigest)))) return knownDigest;
    if (knownDigest && fetched.has(knownDigest)) return knownDigest;
    const m = await source.getManifest(knownDigest ?? ref).catch(wrap(`fetching manifest ${ref}`, knownDigest));
    if (knownDigest && m.digest !== knownDigest) {
      throw new SyncError(repo.name, `manifest ${ref} hashes to ${m.digest}, expected ${knownDigest}`, knownDigest);
    }
    if (force && (await store.has(m.digest)) && !(await store.verify(m.digest))) {
      await store.remove(m.digest);
      stats.repaired++;
    }
    await store.putBytes(m.digest, m.bytes).catch(wrap(`storing manifest ${ref}`, m.digest));
    fetched.add(m.digest);
    stats.manifestsFetched++;
    return m.digest;
  };

  // Resolve tags (HEAD for registries) and reuse what the store already has.
  const tagDigests: Record<string, string> = {};
  const typeHints = new Map<string, string>();
  await mapLimit(tags, concurrency * 2, async (tag) => {
    let digest: string;
    if (!resolved) {
      digest = await ensureManifest(tag);
    } else {
      const d = resolved.get(tag)!;
      typeHints.set(d.digest, d.mediaType);
      digest = await ensureManifest(tag, d.digest);
    }
    tagDigests[tag] = digest;
  });

  // Walk every manifest reachable from the tags; children of indexes are fetched by digest.
  const manifests: Record<string, ManifestEntry> = {};
  const blobs = new Map<string, Descriptor>();
  const referrers: RepoState['referrers'] = {};
  const manifestBlobs: RepoState['manifestBlobs'] = {};
  type Referrer = RepoState['referrers'][string][number];
  const prevReferrers = new Map<string, Array<[string, Referrer]>>();
  for (const [subject, list] of Object.entries(prev?.referrers ?? {})) {
    for (const d of list) prevReferrers.set(d.digest, [...(prevReferrers.get(d.digest) ?? []), [subject, d]]);
  }
  const discover = repo.referrers
    ? referrerDiscovery({ source, referrerTags, resolved: found?.tags ?? new Map(), wrap })
    : undefined;
  /** Referrer tags found, as the source had them: published beside the selected tags. */
  const referrerTagDigests: Record<string, string> = {};
  /** Indexes of the referrers tag schema: lists, not content, so nobody is asked about their referrers. */
  const tagSchemaIndexes = new Set<string>();
  const addReferrer = (subject: string, d: Referrer) => {
    const list = (referrers[subject] ??= []);
    if (!list.some((x) => x.digest === d.digest)) list.push(d);
  };
  /** Brings in what refers to `subject` at the source, and (through visit) what refers to those. */
  const bringReferrers = async (subject: string) => {
    const list = await discover!(subject);
    await mapLimit(list, concurrency, async (f) => {
      const digest = await ensureManifest(f.tag ?? f.desc.digest, f.desc.digest);
      if (f.tag) referrerTagDigests[f.tag] = digest;
      if (f.kind === 'index') tagSchemaIndexes.add(digest);
      await visit(digest, f.desc.mediaType);
      // cosign's manifests have no subject field: the tag is what ties them to the image, so
      // the referrers API lists them under the subject the tag names.
      if (f.kind && f.kind !== 'index') {
        const bytes = await store.read(digest);
        addReferrer(subject, referrerDescriptor(digest, bytes.length, parseManifest(bytes, f.desc.mediaType)));
      }
    });
  };
  const visitChildren = (digest: string, children: Descriptor[]) =>
    mapLimit(children, concurrency, async (child) => {
      if (!isManifestType(child.mediaType)) {
        throw new SyncError(repo.name, `index ${digest} names ${child.digest} of unsupported type ${child.mediaType}`, child.digest);
      }
      await ensureManifest(child.digest, child.digest);
      await visit(child.digest, child.mediaType);
    });
  // One walk per manifest, however many ways it is reached (a tag, an index, a referrer).
  const visits = new Map<string, Promise<void>>();
  const visit = (digest: string, hint?: string): Promise<void> => {
    let v = visits.get(digest);
    if (!v) visits.set(digest, (v = visitOnce(digest, hint).then(() => (discover && !tagSchemaIndexes.has(digest) ? bringReferrers(digest) : undefined))));
    return v;
  };
  const visitOnce = async (digest: string, hint?: string): Promise<void> => {
    if (manifests[digest]) return;
    // Unchanged since the last sync: its entry and blob list are known, so skip reading it.
    const known = !force ? prev?.manifests[digest] : undefined;
    const knownBlobs = prev?.manifestBlobs[digest];
    if (known && knownBlobs && knownBlobs.every((b) => prev!.blobs[b] !== undefined)) {
      manifests[digest] = known;
      manifestBlobs[digest] = knownBlobs;
      for (const b of knownBlobs) blobs.set(b, { digest: b, size: prev!.blobs[b]!, mediaType: '' });
      for (const [subject, d] of prevReferrers.get(digest) ?? []) addReferrer(subject, d);
      const children = (known.children ?? []).map((c) => ({ digest: c.digest, size: 0, mediaType: prev!.manifests[c.digest]?.mediaType ?? '' }));
      await visitChildren(digest, children);
      return;
    }
    const bytes = await store.read(digest);
    const hintType = hint ?? typeHints.get(digest) ?? prev?.manifests[digest]?.mediaType;
    let parsed;
    try {
      parsed = parseManifest(bytes, hintType);
    } catch (err) {
      throw new SyncError(repo.name, `manifest ${digest}: ${(err as Error).message}`, digest);
    }
    const entry: ManifestEntry = { mediaType: parsed.mediaType, size: bytes.length };
    if (parsed.manifests.length) {
      entry.children = parsed.manifests.map((c) => ({ digest: c.digest, ...(c.platform ? { platform: { ...c.platform } } : {}) }));
    }
    manifests[digest] = entry;
    if (parsed.subject) addReferrer(parsed.subject.digest, referrerDescriptor(digest, bytes.length, parsed));
    for (const b of parsed.blobs) blobs.set(b.digest, b);
    manifestBlobs[digest] = parsed.blobs.map((b) => b.digest);
    await visitChildren(digest, parsed.manifests);
  };
  for (const digest of new Set(Object.values(tagDigests))) await visit(digest);

  // Fetch the blobs the store lacks (or, when forced, those that fail re-verification).
  const fetchBlob = async (b: Descriptor) => {
    for (let attempt = 1; ; attempt++) {
      progress?.onBlobStart?.(b.digest, b.size);
      try {
        const body = await source.openBlob(b);
        let n = 0;
        await store.putStream(b.digest, b.size, body, (k) => {
          n += k;
          progress?.onBlobBytes?.(k);
        });
        stats.blobsFetched++;
        stats.bytesFetched += n;
        progress?.onBlobDone?.(b.digest);
        return;
      } catch (err) {
        // A body cut short or corrupted on the way: worth another GET. The client has already
        // retried the request itself; what fails here failed after the headers.
        const retriable = err instanceof DigestMismatchError || isNetworkError(err);
        if (!retriable || attempt >= BLOB_ATTEMPTS) {
          const what = err instanceof DigestMismatchError ? err.message : `blob ${b.digest}: ${(err as Error).message}`;
          throw new SyncError(repo.name, `${what} (after ${attempt} attempt${attempt > 1 ? 's' : ''})`, b.digest);
        }
      }
    }
  };
  await mapLimit([...blobs.values()], concurrency, async (b) => {
    if (!force && prev?.blobs[b.digest] !== undefined) return;
    if (await store.has(b.digest)) {
      if (!force) return;
      stats.blobsVerified++;
      if (await store.verify(b.digest, b.size)) return;
      await store.remove(b.digest);
      stats.repaired++;
    }
    // Another repo of this run is fetching the same blob (repos from one source share layers):
    // wait for it and use what it stored, rather than download it twice. Checked and claimed
    // with no await in between, so two repos can't both miss each other.
    const inFlight = opts.blobsInFlight;
    for (let other = inFlight?.get(b.digest); other && !force; other = inFlight?.get(b.digest)) {
      await other.catch(() => {});
      if (await store.has(b.digest)) return;
    }
    const mine = fetchBlob(b);
    inFlight?.set(b.digest, mine);
    try {
      await mine;
    } finally {
      if (inFlight?.get(b.digest) === mine) inFlight.delete(b.digest);
    }
  });
  await store.sync();

  const blobSizes: Record<string, number> = {};
  for (const [d, b] of [...blobs.entries()].sort()) blobSizes[d] = b.size;
  const state: RepoState = {
    name: repo.name,
    source: source.description,
    lastSync: new Date().toISOString(),
    etags: {},
    tags: Object.fromEntries(Object.entries({ ...tagDigests, ...referrerTagDigests }).sort()),
    manifests: Object.fromEntries(Object.entries(manifests).sort()),
    blobs: blobSizes,
    // Sorted, so a sync that found the same things writes the same state (discovery runs concurrently).
    referrers: Object.fromEntries(
      Object.entries(referrers).sort().map(([subject, list]) => [subject, [...list].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0))]),
    ),
    manifestBlobs: Object.fromEntries(Object.entries(manifestBlobs).sort()),
  };
  return { state, stats };
}
