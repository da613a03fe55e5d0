// `derrick serve --workers N`: the primary process. It forks N workers (each a full `derrick serve`
// with its own index watching the app dir), which all listen on the same port through node:cluster.
// The primary answers no request itself: it forwards SIGTERM/SIGINT (drain) and SIGHUP (TLS
// reload), restarts a worker that dies unexpectedly (with a backoff, so a crash loop doesn't spin),
// and exits with a worker's code when the cluster cannot start at all (port taken, bad config).
import cluster, { type Worker } from 'node:cluster';
import os from 'node:os';
import type { Logger } from '../shared/log.js';
import { withNodeFlags } from '../shared/node-flags.js';

/** The message a worker sends once its server answers. */
export interface WorkerListening {
  derrick: 'listening';
  url: string;
  repos: number;
}

export function isWorkerListening(m: unknown): m is WorkerListening {
  return typeof m === 'object' && m !== null && (m as WorkerListening).derrick === 'listening';
}

/** `auto` is the CPUs this process may use (os.availableParallelism); a number is taken as is. */
export function resolveWorkers(v: number | 'auto'): number {
  return v === 'auto' ? Math.max(1, os.availableParallelism()) : v;
}

export interface PrimaryOptions {
  workers: number;
  log: Logger;
  /** Forward SIGHUP (a worker without serve.tls has no SIGHUP handler and would die of it). */
  forwardHup: boolean;
  /** Printed once every worker answers. */
  onListening(url: string, repos: number): void;
  /** First restart delay; doubles per crash in a row, up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

/** A worker that lived this long before dying resets the backoff: it was not a crash loop. */
const STABLE_MS = 30_000;
/** Workers that have not drained by then are killed (each has its own 10 s limit first). */
const DRAIN_LIMIT_MS = 15_000;

/** Runs until SIGTERM/SIGINT has drained every worker; resolves with the exit code. */
export function runPrimary(o: PrimaryOptions): Promise<number> {
  const backoff = o.backoffMs ?? 250;
  const maxBackoff = o.maxBackoffMs ?? 30_000;
  const bornAt = new Map<Worker, number>();
  let everyoneUp = false;
  let stopping = false;
  let crashesInARow = 0;
  let restartTimer: NodeJS.Timeout | undefined;
  const pendingRestarts: number[] = [];

  // Workers re-run this same command line; cluster.isWorker makes them serve instead of fork.
  // They run with derrick's node flags even when the primary was started without them.
  cluster.setupPrimary({ exec: process.argv[1], args: process.argv.slice(2), execArgv: withNodeFlags(process.execArgv) });

  return new Promise<number>((resolve) => {
    let listening = 0;
    const fork = () => {
      const w = cluster.fork({ DERRICK_WORKER: '1' });
      bornAt.set(w, Date.now());
      w.on('message', (m: unknown) => {
        if (!isWorkerListening(m) || everyoneUp) return;
        if (++listening === o.workers) {
          everyoneUp = true;
          o.onListening(m.url, m.repos);
        }
      });
      return w;
    };

    const alive = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());

    const stop = (sig: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      clearTimeout(restartTimer);
      o.log.info({ sig, workers: alive().length }, 'draining workers');
      drainAll();
      if (alive().length === 0) finish(0);
    };
    /** SIGTERM to every worker, and SIGKILL to any still up after the drain limit. */
    const drainAll = () => {
      for (const w of alive()) w.process.kill('SIGTERM');
      const force = setTimeout(() => {
        for (const w of alive()) w.process.kill('SIGKILL');
      }, DRAIN_LIMIT_MS);
      force.unref();
    };
    let code = 0;
    const finish = (c: number) => {
      process.off('SIGTERM', onTerm).off('SIGINT', onInt).off('SIGHUP', onHup);
      resolve(c);
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    const onHup = () => {
      if (!o.forwardHup) return o.log.warn('SIGHUP: nothing to reload (serve.tls is not set)');
      for (const w of alive()) w.process.kill('SIGHUP');
    };
    process.on('SIGTERM', onTerm).on('SIGINT', onInt).on('SIGHUP', onHup);

    const restartLater = () => {
      const delay = Math.min(maxBackoff, backoff * 2 ** Math.max(0, crashesInARow - 1));
      pendingRestarts.push(delay);
      restartTimer ??= setTimeout(() => {
        restartTimer = undefined;
        pendingRestarts.splice(0).forEach(() => fork());
      }, delay);
    };

    cluster.on('exit', (w, exitCode, signal) => {
      const lived = Date.now() - (bornAt.get(w) ?? Date.now());
      bornAt.delete(w);
      if (stopping) {
        // Killed at the drain limit (or by anyone): its connections were cut, so not a clean exit.
        if (exitCode || signal) code ||= exitCode || 1;
        if (alive().length === 0) finish(code);
        return;
      }
      if (!everyoneUp && signal === null) {
        // A worker that could not start (the port is taken, the config is wrong) has said why on
        // stderr; the others would fail the same way. Stop them all and exit with its code.
        code = exitCode || 1;
        o.log.error({ worker: w.process.pid, code: exitCode }, 'a worker failed to start; stopping');
        stopping = true;
        drainAll();
        if (alive().length === 0) finish(code);
        return;
      }
      crashesInARow = lived >= STABLE_MS ? 1 : crashesInARow + 1;
      o.log.error(
        { worker: w.process.pid, code: exitCode, signal, livedMs: lived, restartInMs: Math.min(maxBackoff, backoff * 2 ** (crashesInARow - 1)) },
        'worker died unexpectedly; restarting it',
      );
      restartLater();
    });

    for (let i = 0; i < o.workers; i++) fork();
  });
}
