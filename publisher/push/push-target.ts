// One push to one edge: send each repo's served master that the edge lacks, make it visible under
// its real name, swap web, then app, then prune what the origin's keep/grace rule lets go. The
// edge's tree holds invariants 1, 2 and 5 at every instant (design invariant 10); a kill at any
// point leaves it serving its previous publish, and the next push picks up from what it lists.
import type { Config, TargetConfig } from '../../shared/config.js';
import { REDIRECT_FILE_NAME, repoKey, type Layout } from '../../shared/layout.js';
import { mapLimit } from '../../shared/publish/fsutil.js';
import { EDGE_DIR_SUFFIX, readEdgeState, type EdgeRepo } from './edge-state.js';
import { edgeDoomed } from './edge-retention.js';
import { makeRepoDirs, removeEntries, sendLinks, sendMaster } from './edge-steps.js';
import { PushError } from './rsync.js';
import { transportFor } from './transport.js';

/** A repo as the origin serves it now. */
export interface LocalRepo {
  name: string;
  master: string;
}

export interface TargetResult {
  target: string;
  /** Repos whose master was sent this time, and repos the edge already served. */
  sent: string[];
  unchanged: string[];
  failed: Array<{ repo?: string; error: string }>;
  /** Repo -> master the edge serves (web) after this push, for the repos it knows of. */
  serves: Record<string, string>;
  pruned: number;
  bytesSent: number;
  ms: number;
}

const dirOf = (m: string) => m + EDGE_DIR_SUFFIX;

export async function pushTarget(
  config: Config, target: TargetConfig, l: Layout, repos: LocalRepo[], stage: string, controlPath?: string, now: () => Date = () => new Date(),
): Promise<TargetResult> {
  const started = Date.now();
  const what = `push ${target.name}`;
  const res: TargetResult = { target: target.name, sent: [], unchanged: [], failed: [], serves: {}, pruned: 0, bytesSent: 0, ms: 0 };
  const t = transportFor(target, controlPath);
  try {
    const edge = await readEdgeState(t, what);
    const empty: EdgeRepo = { masters: [], linkedAt: new Map(), dirs: [], debris: [] };
    const at = (r: LocalRepo) => edge.repos.get(repoKey(r.name)) ?? empty;
    for (const r of repos) if (at(r).web) res.serves[r.name] = at(r).web!;

    // 1. Files, into directories nothing serves yet; one repo's failure leaves the others going.
    const toSend = repos.filter((r) => !at(r).masters.includes(r.master));
    await makeRepoDirs(t, `${what}: repo directories`, stage, toSend.map((r) => repoKey(r.name)));
    const ready: LocalRepo[] = [];
    await mapLimit(repos, target.concurrency, async (r) => {
      const e = at(r);
      if (e.masters.includes(r.master)) return void ready.push(r);
      const bases = [...new Set([...e.masters].reverse().concat([...e.dirs].reverse()))].filter((m) => m !== r.master).map(dirOf);
      try {
        const sent = await sendMaster(t, `${what}: ${r.name}`, l.master(r.name, r.master), repoKey(r.name), dirOf(r.master), bases);
        res.bytesSent += sent; // not `+= await`: that reads the total before the wait, and repos run at once
        ready.push(r);
      } catch (err) {
        if (!(err instanceof PushError)) throw err;
        res.failed.push({ repo: r.name, error: err.message });
      }
    });
    const moving = ready.filter((r) => at(r).web !== r.master || at(r).app !== r.master);
    ready.filter((r) => !moving.includes(r)).forEach((r) => res.unchanged.push(r.name));

    // 2. Each new master under its real name, in one step (a symlink to its directory).
    const masterLinks = new Map(ready.filter((r) => !at(r).masters.includes(r.master)).map((r) => [`${repoKey(r.name)}/${r.master}`, dirOf(r.master)]));
    res.bytesSent += await sendLinks(t, `${what}: master links`, stage, 'master', masterLinks);
    // 3. An earlier push killed between web and app: app catches up with web before web moves
    //    again, so a kill in the steps below leaves app one publish behind, never two.
    const appLink = (r: LocalRepo, m: string): [string, string] => [`${repoKey(r.name)}.json`, `../master/${repoKey(r.name)}/${m}/${REDIRECT_FILE_NAME}`];
    const behind = moving.filter((r) => { const e = at(r); return e.web && e.app !== e.web && e.masters.includes(e.web); });
    res.bytesSent += await sendLinks(t, `${what}: app catch-up`, stage, 'app', new Map(behind.map((r) => appLink(r, at(r).web!))));
    // 4. web, then app, for every repo at once.
    res.bytesSent += await sendLinks(t, `${what}: web links`, stage, 'web', new Map(moving.map((r) => [repoKey(r.name), `../master/${repoKey(r.name)}/${r.master}`])));
    for (const r of moving) res.serves[r.name] = r.master;
    res.bytesSent += await sendLinks(t, `${what}: app links`, stage, 'app', new Map(moving.map((r) => appLink(r, r.master))));
    moving.forEach((r) => res.sent.push(r.name));

    // 5. Retention as on the origin (keep, grace), decided here from the listing: each doomed
    //    master's name goes first, its directory after; orphaned directories of killed pushes too.
    const links: string[] = [...edge.debris];
    const dirs: string[] = [];
    for (const r of ready) {
      const e = at(r);
      const key = repoKey(r.name);
      const names = [...new Set([...e.masters, r.master])];
      const doomed = new Set(edgeDoomed(e, r.master, config.keep, config.grace, now()));
      for (const m of doomed) if (e.masters.includes(m)) links.push(`master/${key}/${m}`);
      for (const m of e.dirs) if (doomed.has(m) || !names.includes(m)) dirs.push(`master/${key}/${dirOf(m)}`);
      links.push(...e.debris);
      res.pruned += [...doomed].filter((m) => e.masters.includes(m)).length;
    }
    await removeEntries(t, `${what}: prune`, stage, 'links', links);
    await removeEntries(t, `${what}: prune`, stage, 'dirs', dirs);
  } catch (err) {
    if (!(err instanceof PushError)) throw err;
    res.failed.push({ error: err.message });
  }
  res.ms = Date.now() - started;
  return res;
}
