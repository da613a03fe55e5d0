// `derrick publish`: for each repo, under its lock: clean debris, sync (or read the store),
// publish, apply retention. One repo's failure never stops the others.
import type { Config, RepoConfig } from '../shared/config.js';
import { authPassword } from '../shared/config.js';
import { layout as makeLayout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { formatBytes, formatDuration } from '../shared/units.js';
import { currentPublish, readMasterRedirect } from '../shared/publish/current.js';
import { mapLimit } from '../shared/publish/fsutil.js';
import { LockBusyError, acquireLock, acquireStoreShared } from '../shared/publish/lock.js';
import { repoProgress } from './progress.js';
import { publishRepo } from '../shared/publish/publish.js';
import { readRepoState, writeRepoState, type RepoState } from '../shared/publish/repo-state.js';
import { findDebris, planRetention, removeAll, removeMasters } from '../shared/publish/retention.js';
import { ociLayoutSource } from './sources/oci-layout.js';
import { registrySource } from './sources/registry.js';
import type { Source } from './sources/source.js';
import { openStore, type Store } from '../shared/publish/store.js';
import { type FetchPolicy, type SyncStats, SyncError, syncRepo, tagFilter } from './sync.js';

export interface PublishRunOptions {
  config: Config;
  repos?: string[];
  policy: FetchPolicy;
  dryRun?: boolean;
  waitMs?: number;
  log: Logger;
  progress?: boolean;
  print?: (line: string) => void;
  /** Build a new master even when nothing changed: `verify --repair` replaces a damaged one. */
  republish?: boolean;
}

export interface RepoOutcome {
  repo: string;
  outcome: 'published' | 'unchanged' | 'failed' | 'busy' | 'would-publish';
  master?: string;
  stats?: SyncStats;
  error?: string;
  ms: number;
}

export function sourceFor(repo: RepoConfig, concurrency: number): Source {
  if (repo.from.transport === 'oci') return ociLayoutSource(repo.from.path);
  return registrySource(
    { registry: repo.from.registry, repository: repo.from.repository },
    {
      tlsVerify: repo['tls-verify'],
      username: repo.auth?.username,
      password: authPassword(repo.auth),
      concurrency,
    },
  );
}

/** Exit status for a run: 1 if any repo failed, else 75 if any was busy, else 0. */
export function exitCodeFor(outcomes: RepoOutcome[]): number {
  if (outcomes.some((o) => o.outcome === 'failed')) return 1;
  if (outcomes.some((o) => o.outcome === 'busy')) return 75;
  return 0;
}

async function storedState(store: Store, name: string): Promise<RepoState> {
  const state = await readRepoState(store.layout, name);
  if (!state) throw new SyncError(name, 'never synced: nothing in the store to publish with --no-fetch');
  const missing = await mapLimit(
    [...Object.keys(state.manifests), ...Object.keys(state.blobs)],
    32,
    async (d) => ((await store.has(d)) ? undefined : d),
  );
  const first = missing.find(Boolean);
  if (first) throw new SyncError(name, `store lacks ${first}; run without --no-fetch`, first);
  return state;
}

/** --dry-run: resolve tags and compare with what is served; download and write nothing. */
async function dryRunRepo(repo: RepoConfig, opts: PublishRunOptions, store: Store): Promise<Pick<RepoOutcome, 'outcome' | 'error'>> {
  const l = store.layout;
  let tags: Record<string, string>;
  if (opts.policy === 'no-fetch') {
    tags = (await storedState(store, repo.name)).tags;
  } else {
    const source = sourceFor(repo, opts.config.concurrency);
    const wanted = tagFilter(repo.tags, repo.exclude);
    const names = (await source.listTags()).filter(wanted);
    tags = {};
    await mapLimit(names, opts.config.concurrency * 2, async (t) => {
      tags[t] = (await source.resolveTag(t)).digest;
    });
  }
  const cur = await currentPublish(l, repo.name);
  const served = cur.web ? (await readMasterRedirect(l, repo.name, cur.web))?.derrick?.tags ?? {} : {};
  const changed = [...new Set([...Object.keys(tags), ...Object.keys(served)])].filter((t) => tags[t] !== served[t]).sort();
  if (changed.length === 0) return { outcome: 'unchanged' };
  return { outcome: 'would-publish', error: `tags that would change: ${changed.join(', ')}` };
}

async function publishOne(repo: RepoConfig, opts: PublishRunOptions, store: Store): Promise<RepoOutcome> {
  const started = Date.now();
  const l = store.layout;
  const { config, log } = opts;
  let lock;
  try {
    lock = await acquireLock(l.repoLock(repo.name), `repo ${repo.name}`, opts.waitMs ?? 0);
  } catch (err) {
    if (err instanceof LockBusyError) return { repo: repo.name, outcome: 'busy', error: err.message, ms: Date.now() - started };
    throw err;
  }
  try {
    if (opts.dryRun) return { repo: repo.name, ...(await dryRunRepo(repo, opts, store)), ms: Date.now() - started };
    const debris = await findDebris(l, repo.name);
    if (debris.length) {
      log.info({ repo: repo.name, debris }, 'removing debris of an interrupted run');
      await removeAll(debris);
    }
    let state: RepoState;
    let stats: SyncStats | undefined;
    if (opts.policy === 'no-fetch') {
      state = await storedState(store, repo.name);
    } else {
      const progress = repoProgress(repo.name, !!opts.progress);
      try {
        ({ state, stats } = await syncRepo({
          repo,
          source: sourceFor(repo, config.concurrency),
          store,
          prev: await readRepoState(l, repo.name).catch(() => undefined),
          policy: opts.policy,
          concurrency: config.concurrency,
          progress,
        }));
      } finally {
        progress.stop();
      }
      await writeRepoState(l, state);
    }
    const publishedUrl = config.serve.blobs === 'embedded' ? undefined : config.serve.blobs;
    const result = await publishRepo({ layout: l, state, protected: repo.protected, publishedUrl, republish: !!opts.republish || (stats?.repaired ?? 0) > 0 });
    const plan = await planRetention(l, repo.name, config.keep, config.grace, new Date());
    if (plan.remove.length) {
      log.info({ repo: repo.name, remove: plan.remove }, 'retention');
      await removeMasters(plan.remove.map((r) => l.master(repo.name, r.master)));
    }
    if (result.copied) log.warn({ repo: repo.name, copied: result.copied }, 'store and published tree are on different filesystems: blobs were copied, not linked');
    return { repo: repo.name, outcome: result.outcome, master: result.master, stats, ms: Date.now() - started };
  } catch (err) {
    const msg = err instanceof SyncError ? err.message : `${repo.name}: ${(err as Error).message}`;
    log.error({ repo: repo.name, digest: (err as SyncError).digest, err: (err as Error).message }, 'publish failed');
    return { repo: repo.name, outcome: 'failed', error: msg, ms: Date.now() - started };
  } finally {
    await lock.release();
  }
}

export function summaryLine(o: RepoOutcome): string {
  const t = formatDuration(o.ms);
  switch (o.outcome) {
    case 'published': {
      const s = o.stats;
      const fetched = s ? `, ${s.tags} tags, ${s.blobsFetched} blobs fetched (${formatBytes(s.bytesFetched)})` : '';
      return `${o.repo}: published ${o.master}${fetched} in ${t}`;
    }
    case 'unchanged':
      return `${o.repo}: unchanged (${o.master ?? 'nothing served'}) in ${t}`;
    case 'would-publish':
      return `${o.repo}: would publish: ${o.error}`;
    case 'busy':
      return `${o.repo}: busy: ${o.error}`;
    case 'failed':
      return `error: ${o.error}`;
  }
}

export async function runPublish(opts: PublishRunOptions): Promise<RepoOutcome[]> {
  const { config } = opts;
  const l = makeLayout(config.root);
  const store = await openStore(l);
  const selected = opts.repos?.length ? config.repos.filter((r) => opts.repos!.includes(r.name)) : config.repos;
  let storeLock;
  try {
    storeLock = await acquireStoreShared(l.storeLock, opts.waitMs ?? 0);
  } catch (err) {
    if (!(err instanceof LockBusyError)) throw err;
    return selected.map((r) => ({ repo: r.name, outcome: 'busy', error: err.message, ms: 0 }));
  }
  try {
    if (!opts.dryRun) await store.cleanDebris();
    const outcomes: RepoOutcome[] = [];
    for (const repo of selected) {
      const o = await publishOne(repo, opts, store);
      outcomes.push(o);
      opts.print?.(summaryLine(o));
      opts.log.info({ ...o }, 'repo done');
    }
    return outcomes;
  } finally {
    await storeLock.release();
  }
}
