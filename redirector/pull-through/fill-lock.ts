// Single flight ACROSS processes (serve --workers N): before a worker fetches a digest from an
// upstream it takes a lock file for that digest in the locks dir (shared/publish/lock.ts: created
// atomically, holding the pid, broken at once when its owner died). A worker that finds the lock
// taken waits for it to go and then finds the object in the store, so whichever worker the
// clients reach, the upstream sees one GET per digest. Within one worker the fill registry and
// `once` already join concurrent requests; this lock is taken once per fill per worker.
//
// Why a lock in the store rather than a fill owner in the primary: the store is already the
// shared state every worker reads, a dead owner is detected from its pid without a coordinator,
// and single-process serve (and a second serve on the same root) get the same guarantee.
import path from 'node:path';
import type { Layout } from '../../shared/layout.js';
import { digestHex } from '../../shared/oci.js';
import { exists, isPidAlive } from '../../shared/publish/fsutil.js';
import { acquireLock, LockBusyError, type Lock } from '../../shared/publish/lock.js';

/** Another process's fill of this digest did not finish in time. */
export class FillWaitTimeout extends Error {
  constructor(
    readonly digest: string,
    readonly holder: number | undefined,
  ) {
    super(`another derrick process${holder ? ` (pid ${holder})` : ''} is still fetching ${digest}`);
    this.name = 'FillWaitTimeout';
  }
}

export interface FillLocks {
  /**
   * The lock for fetching `digest`, or undefined once the object is in the store (another process
   * fetched it while we waited, or before we asked). The caller releases the lock when its fill
   * is stored or has failed. `scope` (a repo key) makes the lock that repo's only: a manifest
   * fetched from this repo's upstream proves the digest for this repo alone (invariant 9).
   */
  claim(digest: string, inStore: () => Promise<boolean>, waitMs: number, scope?: string): Promise<Lock | undefined>;
}

const POLL_MS = 50;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function createFillLocks(l: Layout): FillLocks {
  const file = (digest: string, scope?: string) => path.join(l.locksDir, `fill-${scope ? `${scope}@` : ''}${digestHex(digest)}.lock`);
  return {
    async claim(digest, inStore, waitMs, scope) {
      const f = file(digest, scope);
      const deadline = Date.now() + waitMs;
      for (;;) {
        let holder: number | undefined;
        try {
          const lock = await acquireLock(f, `the fill of ${digest}`, 0);
          let stored: boolean;
          try {
            stored = await inStore();
          } catch (err) {
            // A store check that fails (a digest the store refuses, a disk error) must not leave
            // the lock held: nobody would release it before this process exits.
            await lock.release();
            throw err;
          }
          // Stored between the caller's check and the lock: nothing to fetch.
          if (!stored) return lock;
          await lock.release();
          return undefined;
        } catch (err) {
          if (!(err instanceof LockBusyError)) throw err;
          holder = err.pid;
        }
        // Held by a live process: wait for it to release (stored, or failed: then we fetch).
        while (await exists(f)) {
          if (Date.now() >= deadline) throw new FillWaitTimeout(digest, holder);
          await sleep(POLL_MS);
          // A holder that died leaves its lock: acquireLock breaks it on the next round.
          if (holder !== undefined && !isPidAlive(holder)) break;
        }
        if (await inStore()) return undefined;
      }
    },
  };
}
