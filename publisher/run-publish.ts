// `derrick publish`: the selected repos, `repo-concurrency` at a time, sharing one store lock,
// one store, and one reader per source origin (see sources/pool.ts). Each repo runs under its
// own lock (publish-one.ts); one repo's failure never stops the others. Summary lines come out in
// config order, each as soon as it and every repo before it are done.
import type { Config } from '../shared/config.js';
import { layout as makeLayout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { formatBytes, formatDuration } from '../shared/units.js';
import { LockBusyError, acquireStoreShared } from '../shared/publish/lock.js';
import { readSharedListings } from '../shared/publish/retention.js';
import { openStore } from '../shared/publish/store.js';
import { mapInOrder } from './in-order.js';
import { runProgress } from './progress.js';
import { publishOne, type RepoOutcome, type RunContext } from './publish-one.js';
import { createSourcePool } from './sources/pool.js';
import type { FetchPolicy } from './sync.js';

export type { RepoOutcome } from './publish-one.js';

export interface PublishRunOptions {
  config: Config;
  repos?: string[];
  policy: FetchPolicy;
  dryRun?: boolean;
  waitMs?: number;
  log: Logger;
  progress?: boolean;
  /** Where summary lines go; error lines (starting "error:") belong on stderr. */
  print?: (line: string, isError: boolean) => void;
  /** Build a new master even when nothing changed: `verify --repair` replaces a damaged one. */
  republish?: boolean;
}

/** Exit status for a run: 1 if any repo failed, else 75 if any was busy, else 0. */
export function exitCodeFor(outcomes: RepoOutcome[]): number {
  if (outcomes.some((o) => o.outcome === 'failed')) return 1;
  if (outcomes.some((o) => o.outcome === 'busy')) return 75;
  return 0;
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
  const progress = runProgress(!!opts.progress);
  try {
    if (!opts.dryRun) await store.cleanDebris();
    const ctx: RunContext = {
      config,
      policy: opts.policy,
      dryRun: !!opts.dryRun,
      republish: !!opts.republish,
      waitMs: opts.waitMs ?? 0,
      log: opts.log,
      store,
      sources: createSourcePool(config),
      listings: await readSharedListings(l),
      progress,
      blobsInFlight: new Map(),
    };
    return await mapInOrder(selected, config['repo-concurrency'], (repo) => publishOne(repo, ctx), (o) => {
      const line = summaryLine(o);
      // With bars on the terminal, the line goes above them instead of through them.
      if (opts.print) (opts.progress ? progress.print : opts.print)(line, o.outcome === 'failed');
      opts.log.info({ ...o }, 'repo done');
    });
  } finally {
    progress.stop();
    await storeLock.release();
  }
}
