// A crane data dir's names, learned in the background (crane files are named freely, so each
// one's head is read once, then remembered by file stat across restarts: crane-cache.ts). A
// request waits only until the scan finds its name, or ends.
import fs from 'node:fs/promises';
import type { Logger } from '../../shared/log.js';
import { scanCraneDir, type CraneEntry } from './listing.js';

export function createCraneNames(
  dir: string | undefined, maxSize: number, log: Logger, onRead: () => void, onChange: () => void, cacheDir?: string,
) {
  const found = new Map<string, CraneEntry>();
  const waiters = new Map<string, Array<() => void>>();
  let pending = !!dir;
  let root = '';
  let saved: Promise<void> = Promise.resolve();
  const wake = (name: string) => {
    for (const w of waiters.get(name) ?? []) w();
    waiters.delete(name);
  };
  const ready = dir
    ? (async () => {
        root = await fs.realpath(dir).catch(() => '');
        // The scan reports each name once, with the file that wins it (the last naming it).
        const scan = await scanCraneDir(dir, maxSize, log, onRead, (name, e) => {
          found.set(name, e);
          wake(name);
        }, cacheDir);
        pending = false;
        for (const n of [...waiters.keys()]) wake(n);
        onChange();
        saved = scan.save?.().catch((err: Error) => log.warn({ dir, err: err.message }, 'serve.crane-data: could not write the name cache; the next start reads every file')) ?? saved;
      })().catch((err) => {
        pending = false;
        for (const n of [...waiters.keys()]) wake(n); // nobody waits for a scan that has ended
        log.error({ dir, err: String(err) }, 'serve.crane-data: scan failed');
      })
    : Promise.resolve();
  return {
    ready,
    /** The scan and the name cache's write are over (close waits for both). */
    done: () => ready.then(() => saved),
    pending: () => pending,
    root: () => root,
    get: (name: string) => found.get(name),
    /** While the scan runs, any name may still turn up. */
    has: (name: string) => found.has(name) || pending,
    names: () => [...found.keys()],
    find: async (name: string) => {
      if (!found.has(name) && pending) await new Promise<void>((resolve) => waiters.set(name, [...(waiters.get(name) ?? []), resolve]));
      return found.get(name);
    },
  };
}
