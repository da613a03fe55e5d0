// The three kinds of rsync a push makes to an edge. Each is safe to kill at any instant:
//  - sendMaster writes into master/<key>/<ts>.d, a name nothing serves or checks (verify and the
//    redirector only know <ts>); a killed transfer is finished by the next one (--delete drops
//    its leftovers) or removed as an orphan.
//  - sendLinks replaces symlinks. rsync makes each at a temp name (.<name>.<random>) and renames
//    it over the old one, so a reader sees the old link or the new one, never neither. One rsync
//    per kind (master links, then web, then app) keeps web ahead of app for every repo.
//  - removeEntries deletes by rsync --delete from an empty tree, filtered to exactly the named
//    entries; a master's symlink goes in an earlier call than its directory.
import fs from 'node:fs/promises';
import path from 'node:path';
import { rsync } from './rsync.js';
import type { Transport } from './transport.js';

/** Sends one local master to <edge>/published/master/<key>/<dir>/; returns the bytes sent. */
export async function sendMaster(
  t: Transport, what: string, localMaster: string, key: string, dir: string, linkDests: string[],
): Promise<number> {
  // rsync takes at most 20 --link-dest directories; newest first, since they share the most.
  const links = linkDests.slice(0, 20).map((d) => `--link-dest=../${d}`);
  const r = await rsync(
    ['-aH', '--delete', '--fsync', '--mkpath', '--stats', ...links, ...t.args, `${localMaster}/`, `${t.root}/published/master/${key}/${dir}/`],
    { what },
  );
  return r.bytesSent;
}

/**
 * Makes published/master/<key>/ for these repo keys, in one rsync, before the masters go out in
 * parallel. Each sendMaster's --mkpath would otherwise create the shared parents at once, and
 * rsync's make_path fails with EEXIST when another transfer made a parent between its two mkdirs.
 */
export async function makeRepoDirs(t: Transport, what: string, stage: string, keys: string[]): Promise<void> {
  if (keys.length === 0) return;
  const dir = path.join(stage, 'repo-dirs');
  await fs.rm(dir, { recursive: true, force: true });
  for (const key of keys) await fs.mkdir(path.join(dir, 'master', key), { recursive: true });
  // -r only: directories, no attributes onto ones the edge already has; nothing is deleted.
  await rsync(['-r', '--mkpath', ...t.args, `${dir}/`, `${t.root}/published/`], { what });
}

/** Replaces symlinks under one directory of published/ (relative name -> target); returns bytes sent. */
export async function sendLinks(t: Transport, what: string, stage: string, sub: string, links: Map<string, string>): Promise<number> {
  if (links.size === 0) return 0;
  // The transfer is rooted at published/, not at published/<sub>/: an rsync daemon without chroot
  // sanitizes every symlink it receives, cutting a "../" that climbs above the transfer's root.
  const dir = path.join(stage, `links-${sub}`);
  await fs.rm(dir, { recursive: true, force: true });
  for (const [rel, target] of links) {
    await fs.mkdir(path.dirname(path.join(dir, sub, rel)), { recursive: true });
    await fs.symlink(target, path.join(dir, sub, rel));
  }
  // -r -l only: links as links, and no attributes of the local directories onto the edge's.
  const r = await rsync(['-rl', '--mkpath', '--stats', ...t.args, `${dir}/`, `${t.root}/published/`], { what });
  return r.bytesSent;
}

/** Deletes these paths (relative to published/, files, links or whole directories) from the edge. */
export async function removeEntries(t: Transport, what: string, stage: string, label: string, rels: string[]): Promise<void> {
  if (rels.length === 0) return;
  const empty = path.join(stage, `empty-${label}`);
  await fs.rm(empty, { recursive: true, force: true });
  const rules = new Set<string>();
  for (const rel of rels) {
    const parts = rel.split('/');
    // Every parent must exist in the empty tree and be included, or rsync would delete it whole.
    for (let i = 1; i < parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      await fs.mkdir(path.join(empty, p), { recursive: true });
      rules.add(`+ /${p}/`);
    }
  }
  for (const rel of rels) {
    rules.add(`+ /${rel}`);
    rules.add(`+ /${rel}/***`);
  }
  rules.add('- *');
  const filter = path.join(stage, `filter-${label}`);
  await fs.writeFile(filter, [...rules].join('\n') + '\n');
  await fs.mkdir(empty, { recursive: true });
  await rsync(['-r', '--delete', `--filter=merge ${filter}`, ...t.args, `${empty}/`, `${t.root}/published/`], { what });
}
