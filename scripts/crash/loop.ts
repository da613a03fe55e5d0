// The crash loop over one target: rounds until it has been SIGKILLed `kills` times; after every
// round the tree's invariants (design.md 1-4, scripts/crash/check.ts), the check behind
// `derrick verify` (in process, every repo), and now and then the real `derrick verify` CLI. A
// round with any problem is a broken state. The transition from the state before the round is
// checked too (web never goes back, app never ahead of web nor further behind).
import { layout } from '../../shared/layout.js';
import { verifyRepo } from '../../publisher/verify.js';
import { runChild } from '../soak/children.js';
import { CLI } from '../soak/publisher.js';
import { debrisProblems, storeProblems, treeProblems, type TreeState } from './check.js';
import type { CrashTarget, TargetName } from './target.js';

export interface TargetResult {
  name: TargetName;
  rounds: number;
  kills: number;
  finished: number;
  broken: number;
  /** The first problems seen (bounded), each naming the round and the kill moment. */
  problems: string[];
  /** Kills per moment ('random', 'end', 'web-swap', ...). */
  moments: Record<string, number>;
  /** Kills that left web at a new master and app at the previous one (the state between the swaps). */
  betweenSwaps: number;
  /** Of those, kills aimed at the web swap. */
  webSwapKillsBetween: number;
}

export interface LoopOptions {
  kills: number;
  /** Run the `derrick verify` CLI after every n-th round (1 = every round). */
  verifyCliEvery?: number;
  /** Re-hash every file only every n-th round (sizes and names are checked every round). */
  hashEvery?: number;
  log?: (line: string) => void;
}

/** Everything wrong with the root now, given the states before the round; updates `prev`. */
async function problemsNow(t: CrashTarget, prev: Map<string, TreeState>, round: number, o: LoopOptions): Promise<string[]> {
  const problems: string[] = [];
  const l = layout(t.root);
  for (const repo of t.repos()) {
    const before = prev.get(repo);
    const r = await treeProblems(t.root, repo, { previous: before, noHash: round % (o.hashEvery ?? 1) !== 0 });
    // A repo with nothing published yet may still have nothing published after a kill.
    const unpublished = !before && r.problems.every((p) => / symlink .*: ENOENT$/.test(p));
    if (!unpublished) problems.push(...r.problems);
    if (r.state) prev.set(repo, r.state);
    const verdict = await verifyRepo(l, repo);
    problems.push(...verdict.damage.map((d) => `verify: ${d.repo}: ${d.path}: ${d.problem}`));
  }
  problems.push(...(await storeProblems(t.root)).problems);
  if (round % (o.verifyCliEvery ?? 1) === 0) {
    const v = await runChild(process.execPath, [CLI, 'verify', '-c', t.configFile, '--wait', '30s'], 120_000);
    if (v.code !== 0) problems.push(`derrick verify exited ${v.code}: ${v.output.trim()}`);
  }
  return problems;
}

export async function runLoop(t: CrashTarget, o: LoopOptions): Promise<TargetResult> {
  const res: TargetResult = { name: t.name, rounds: 0, kills: 0, finished: 0, broken: 0, problems: [], moments: {}, betweenSwaps: 0, webSwapKillsBetween: 0 };
  const prev = new Map<string, TreeState>();
  const note = (round: string, ps: string[]) => {
    if (!ps.length) return;
    res.broken++;
    if (res.problems.length < 20) res.problems.push(`${t.name} ${round}: ${ps.join('; ')}`);
  };
  note('before the first kill', await problemsNow(t, prev, 0, o));
  // Twice the kills at most: a run may finish before its kill instant.
  while (res.kills < o.kills && res.rounds < o.kills * 2) {
    res.rounds++;
    const before = new Map(prev);
    const r = await t.round();
    if (r.killed) {
      res.kills++;
      res.moments[r.moment] = (res.moments[r.moment] ?? 0) + 1;
    } else res.finished++;
    const ps = await problemsNow(t, prev, res.rounds, o);
    if (r.failure) ps.unshift(r.failure);
    note(`round ${res.rounds} (kill at ${r.moment}${r.killed ? '' : ', run finished first'})`, ps);
    if (r.killed) {
      for (const [repo, now] of prev) {
        const was = before.get(repo);
        if (was && now.web !== was.web && now.app === was.web) {
          res.betweenSwaps++;
          if (r.moment === 'web-swap') res.webSwapKillsBetween++;
        }
      }
    }
  }
  const failure = await t.recover();
  note('recovery run', [...(failure ? [failure] : []), ...(await problemsNow(t, prev, 0, o)), ...(await debrisProblems(t.root))]);
  for (const repo of t.repos()) {
    const s = prev.get(repo);
    if (s && s.app !== s.web) note('recovery run', [`${repo}: app (${s.app}) still behind web (${s.web})`]);
  }
  o.log?.(`${t.name}: kills ${res.kills}, broken states ${res.broken} (rounds ${res.rounds}, runs that finished ${res.finished}, kills between the swaps ${res.betweenSwaps}; moments ${JSON.stringify(res.moments)})`);
  return res;
}
