// Commit and eviction for cached repos. A pulled image becomes an ordinary atomic publish once
// it is complete in the store (the next pull is a static hit); above cache.max-size the least
// recently pulled tags are unpublished first, and only then are their unreferenced blobs deleted.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Layout } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { acquireLock } from '../../shared/publish/lock.js';
import { publishRepo } from '../../shared/publish/publish.js';
import { planRetention, removeMasters } from '../../shared/publish/retention.js';
import { readRepoState, RepoStateSchema, writeRepoState, type RepoState } from '../../shared/publish/repo-state.js';
import { fsyncDir, readdirOrEmpty } from '../../shared/publish/fsutil.js';
import type { Store } from '../../shared/publish/store.js';
import { parseRedirectFile } from '../../shared/redirect-file.js';
import { addManifest, cachedManifest, committedState, isForeign, type CacheRepo } from './cache-repo.js';
import type { Proofs } from './provenance.js';

export interface Committer {
  /** Publishes the repo soon; calls within the debounce window coalesce. */
  schedule(name: string): void;
  /** Waits for scheduled and running commits (tests, shutdown). */
  idle(): Promise<void>;
  usage(): { bytes: number; images: number };
  /** Registers what an earlier process committed, so usage and eviction count it. */
  seed(state: RepoState): void;
}

export interface CommitterOptions {
  layout: Layout;
  store: Store;
  repos: Map<string, CacheRepo>;
  maxSize?: number;
  /** Retention, as for `derrick publish`: earlier masters kept, and the grace before deletion. */
  keep: number;
  graceMs: number;
  publishedUrl?: string;
  debounceMs?: number;
  log: Logger;
  /** Confirms blobs at the upstream before they are published, and keeps the record of it. */
  proofs: Pick<Proofs, 'checkAll' | 'save' | 'drop'>;
  onEvict?(repo: string, tag: string): void;
}

/** Digests named by every repo's state and every served redirect file: what eviction must keep. */
async function referencedElsewhere(l: Layout): Promise<Set<string>> {
  const refs = new Set<string>();
  for (const f of await readdirOrEmpty(l.repoStateDir)) {
    if (!f.endsWith('.json')) continue;
    const parsed = RepoStateSchema.safeParse(JSON.parse(await fs.readFile(path.join(l.repoStateDir, f), 'utf8').catch(() => '{}')));
    if (parsed.success) for (const d of [...Object.keys(parsed.data.manifests), ...Object.keys(parsed.data.blobs)]) refs.add(d);
  }
  for (const f of await readdirOrEmpty(l.appDir)) {
    if (!f.endsWith('.json') || f.startsWith('.')) continue;
    try {
      const file = parseRedirectFile(await fs.readFile(path.join(l.appDir, f), 'utf8'));
      const d = (file as { derrick?: RepoState }).derrick;
      if (d) for (const x of [...Object.keys(d.manifests), ...Object.keys(d.blobs)]) refs.add(x);
    } catch {
      // An unreadable file protects nothing; its blobs are still named by its repo state.
    }
  }
  return refs;
}

/** Whether two states name the same manifests and blobs. */
function sameObjects(a: RepoState, b: RepoState): boolean {
  const keys = (s: RepoState) => [...Object.keys(s.manifests), '|', ...Object.keys(s.blobs)].join(' ');
  return keys(a) === keys(b);
}

export function createCommitter(o: CommitterOptions): Committer {
  const l = o.layout;
  const timers = new Map<string, NodeJS.Timeout>();
  let chain: Promise<void> = Promise.resolve();
  const committed = new Map<string, RepoState>();

  const presentSet = async (repo: CacheRepo): Promise<Set<string>> => {
    const digests = new Set<string>();
    for (const [d, m] of repo.manifests) {
      digests.add(d);
      // A foreign layer is left to its URLs: never published, so never confirmed upstream.
      for (const b of m.blobs) if (!isForeign(b)) digests.add(b.digest);
    }
    const present = new Set<string>();
    await Promise.all([...digests].map(async (d) => (await o.store.has(d)) && present.add(d)));
    // A manifest served from memory may have left the store meanwhile (gc takes unpublished
    // objects once they are older than grace): put it back rather than never commit the image.
    for (const [d, m] of repo.manifests) {
      if (present.has(d) || !m.bytes) continue;
      await o.store.putBytes(d, m.bytes);
      present.add(d);
    }
    return present;
  };

  const unpublish = async (name: string) => {
    // App first: the redirector stops answering for the repo before its files go.
    for (const link of [l.app(name), l.web(name)]) {
      await fs.rm(link, { force: true });
      await fsyncDir(path.dirname(link)).catch(() => {});
    }
    await fs.rm(l.repoState(name), { force: true });
    await o.proofs.drop(name);
  };

  /**
   * Tags another process committed since this one last did (serve --workers: each worker knows
   * the pulls it answered): taken into this repo so that its commit doesn't drop them. Their blobs
   * count as unproven here and are confirmed at the upstream like any other. Tags this process
   * committed and then evicted are not in the disk state's difference, so they stay evicted.
   */
  const mergeOthers = async (repo: CacheRepo) => {
    const disk = await readRepoState(l, repo.name).catch(() => undefined);
    if (!disk || !disk.source.startsWith('pull-through:')) return;
    const mine = committed.get(repo.name);
    for (const [tag, digest] of Object.entries(disk.tags)) {
      if (repo.tags.has(tag) || mine?.tags[tag] === digest) continue;
      for (const [d, m] of Object.entries(disk.manifests)) {
        if (repo.manifests.has(d)) continue;
        const bytes = await o.store.read(d).catch(() => undefined);
        if (bytes) addManifest(repo, d, cachedManifest(bytes, m.mediaType));
      }
      repo.tags.set(tag, { digest, checkedAt: 0 });
    }
  };

  const publish = async (name: string): Promise<void> => {
    const repo = o.repos.get(name);
    if (!repo) return;
    // Held from the merge to the write, so two workers' commits of one repo can't lose each other's tags.
    const lock = await acquireLock(l.repoLock(name), `repo ${name}`, 60_000);
    try {
      await mergeOthers(repo);
      const present = await presentSet(repo);
      // A blob the store holds for another repo's sake is published here only once this repo's
      // upstream confirms it has it (invariant 9).
      await o.proofs.checkAll(repo, [...present].filter((d) => !repo.proven.has(d)));
      const state = committedState(repo, (d) => present.has(d));
      if (!state) {
        if (committed.has(name)) await unpublish(name);
        committed.delete(name);
        return;
      }
      // Proofs first: a state on disk never names a blob without its proof on disk.
      await o.proofs.save(repo);
      await writeRepoState(l, state);
      // Same tags but other objects (an index whose children completed after its first commit): the
      // publish must be rebuilt, or the children stay unpublished ("unchanged" compares tags).
      const before = committed.get(name);
      const objectsChanged = !!before && !sameObjects(before, state);
      const r = await publishRepo({ layout: l, state, protected: false, publishedUrl: o.publishedUrl, republish: objectsChanged });
      committed.set(name, state);
      const plan = await planRetention(l, name, o.keep, o.graceMs, new Date());
      await removeMasters(plan.remove.map((x) => l.master(name, x.master)));
      o.log.info({ repo: name, outcome: r.outcome, master: r.master, tags: Object.keys(state.tags).length }, 'cache commit');
    } finally {
      await lock.release();
    }
  };

  const usage = () => {
    const sizes = new Map<string, number>();
    let images = 0;
    for (const s of committed.values()) {
      images += Object.keys(s.tags).length;
      for (const [d, m] of Object.entries(s.manifests)) sizes.set(d, m.size);
      for (const [d, n] of Object.entries(s.blobs)) sizes.set(d, n);
    }
    let bytes = 0;
    for (const n of sizes.values()) bytes += n;
    return { bytes, images };
  };

  const evictIfNeeded = async () => {
    if (o.maxSize === undefined) return;
    const doomed = new Set<string>();
    while (usage().bytes > o.maxSize) {
      let oldest: { repo: CacheRepo; tag: string; at: number } | undefined;
      for (const repo of o.repos.values()) {
        if (!committed.has(repo.name)) continue;
        for (const tag of Object.keys(committed.get(repo.name)!.tags)) {
          const at = repo.access.get(tag) ?? 0;
          if (!oldest || at < oldest.at) oldest = { repo, tag, at };
        }
      }
      if (!oldest) break;
      const before = committed.get(oldest.repo.name)!;
      oldest.repo.tags.delete(oldest.tag);
      oldest.repo.access.delete(oldest.tag);
      await publish(oldest.repo.name);
      const after = committed.get(oldest.repo.name);
      for (const d of [...Object.keys(before.manifests), ...Object.keys(before.blobs)]) {
        if (!after || (!after.manifests[d] && after.blobs[d] === undefined)) doomed.add(d);
      }
      // The evicted image must be fetched again, not served from memory.
      for (const d of Object.keys(before.manifests)) if (!after?.manifests[d]) oldest.repo.manifests.delete(d);
      o.onEvict?.(oldest.repo.name, oldest.tag);
      o.log.info({ repo: oldest.repo.name, tag: oldest.tag }, 'cache eviction');
    }
    if (doomed.size === 0) return;
    // Only after the unpublish: blobs no repo state and no served publish still names.
    const keep = await referencedElsewhere(l);
    for (const d of doomed) if (!keep.has(d)) await o.store.remove(d);
    await o.store.sync();
  };

  const run = (name: string) => {
    chain = chain
      .then(() => publish(name))
      .then(evictIfNeeded)
      .catch((err) => o.log.error({ repo: name, err: String((err as Error).message) }, 'cache commit failed'));
  };

  return {
    schedule(name) {
      clearTimeout(timers.get(name));
      timers.set(
        name,
        setTimeout(() => {
          timers.delete(name);
          run(name);
        }, o.debounceMs ?? 200),
      );
    },
    async idle() {
      while (timers.size) await new Promise((r) => setTimeout(r, 20));
      await chain;
    },
    usage,
    seed: (state) => void committed.set(state.name, state),
  };
}

