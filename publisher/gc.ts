// `derrick gc`: delete expired masters, then store objects that no master and no repo state names.
// Unreferenced objects younger than `grace` stay: a pull-through fill (or a manifest it fetched)
// is in the store before the publish that names it, and gc must not take it in between.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../shared/config.js';
import { layout as makeLayout, MASTER_NAME_RE, repoNameFromKey } from '../shared/layout.js';
import { readMasterRedirect } from '../shared/publish/current.js';
import { readdirOrEmpty } from '../shared/publish/fsutil.js';
import { acquireLock, acquireStoreExclusive, type Lock } from '../shared/publish/lock.js';
import { RepoStateSchema } from '../shared/publish/repo-state.js';
import { findDebris, planRetention, removeAll, removeMasters } from '../shared/publish/retention.js';
import { openStore } from '../shared/publish/store.js';

export interface GcResult {
  masters: string[];
  blobs: Array<{ digest: string; size: number }>;
  /** Unreferenced store objects left alone because they are younger than `grace`. */
  young: number;
}

export async function runGc(config: Config, opts: { dryRun?: boolean; waitMs?: number; now?: Date }): Promise<GcResult> {
  const l = makeLayout(config.root);
  const store = await openStore(l);
  const locks: Lock[] = [await acquireStoreExclusive(l.storeLock, opts.waitMs ?? 0)];
  try {
    const repoKeys = await readdirOrEmpty(l.masterRoot);
    for (const key of repoKeys.sort()) locks.push(await acquireLock(l.repoLock(repoNameFromKey(key)), `repo ${repoNameFromKey(key)}`, opts.waitMs ?? 0));
    const result: GcResult = { masters: [], blobs: [], young: 0 };
    const now = (opts.now ?? new Date()).getTime();
    const referenced = new Set<string>();
    for (const key of repoKeys) {
      const name = repoNameFromKey(key);
      // A gc killed while deleting a master leaves it under its removal temp name, and a killed
      // publish its half-built master: swept here with the repo lock held, as publish does.
      if (!opts.dryRun) await removeAll(await findDebris(l, name));
      const plan = await planRetention(l, name, config.keep, config.grace, opts.now ?? new Date());
      const doomed = new Set(plan.remove.map((r) => r.master));
      for (const m of (await readdirOrEmpty(l.masterDir(name))).filter((n) => MASTER_NAME_RE.test(n))) {
        if (doomed.has(m)) {
          result.masters.push(path.join(l.masterDir(name), m));
          continue;
        }
        const file = await readMasterRedirect(l, name, m);
        if (!file?.derrick) throw new Error(`${l.master(name, m)}: unreadable redirect file; refusing to gc while a master's contents are unknown`);
        for (const d of [...Object.keys(file.derrick.manifests), ...Object.keys(file.derrick.blobs)]) referenced.add(d);
      }
    }
    // Synced-but-unpublished content (e.g. before a --no-fetch publish) stays too.
    for (const f of await readdirOrEmpty(l.repoStateDir)) {
      if (!f.endsWith('.json')) continue;
      const parsed = RepoStateSchema.safeParse(JSON.parse(await fs.readFile(path.join(l.repoStateDir, f), 'utf8')));
      if (!parsed.success) throw new Error(`${path.join(l.repoStateDir, f)}: corrupt repo state; refusing to gc`);
      for (const d of [...Object.keys(parsed.data.manifests), ...Object.keys(parsed.data.blobs)]) referenced.add(d);
    }
    for (const hex of await readdirOrEmpty(l.storeBlobsDir)) {
      if (!/^[a-f0-9]{64}$/.test(hex)) continue;
      const digest = `sha256:${hex}`;
      if (referenced.has(digest)) continue;
      const st = await fs.stat(l.storeBlob(digest));
      if (now - st.mtimeMs < config.grace) {
        result.young++;
        continue;
      }
      result.blobs.push({ digest, size: st.size });
    }
    if (!opts.dryRun) {
      await removeMasters(result.masters);
      for (const b of result.blobs) await store.remove(b.digest);
      await store.cleanDebris();
      await store.sync();
    }
    return result;
  } finally {
    for (const lock of locks.reverse()) await lock.release();
  }
}
