// Checkers for the published tree and the store: the invariants of design.md, asserted on disk.
//
//   checkTree(root, repo)      invariants 1-3: web/app symlinks, complete masters, every digest
//                              the redirect file names present under its master and hashing to itself
//   checkStore(root)           invariant 4: every non-temp store object hashes to its name
//   assertNoDebris(root)       no temp names under published/ or the store, no lock files
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { expect } from 'vitest';
import {
  MASTER_NAME_RE, REDIRECT_FILE_NAME, TAGS_LIST_REL_PATH, TMP_PREFIX,
  blobRelPath, layout, manifestRelPath, repoKey,
} from '../../shared/layout.js';
import { parseRedirectFile, type RedirectFile } from '../../shared/redirect-file.js';
import { CLI } from './derrick.js';
import { startProcess, type RunningProcess, type StartOptions } from './proc.js';
import { listTree } from './walk.js';

/**
 * sha256 of a file. Store objects are immutable and published files are hardlinks to them, so a
 * result is cached per inode, size and mtime (ns): rewriting bytes in place changes the mtime, so
 * a corrupted object is always re-hashed. Pass fresh=true to bypass the cache.
 */
const hashCache = new Map<string, string>();
export async function hashFile(file: string, fresh = false): Promise<string> {
  const st = await fs.stat(file, { bigint: true });
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
  const cached = fresh ? undefined : hashCache.get(key);
  if (cached) return cached;
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  const digest = 'sha256:' + h.digest('hex');
  hashCache.set(key, digest);
  return digest;
}

export interface TreeState {
  /** Master web/<key> points at. */
  web: string;
  /** Master app/<key>.json points at. */
  app: string;
  /** The redirect file app/<key>.json resolves to (what the redirector serves). */
  file: RedirectFile;
  /** The redirect file of the web master (the same as `file` unless a swap was interrupted). */
  webFile: RedirectFile;
}

export interface CheckTreeOptions {
  /**
   * The state before the run that may have been interrupted. With it, the transition is checked
   * too: web stays or moves forward; if web stayed, app is where it was or caught up with web;
   * if web moved, app is at web or at the previous web (never further behind, never ahead).
   */
  previous?: { web: string; app: string };
  /** Skip re-hashing (for very hot loops); existence and sizes are still checked. */
  noHash?: boolean;
}

const webTargetRe = (key: string) => new RegExp(`^\\.\\./master/${escapeRe(key)}/([^/]+)$`);
const appTargetRe = (key: string) => new RegExp(`^\\.\\./master/${escapeRe(key)}/([^/]+)/${escapeRe(REDIRECT_FILE_NAME)}$`);
function escapeRe(s: string) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Checks one complete master; returns its parsed redirect file. */
async function checkMaster(root: string, repo: string, master: string, opts: CheckTreeOptions): Promise<RedirectFile> {
  const l = layout(root);
  const dir = l.master(repo, master);
  const where = `${repo} master ${master}`;
  const st = await fs.lstat(dir).catch(() => undefined);
  expect(st?.isDirectory(), `${where}: directory exists`).toBe(true);
  const text = await fs.readFile(path.join(dir, REDIRECT_FILE_NAME), 'utf8');
  const parsed = parseRedirectFile(text);
  expect(parsed.version, `${where}: redirect file is v4`).toBe(4);
  const file = parsed as RedirectFile;
  const d = file.derrick;
  expect(d, `${where}: redirect file has derrick data`).toBeDefined();
  if (!d) throw new Error('unreachable');
  expect(d.master, `${where}: redirect file names its own master`).toBe(master);
  expect(file['repo-registry-id']).toBe(repo);
  expect(file.repository).toBe(repoKey(repo));
  expect(file.url.endsWith(l.masterUrlPath(repo, master)), `${where}: url ${file.url}`).toBe(true);

  const check = async (rel: string, digest: string, size: number) => {
    const p = path.join(dir, rel);
    const fst = await fs.stat(p).catch(() => undefined);
    expect(fst?.isFile(), `${where}: ${rel} exists`).toBe(true);
    expect(fst!.size, `${where}: ${rel} size`).toBe(size);
    if (!opts.noHash) expect(await hashFile(p), `${where}: ${rel} hashes to its digest`).toBe(digest);
  };
  const jobs: Array<() => Promise<void>> = [];
  for (const [digest, m] of Object.entries(d.manifests)) jobs.push(() => check(manifestRelPath(m.mediaType, digest), digest, m.size));
  for (const [digest, size] of Object.entries(d.blobs)) jobs.push(() => check(blobRelPath(digest), digest, size));
  // crane's tag paths: manifests/<dir>/<tag> has the bytes of the tagged manifest.
  for (const [tag, digest] of Object.entries(d.tags)) {
    const m = d.manifests[digest]!;
    jobs.push(() => check(manifestRelPath(m.mediaType, tag), digest, m.size));
  }
  for (let i = 0; i < jobs.length; i += 8) await Promise.all(jobs.slice(i, i + 8).map((j) => j()));

  const tagsList = JSON.parse(await fs.readFile(path.join(dir, TAGS_LIST_REL_PATH), 'utf8')) as { name: string; tags: string[] };
  expect(tagsList.name).toBe(repo);
  expect(tagsList.tags, `${where}: tags/list matches derrick.tags`).toEqual(Object.keys(d.tags).sort());
  // An index's children are in the file; the schema already refuses a dangling one.
  for (const m of Object.values(d.manifests)) for (const c of m.children ?? []) expect(d.manifests[c.digest]).toBeDefined();
  return file;
}

/**
 * Asserts design.md invariants 1-3 for one repo: web/<key> and app/<key>.json both point at
 * complete masters, the same one, or web at the newer and app at an older one (never app newer);
 * every digest the redirect file names (derrick.manifests, derrick.blobs, tags) exists under its
 * master with its size and hashes to its digest; tags/list matches derrick.tags.
 */
export async function checkTree(root: string, repo: string, opts: CheckTreeOptions = {}): Promise<TreeState> {
  const l = layout(root);
  const key = repoKey(repo);
  const webTarget = await fs.readlink(l.web(repo)).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`${repo}: web symlink ${l.web(repo)}: ${e.code}`);
  });
  const appTarget = await fs.readlink(l.app(repo)).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`${repo}: app symlink ${l.app(repo)}: ${e.code}`);
  });
  const web = webTargetRe(key).exec(webTarget)?.[1];
  const app = appTargetRe(key).exec(appTarget)?.[1];
  expect(web, `${repo}: web target ${webTarget}`).toMatch(MASTER_NAME_RE);
  expect(app, `${repo}: app target ${appTarget}`).toMatch(MASTER_NAME_RE);
  // Through the symlinks themselves, as nginx and the redirector follow them.
  expect((await fs.stat(l.web(repo))).isDirectory(), `${repo}: web resolves to a directory`).toBe(true);
  expect((await fs.stat(l.app(repo))).isFile(), `${repo}: app resolves to a file`).toBe(true);

  expect(app! <= web!, `${repo}: app (${app}) must never be newer than web (${web})`).toBe(true);
  if (app !== web) {
    // The previous publish: an existing, complete master older than web.
    const masters = (await fs.readdir(l.masterDir(repo))).filter((n) => MASTER_NAME_RE.test(n)).sort();
    expect(masters).toContain(app);
    expect(masters.indexOf(app!)).toBeLessThan(masters.indexOf(web!));
  }
  if (opts.previous) {
    const p = opts.previous;
    expect(web! >= p.web, `${repo}: web went back from ${p.web} to ${web}`).toBe(true);
    if (web === p.web) expect([p.app, p.web], `${repo}: app moved to ${app} while web stayed at ${web}`).toContain(app);
    else expect([p.web, web], `${repo}: web moved ${p.web} -> ${web} but app is at ${app} (previous app ${p.app})`).toContain(app);
  }
  const webFile = await checkMaster(root, repo, web!, opts);
  const file = app === web ? webFile : await checkMaster(root, repo, app!, opts);
  // The file app points at is byte for byte the master's own (a symlink, not a copy).
  expect(await fs.readFile(l.app(repo), 'utf8')).toBe(await fs.readFile(path.join(l.master(repo, app!), REDIRECT_FILE_NAME), 'utf8'));
  return { web: web!, app: app!, file, webFile };
}

/** Invariant 4: every non-temp object in store/blobs/sha256 hashes to its name; returns the names. */
export async function checkStore(root: string, opts: { fresh?: boolean } = {}): Promise<string[]> {
  const dir = layout(root).storeBlobsDir;
  const names = (await fs.readdir(dir)).filter((n) => !n.startsWith(TMP_PREFIX));
  const bad: string[] = [];
  for (let i = 0; i < names.length; i += 8) {
    await Promise.all(
      names.slice(i, i + 8).map(async (n) => {
        if (!/^[a-f0-9]{64}$/.test(n)) return void bad.push(`${n}: not a sha256 hex name`);
        const actual = await hashFile(path.join(dir, n), opts.fresh);
        if (actual !== `sha256:${n}`) bad.push(`${n}: hashes to ${actual}`);
      }),
    );
  }
  expect(bad, 'store objects that do not hash to their names').toEqual([]);
  return names;
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
