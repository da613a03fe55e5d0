// Checkers for the published tree and the store: the invariants of design.md, asserted on disk.
//
//   checkTree(root, repo)      invariants 1-3: web/app symlinks, complete masters, every digest
//                              the redirect file names present under its master and hashing to itself
//   checkStore(root)           invariant 4: every non-temp store object hashes to its name
//   assertNoDebris(root)       no temp names under published/ or the store, no lock files
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import { MASTER_NAME_RE, TMP_PREFIX, layout } from '../../shared/layout.js';
import { storeProblems, treeProblems, type CheckTreeOptions, type TreeState } from '../../scripts/crash/check.js';
import { CLI } from './derrick.js';
import { startProcess, type RunningProcess, type StartOptions } from './proc.js';
import { listTree } from './walk.js';

export { hashFile, type CheckTreeOptions, type TreeState } from '../../scripts/crash/check.js';

/**
 * Asserts design.md invariants 1-3 for one repo (scripts/crash/check.ts has the checks, shared
 * with `npm run crash`): web/<key> and app/<key>.json both point at complete masters, the same
 * one, or web at the newer and app at an older one (never app newer); every digest the redirect
 * file names exists under its master with its size and hashes to its digest; tags/list matches.
 */
export async function checkTree(root: string, repo: string, opts: CheckTreeOptions = {}): Promise<TreeState> {
  const r = await treeProblems(root, repo, opts);
  expect(r.problems, `${repo}: tree invariants`).toEqual([]);
  return r.state!;
}

/** Invariant 4: every non-temp object in store/blobs/sha256 hashes to its name; returns the names. */
export async function checkStore(root: string, opts: { fresh?: boolean } = {}): Promise<string[]> {
  const r = await storeProblems(root, opts);
  expect(r.problems, 'store objects that do not hash to their names').toEqual([]);
  return r.names;
}

const walk = async (dir: string): Promise<string[]> => (await listTree(dir)).map((x) => x.path);

/** No temp names anywhere under published/ or store/blobs/sha256, and no lock files left. */
export async function assertNoDebris(root: string): Promise<void> {
  const l = layout(root);
  const all = [...(await walk(l.publishedDir)), ...(await walk(l.storeBlobsDir))];
  const debris = all.filter((p) => path.basename(p).startsWith(TMP_PREFIX));
  expect(debris, 'temp files left behind').toEqual([]);
  const locks = await walk(l.locksDir);
  // Repo locks, the store lock, shared-holder registrations, break guards, lock temps: none may stay.
  expect(locks.map((p) => path.relative(l.root, p)), 'lock files left behind').toEqual([]);
}

/** The names in store/blobs/sha256 (temp files excluded), sorted. */
export async function storeListing(root: string): Promise<string[]> {
  const dir = layout(root).storeBlobsDir;
  return (await fs.readdir(dir).catch(() => [] as string[])).filter((n) => !n.startsWith(TMP_PREFIX)).sort();
}

/** The complete master directories of a repo, sorted oldest first. */
export async function masters(root: string, repo: string): Promise<string[]> {
  return (await fs.readdir(layout(root).masterDir(repo)).catch(() => [] as string[])).filter((n) => MASTER_NAME_RE.test(n)).sort();
}

// ---------------------------------------------------------------------------------------------
// The real CLI as a child process that a test can kill (test/helpers/derrick.ts runs it to completion).

/** Starts `node dist/cli.js <args>` (build first: npm run build). */
export function startDerrick(args: string[], opts: StartOptions = {}): RunningProcess {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before these tests`);
  return startProcess(process.execPath, [CLI, ...args], opts);
}
