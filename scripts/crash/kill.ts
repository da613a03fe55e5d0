// One run of a derrick command that is SIGKILLed at a chosen instant: after a delay, or at the
// moment an entry appears or changes in a directory (an inotify event names it: a renamed symlink,
// a new master, a removed store object). The run may also finish first.
import { watch, type FSWatcher } from 'node:fs';
import { startChild, type Child } from '../soak/children.js';

/** A delay in ms from the start, or the first event in `dir` whose name passes `match`. */
export type KillAt = { delayMs: number } | { dir: string; match: (name: string) => boolean };

export interface KilledRun {
  killed: boolean;
  code: number | null;
  ms: number;
  output: string;
}

/** SIGKILLs `child` at `at`; resolves when it has exited. */
export async function killAt(child: Child, at: KillAt): Promise<KilledRun> {
  const started = Date.now();
  const kill = () => {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already exited
    }
  };
  let watcher: FSWatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  if ('delayMs' in at) timer = setTimeout(kill, at.delayMs);
  else {
    try {
      watcher = watch(at.dir, (_e, name) => typeof name === 'string' && at.match(name) && kill());
    } catch {
      // The directory does not exist yet (a first run): the run goes unkilled.
    }
  }
  const { code, signal } = await child.exited;
  clearTimeout(timer);
  watcher?.close();
  return { killed: signal === 'SIGKILL', code, ms: Date.now() - started, output: child.output() };
}

/** Starts `node <cli> ...args` and kills it at `at`. */
export function runKilled(cli: string, args: string[], at: KillAt): Promise<KilledRun> {
  return killAt(startChild(process.execPath, [cli, ...args]), at);
}

/**
 * Kill delays as fractions of a run's expected length: uniform over [0, 1.1], with a share packed
 * around the end, where the swaps are. Runs that finish refine the expected length.
 */
export class RunLength {
  constructor(private estimateMs: number) {}
  delay(fraction: number): { delayMs: number } {
    return { delayMs: fraction * this.estimateMs };
  }
  finished(ms: number): void {
    this.estimateMs = (this.estimateMs + ms) / 2;
  }
  /**
   * A run killed after `ms` had not reached its first visible step: it is longer than thought
   * (a machine that got busier since the estimate). Without this, every kill can land before any
   * swap and the rounds test nothing but the start.
   */
  notReachedBy(ms: number): void {
    if (ms > this.estimateMs * 0.5) this.estimateMs = Math.max(this.estimateMs, ms * 1.25);
  }
  get ms(): number {
    return Math.round(this.estimateMs);
  }
}
