// Start-up: the cached repos an earlier process committed, rebuilt from their repo states, with
// their tags unconfirmed and their proofs (invariant 9) read back.
//
// State committed before proofs were kept has no record of them. For it, a blob counts as
// proven when no other repo's state names it: the old cache published only what the store held,
// and a blob that only this repo names came into the store through this repo's own fill. A blob
// another repo also names may be that repo's (a protected layer a hostile manifest pointed at):
// it is confirmed at the upstream before it is served, and the repo is committed again at start,
// so a tag whose blob the upstream lacks is unpublished. No republish by hand is needed. The
// decision is recorded at once, so only the first start after the upgrade reads other repos'
// states: serve's start-up cost stays independent of the published catalog.
import type { Layout } from '../../shared/layout.js';
import { repoNameFromKey } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { readdirOrEmpty } from '../../shared/publish/fsutil.js';
import { readRepoState, type RepoState } from '../../shared/publish/repo-state.js';
import type { Store } from '../../shared/publish/store.js';
import { cacheRepoFromState, type CacheRepo } from './cache-repo.js';
import type { Committer } from './commit.js';
import type { Proofs } from './provenance.js';
import type { RouteMatch } from './routes.js';

export interface RestoreOptions {
  layout: Layout;
  store: Store;
  match(name: string): RouteMatch | undefined;
  repos: Map<string, CacheRepo>;
  committer: Committer;
  proofs: Proofs;
  log: Logger;
}

/** Fills `repos`; returns the names whose published blobs are not all proven (to commit again). */
export async function restoreCacheRepos(o: RestoreOptions): Promise<string[]> {
  const l = o.layout;
  const read = (f: string) =>
    readRepoState(l, repoNameFromKey(f.slice(0, -5))).catch((err: Error) => {
      o.log.warn({ file: f, err: err.message }, 'unreadable repo state');
      return undefined;
    });
  const files = (await readdirOrEmpty(l.repoStateDir)).filter((f) => f.endsWith('.json'));
  const cached = new Map<string, { state: RepoState; m: RouteMatch; recorded: Set<string> | undefined }>();
  for (const f of files) {
    const m = o.match(repoNameFromKey(f.slice(0, -5)));
    if (!m) continue;
    const state = await read(f);
    // Only what the cache itself committed: a publisher's state is never taken over.
    if (state && state.source.startsWith('pull-through:')) cached.set(f, { state, m, recorded: await o.proofs.load(state.name, m) });
  }
  // Only state from before proofs needs the other repos' states: read them once, at the upgrade.
  const namedBy = new Map<string, number>();
  if ([...cached.values()].some((c) => !c.recorded)) {
    for (const f of files) {
      const state = cached.get(f)?.state ?? (o.match(repoNameFromKey(f.slice(0, -5))) ? undefined : await read(f));
      if (!state) continue;
      for (const d of new Set([...Object.keys(state.blobs), ...Object.keys(state.manifests)])) namedBy.set(d, (namedBy.get(d) ?? 0) + 1);
    }
  }
  const recommit: string[] = [];
  for (const { state, m, recorded } of cached.values()) {
    const bytes = new Map<string, Buffer>();
    for (const d of Object.keys(state.manifests)) bytes.set(d, await o.store.read(d).catch(() => Buffer.alloc(0)));
    const repo = cacheRepoFromState(state, m.upstreamRepo, (d) => (bytes.get(d)?.length ? bytes.get(d) : undefined));
    if (recorded) for (const d of recorded) repo.proven.add(d);
    else {
      for (const d of Object.keys(state.blobs)) if (namedBy.get(d) === 1) repo.proven.add(d);
      // Recorded now, so that later starts need not read every repo's state again.
      await o.proofs.save(repo);
    }
    const doubtful = Object.keys(state.blobs).filter((d) => !repo.proven.has(d));
    if (doubtful.length) {
      o.log.warn({ repo: state.name, blobs: doubtful.length, recorded: !!recorded }, 'cached blobs not proven for this repo; confirming them at the upstream');
      recommit.push(state.name);
    }
    o.repos.set(state.name, repo);
    o.committer.seed(state);
  }
  return recommit;
}
