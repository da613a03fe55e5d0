// Which published repos under a public pull-through prefix nginx must still guard.
//
// nginx-conf opens `master/<prefix>~` and `web/<prefix>~` for a public cache prefix: one location
// for every cache repo that serve may add later. A repo the publisher wrote under that prefix is
// not a cache repo, and its files sit under the same open location. The config names those it
// still lists; this finds the rest on disk: a repo dropped from `repos:` (its masters stay until
// gc), or one whose state was lost. Each becomes an explicit guarded location, unless the store's
// repo state says the cache wrote it. Unknown counts as guarded (access.ts: fail closed).
import type { Config } from '../shared/config.js';
import { layout, repoKey, repoNameFromKey } from '../shared/layout.js';
import { readdirOrEmpty } from '../shared/publish/fsutil.js';
import { readRepoState } from '../shared/publish/repo-state.js';

/** Names of published repos under an open cache prefix that are neither cache repos nor public `repos:` entries. */
export async function guardedUnderOpenPrefixes(config: Config): Promise<string[]> {
  if (!config.serve.anonymous || config.upstreams.length === 0) return [];
  const l = layout(config.root);
  const openPrefixes = config.upstreams.map((u) => `${repoKey(u.prefix)}~`);
  const configured = new Set(config.repos.map((r) => r.name));
  const keys = new Set<string>();
  for (const dir of [l.masterRoot, l.webDir, l.appDir]) {
    for (const entry of await readdirOrEmpty(dir)) keys.add(entry.replace(/\.json$/, ''));
  }
  const guarded: string[] = [];
  for (const key of [...keys].sort()) {
    if (!openPrefixes.some((p) => key.startsWith(p))) continue;
    const name = repoNameFromKey(key);
    if (configured.has(name)) continue; // the config's own entry decides (public, or guarded by name)
    const state = await readRepoState(l, name).catch(() => undefined);
    if (state?.source.startsWith('pull-through:')) continue;
    guarded.push(name);
  }
  return guarded;
}
