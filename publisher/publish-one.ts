// One repo of a publish run, under its lock: clean debris, take the cheap up-to-date check, and
// only when it fails sync (or read the store), publish and write the repo state.
import type { Config, RepoConfig } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import type { Descriptor } from '../shared/oci.js';
import { currentPublish, readMasterRedirect } from '../shared/publish/current.js';
import { mapLimit, readdirOrEmptySync } from '../shared/publish/fsutil.js';
import { LockBusyError, acquireLock, type Lock } from '../shared/publish/lock.js';
import { publishRepo } from '../shared/publish/publish.js';
import { readRepoState, readRepoStateSync, writeRepoState, type RepoState } from '../shared/publish/repo-state.js';
import { findDebris, planRetention, removeAll, removeMasters, type SharedListings } from '../shared/publish/retention.js';
import type { Store } from '../shared/publish/store.js';
import type { RunProgress } from './progress.js';
import type { SourcePool } from './sources/pool.js';
import { type FetchPolicy, type SyncStats, SyncError, resolveSelectedTags, syncRepo } from './sync.js';
import { type Served, recordedSync, sameTags, servedPublish, servesTags } from './up-to-date.js';

export interface RepoOutcome {
  repo: string;
  outcome: 'published' | 'unchanged' | 'failed' | 'busy' | 'would-publish';
  master?: string;
  stats?: SyncStats;
  error?: string;
  ms: number;
}

/** What every repo of one run shares. */
export interface RunContext {
  config: Config;
  policy: FetchPolicy;
  dryRun: boolean;
  /** Build a new master even when nothing changed: `verify --repair` replaces a damaged one. */
  republish: boolean;
  waitMs: number;
  log: Logger;
  store: Store;
  sources: SourcePool;
  listings: SharedListings;
  progress: RunProgress;
  /** Blob downloads in flight, by digest: repos from one source share layers (see sync.ts). */
  blobsInFlight: Map<string, Promise<void>>;
}

const digests = (resolved: Map<string, Descriptor>) => Object.fromEntries([...resolved].map(([t, d]) => [t, d.digest]));

type Result = Pick<RepoOutcome, 'outcome' | 'master' | 'stats' | 'error'>;

async function storedState(store: Store, name: string, prev: RepoState | undefined): Promise<RepoState> {
  if (!prev) throw new SyncError(name, 'never synced: nothing in the store to publish with --no-fetch');
  const missing = await mapLimit([...Object.keys(prev.manifests), ...Object.keys(prev.blobs)], 32, async (d) => ((await store.has(d)) ? undefined : d));
  const first = missing.find(Boolean);
  if (first) throw new SyncError(name, `store lacks ${first}; run without --no-fetch`, first);
  return prev;
}

/** --dry-run: resolve tags and compare with what is served; download and write nothing. */
async function dryRun(repo: RepoConfig, ctx: RunContext): Promise<Result> {
  const l = ctx.store.layout;
  const tags =
    ctx.policy === 'no-fetch'
      ? (await storedState(ctx.store, repo.name, await readRepoState(l, repo.name))).tags
      : digests((await resolveSelectedTags(repo, ctx.sources.sourceFor(repo), ctx.config.concurrency, recordedSync(l, repo.name).manifests)).tags);
  const cur = await currentPublish(l, repo.name);
  const current = (cur.web ? (await readMasterRedirect(l, repo.name, cur.web))?.derrick?.tags : undefined) ?? {};
  const changed = [...new Set([...Object.keys(tags), ...Object.keys(current)])].filter((t) => tags[t] !== current[t]).sort();
  if (changed.length === 0) return { outcome: 'unchanged' };
  return { outcome: 'would-publish', error: `tags that would change: ${changed.join(', ')}` };
}

/** The state to publish, or undefined when the repo is up to date (see up-to-date.ts). */
async function stateToPublish(repo: RepoConfig, ctx: RunContext, served: Served): Promise<{ state: RepoState; stats?: SyncStats } | undefined> {
  const l = ctx.store.layout;
  const { tags: recorded, manifests: recordedManifests } = recordedSync(l, repo.name);
  if (ctx.policy === 'no-fetch') {
    if (recorded && servesTags(served, recorded, repo.protected)) return undefined;
    return { state: await storedState(ctx.store, repo.name, readRepoStateSync(l, repo.name)), stats: undefined };
  }
  const source = ctx.sources.sourceFor(repo);
  const resolved = ctx.policy === 'force-fetch' ? undefined : await resolveSelectedTags(repo, source, ctx.config.concurrency, recordedManifests);
  if (resolved && recorded && sameTags(digests(resolved.tags), recorded) && servesTags(served, recorded, repo.protected)) return undefined;
  let prev: RepoState | undefined;
  try {
    prev = readRepoStateSync(l, repo.name);
  } catch {
    prev = undefined; // a corrupt state is rebuilt by the sync
  }
  const progress = ctx.progress.forRepo(repo.name);
  try {
    const { state, stats } = await syncRepo({
      repo, source, store: ctx.store, prev, policy: ctx.policy as 'default' | 'force-fetch', concurrency: ctx.config.concurrency, progress, resolved, blobsInFlight: ctx.blobsInFlight,
    });
    // Only what the sync found goes to disk: a state equal to the last one but for its time is not rewritten.
    if (!prev || JSON.stringify({ ...state, lastSync: '' }) !== JSON.stringify({ ...prev, lastSync: '' })) await writeRepoState(l, state);
    return { state, stats };
  } finally {
    progress.stop();
  }
}

async function publishLocked(repo: RepoConfig, ctx: RunContext): Promise<Result> {
  if (ctx.dryRun) return dryRun(repo, ctx);
  const { config, log, store } = ctx;
  const l = store.layout;
  const masterNames = readdirOrEmptySync(l.masterDir(repo.name));
  const debris = await findDebris(l, repo.name, ctx.listings, masterNames);
  if (debris.length) {
    log.info({ repo: repo.name, debris }, 'removing debris of an interrupted run');
    await removeAll(debris);
  }
  const served = await servedPublish(l, repo.name);
  const todo = await stateToPublish(repo, ctx, served);
  let result: Result;
  /** Unchanged: what retention needs was read above (temp names among masterNames are ignored). */
  let known: Parameters<typeof planRetention>[5];
  if (!todo) {
    result = { outcome: 'unchanged', master: served.master };
    known = { names: masterNames, cur: served.cur };
  } else {
    const publishedUrl = config.serve.blobs === 'embedded' ? undefined : config.serve.blobs;
    const r = await publishRepo({ layout: l, state: todo.state, protected: repo.protected, publishedUrl, republish: ctx.republish || (todo.stats?.repaired ?? 0) > 0 });
    if (r.copied) log.warn({ repo: repo.name, copied: r.copied }, 'store and published tree are on different filesystems: blobs were copied, not linked');
    result = { outcome: r.outcome, master: r.master, stats: todo.stats };
  }
  // Retention runs on unchanged repos too: an old master's grace runs out whether or not a new one came.
  const plan = await planRetention(l, repo.name, config.keep, config.grace, new Date(), known);
  if (plan.remove.length) {
    log.info({ repo: repo.name, remove: plan.remove }, 'retention');
    await removeMasters(plan.remove.map((r) => l.master(repo.name, r.master)));
  }
  return result;
}

/** Never rejects: a failure is this repo's outcome, and the run goes on with the others. */
export async function publishOne(repo: RepoConfig, ctx: RunContext): Promise<RepoOutcome> {
  const started = Date.now();
  const done = (r: Result): RepoOutcome => ({ repo: repo.name, ...r, ms: Date.now() - started });
  const fail = (err: unknown) => {
    const msg = err instanceof SyncError ? err.message : `${repo.name}: ${(err as Error).message}`;
    ctx.log.error({ repo: repo.name, digest: (err as SyncError).digest, err: (err as Error).message }, 'publish failed');
    return done({ outcome: 'failed', error: msg });
  };
  let lock: Lock;
  try {
    lock = await acquireLock(ctx.store.layout.repoLock(repo.name), `repo ${repo.name}`, ctx.waitMs);
  } catch (err) {
    if (err instanceof LockBusyError) return done({ outcome: 'busy', error: err.message });
    return fail(err);
  }
  try {
    return done(await publishLocked(repo, ctx));
  } catch (err) {
    return fail(err);
  } finally {
    await lock.release().catch((err: unknown) => ctx.log.warn({ repo: repo.name, err: (err as Error).message }, 'releasing the repo lock failed'));
  }
}
