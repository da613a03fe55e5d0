// Which masters an edge drops after a push: the origin's rule (the served master, `keep` earlier
// ones, others only after `grace` out of service), timed by the edge's own clock. A master's
// successor became servable on the edge when its symlink was made there, which may be long
// after the origin built it (an edge that was down catches up); the origin's rule times it by the
// successor's name and would drop a master the edge served a moment ago. It errs late rather than
// early: a master counts as served until the newest later one reached the edge.
import { masterNameDate } from '../../shared/layout.js';
import type { EdgeRepo } from './edge-state.js';

export function edgeDoomed(e: EdgeRepo, serving: string, keep: number, graceMs: number, now: Date): string[] {
  const masters = [...new Set([...e.masters, serving])].sort();
  // What the edge served until this push is out of service only from now on.
  const justServed = new Set([e.web, e.app, serving].filter((m): m is string => !!m));
  const earlier = masters.filter((m) => m < serving);
  const kept = new Set(earlier.slice(Math.max(0, earlier.length - keep)));
  const out: string[] = [];
  masters.forEach((m, i) => {
    if (justServed.has(m) || kept.has(m)) return;
    // Out of service since the edge's web moved past it: at the latest when the newest of its
    // successors was linked. Not the next one's link: a push killed before its web step links a
    // master the edge never serves, while this one stays in service until a later push.
    const newer = masters.slice(i + 1);
    const since = newer.length ? new Date(Math.max(...newer.map((n) => (e.linkedAt.get(n) ?? masterNameDate(n)).getTime()))) : now;
    if (now.getTime() - since.getTime() > graceMs) out.push(m);
  });
  return out;
}
