// What the crash loop needs from each thing it kills: a round (something changes, a run starts and
// is SIGKILLed at some instant, or finishes), the repos whose published trees must stay sound, and
// a normal run that completes whatever was interrupted.
import type { KillAt, RunLength } from './kill.js';

export type TargetName = 'publisher' | 'gc' | 'pull-through';

export interface RoundOutcome {
  killed: boolean;
  /** Where the kill was aimed: 'random', 'end', or a moment such as 'web-swap'. */
  moment: string;
  /** A run that was not killed but failed: that is a broken state too. */
  failure?: string;
}

export interface CrashTarget {
  name: TargetName;
  root: string;
  configFile: string;
  /** The repos checked after every round. */
  repos(): string[];
  round(): Promise<RoundOutcome>;
  /** A normal run after the last kill; returns a failure message, if any. */
  recover(): Promise<string | undefined>;
  stop(): Promise<void>;
}

/** A shuffled plan of kill moments: random fractions of a run, some near its end, and named moments. */
export function shufflePlan<T>(items: T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** Fractions of a run from here on count as kills near its end, where the swaps are. */
const END_FROM = 0.85;

/**
 * `n` moments: about 60% uniform over the run, 15% near its end, the rest spread over `named`.
 * Each named moment comes once among the first rounds: a run stops at its kill count, before the
 * plan's end, and a moment left in the unplayed tail would never be tried (the crash test asserts
 * kills at the web swap, and with 10 kills that tail missed it about one run in seven).
 */
export function planMoments(n: number, named: string[]): Array<number | string> {
  const nNamed = named.length ? Math.max(named.length, Math.round(n * 0.25)) : 0;
  const nEnd = Math.round(n * 0.15);
  const nRandom = Math.max(0, n - nNamed - nEnd);
  return [
    ...shufflePlan(named),
    ...shufflePlan([
      ...Array.from({ length: nRandom }, () => Math.random() * 1.1),
      ...Array.from({ length: nEnd }, () => END_FROM + Math.random() * 0.25),
      ...Array.from({ length: nNamed - named.length }, (_, i) => named[i % named.length]!),
    ]),
  ];
}

/** The next kill of a target's rounds: when, and the moment it is counted under in the summary. */
export interface PlannedKill {
  at: KillAt;
  moment: string;
}

/**
 * A target's kills over `n` rounds (planMoments), cycling when rounds outnumber the plan. A
 * fraction becomes a delay from `length` when its round comes, so finished runs refine it.
 * `named` defaults to each of `moments` once; a name listed twice is tried twice as often.
 */
export function killPlan(n: number, moments: Record<string, KillAt>, length: RunLength, named = Object.keys(moments)): () => PlannedKill {
  const plan = planMoments(n, named);
  let i = 0;
  return () => {
    const when = plan[i++ % plan.length]!;
    if (typeof when === 'string') return { at: moments[when]!, moment: when };
    return { at: length.delay(when), moment: when >= END_FROM ? 'end' : 'random' };
  };
}
