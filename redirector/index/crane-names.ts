// A crane data dir's names, learned in the background (crane files are named freely, so each
// one's head is read once). A request waits only until the scan finds its name, or ends.
import fs from 'node:fs/promises';
import type { Logger } from '../../shared/log.js';
import { scanCraneDir, type CraneEntry } from './listing.js';

export function createCraneNames(dir: string | undefined, maxSize: number, log: Logger, onRead: () => void, onChange: () => void) {
  const found = new Map<string, CraneEntry>();
  const waiters = new Map<string, Array<() => void>>();
  let pending = !!dir;
  let root = '';
  const wake = (name: string) => {
    for (const w of waiters.get(name) ?? []) w();
    waiters.delete(name);
  };
  const ready = dir
    ? (async () => {
        root = await fs.realpath(dir).catch(() => '');
        const all = await scanCraneDir(dir, maxSize, log, onRead, (name, e) => {
          found.set(name, e);
          wake(name);
        });
        // The scan's own order, deterministic, has the last word (the last file naming a repo wins).
        found.clear();
        for (const [n, e] of all) found.set(n, e);
        pending = false;
        for (const n of [...waiters.keys()]) wake(n);
        onChange();
      })().catch((err) => {
        pending = false;
        for (const n of [...waiters.keys()]) wake(n); // nobody waits for a scan that has ended
        log.error({ dir, err: String(err) }, 'serve.crane-data: scan failed');
      })
    : Promise.resolve();
  return {
    ready,
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
