// Start-up: the cached repos an earlier process committed, rebuilt from their repo states, with
// their tags unconfirmed and their proofs (invariant 9) read back.
//
// State committed before proofs were kept has no record of them. For it, a blob counts as
// proven when no other repo's state names it: the old cache published only what the store held,
// and a blob that only this repo names came into the store through this repo's own fill. A blob
// another repo also names may be that repo's (a protected layer a hostile manifest pointed at):
// it is confirmed at the upstream before it is served, and the repo is committed again at start,
// so a tag whose blob the upstream lacks is unpublished. No republish by hand is needed.
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
  const states: RepoState[] = [];
  /** digest -> how many repo states name it (as a blob or a manifest). */
  const namedBy = new Map<string, number>();
  for (const f of await readdirOrEmpty(l.repoStateDir)) {
    if (!f.endsWith('.json')) continue;
    const state = await readRepoState(l, repoNameFromKey(f.slice(0, -5))).catch((err: Error) => {
      o.log.warn({ file: f, err: err.message }, 'unreadable repo state');
      return undefined;
    });
    if (!state) continue;
    for (const d of new Set([...Object.keys(state.blobs), ...Object.keys(state.manifests)])) namedBy.set(d, (namedBy.get(d) ?? 0) + 1);
    states.push(state);
  }
  const recommit: string[] = [];
  for (const state of states) {
    const m = o.match(state.name);
    if (!m) continue;
    const bytes = new Map<string, Buffer>();
    for (const d of Object.keys(state.manifests)) bytes.set(d, await o.store.read(d).catch(() => Buffer.alloc(0)));
    const repo = cacheRepoFromState(state, m.upstreamRepo, (d) => (bytes.get(d)?.length ? bytes.get(d) : undefined));
    const recorded = await o.proofs.load(state.name, m);
    if (recorded) for (const d of recorded) repo.proven.add(d);
    else for (const d of Object.keys(state.blobs)) if (namedBy.get(d) === 1) repo.proven.add(d);
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
