// The invariants of design.md checked on disk, as lists of problems (empty = sound). One
// implementation for the crash loop (`npm run crash`) and the tests (test/helpers/tree.ts wraps
// these in assertions):
//
//   treeProblems(root, repo)   invariants 1-3: web/app symlinks, complete masters, every digest the
//                              redirect file names present under its master and hashing to itself,
//                              and (with `previous`) the transition from the state before a run
//   storeProblems(root)        invariant 4: every non-temp store object hashes to its name
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  MASTER_NAME_RE, REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME, TAGS_LIST_REL_PATH, TMP_PREFIX,
  blobRelPath, layout, manifestRelPath, repoKey,
} from '../../shared/layout.js';
import { parseRedirectFile, type RedirectFile } from '../../shared/redirect-file.js';
import { decodeRedirectIndex, encodeRedirectIndex, indexTags } from '../../shared/redirect-index.js';
import { wordsToSha256 } from '../../shared/digest-words.js';

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

export interface TreeCheck {
  /** Undefined when the links or a master could not be read at all. */
  state?: TreeState;
  problems: string[];
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const webTargetRe = (key: string) => new RegExp(`^\\.\\./master/${escapeRe(key)}/([^/]+)$`);
const appTargetRe = (key: string) => new RegExp(`^\\.\\./master/${escapeRe(key)}/([^/]+)/${escapeRe(REDIRECT_FILE_NAME)}$`);
const code = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;

/** What a master's redirect.idx says differently from its redirect.json, or undefined. */
function indexDisagreement(index: Buffer, json: Buffer, file: RedirectFile): string | undefined {
  let x;
  try {
    x = decodeRedirectIndex(index, json);
  } catch (e) {
    return (e as Error).message;
  }
  const d = file.derrick!;
  const manifests = Object.keys(d.manifests);
  const said = {
    name: x.name, protected: x.protected, url: x.url, master: x.master, children: x.children, referrers: x.referrers,
    manifests: manifests.map((_, i) => [wordsToSha256(x.manifestWords, i * 8), x.manifestTypes[i], x.manifestSizes[i]]),
    blobs: Object.keys(d.blobs).map((_, i) => wordsToSha256(x.blobWords, i * 8)),
    tags: indexTags(x).map(([t, i]) => [t, manifests[i]]),
  };
  const children = Object.fromEntries(Object.entries(d.manifests).filter(([, m]) => m.children).map(([dg, m]) => [dg, m.children]));
  const want = {
    name: file['repo-registry-id'], protected: file.protected, url: file.url, master: d.master, children, referrers: d.referrers,
    manifests: Object.entries(d.manifests).map(([dg, m]) => [dg, m.mediaType, m.size]),
    blobs: Object.keys(d.blobs),
    tags: Object.entries(d.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  };
  for (const k of Object.keys(want) as Array<keyof typeof want>) {
    if (!isDeepStrictEqual(said[k], want[k])) return `its ${k} differ from redirect.json's`;
  }
  return undefined;
}

/** Checks one complete master; returns its parsed redirect file (undefined if unreadable). */
async function checkMaster(root: string, repo: string, master: string, opts: CheckTreeOptions, problems: string[]): Promise<RedirectFile | undefined> {
  const l = layout(root);
  const dir = l.master(repo, master);
  const where = `${repo} master ${master}`;
  const bad = (p: string) => void problems.push(`${where}: ${p}`);
  const st = await fs.lstat(dir).catch(() => undefined);
  if (!st?.isDirectory()) return void bad('is not a directory');
  let file: RedirectFile;
  let json: Buffer;
  try {
    json = await fs.readFile(path.join(dir, REDIRECT_FILE_NAME));
    const parsed = parseRedirectFile(json.toString('utf8'));
    if (parsed.version !== 4) return void bad(`redirect file is v${parsed.version}, not v4`);
    file = parsed as RedirectFile;
  } catch (e) {
    return void bad(`redirect file: ${code(e)}`);
  }
  const d = file.derrick;
  if (!d) return void bad('redirect file has no derrick data');
  // Its index (none only for a non-sha256 digest): made from those bytes, saying what they say.
  const index = await fs.readFile(path.join(dir, REDIRECT_INDEX_NAME)).catch(() => undefined);
  if (!index) {
    if (encodeRedirectIndex(file, json)) bad(`${REDIRECT_INDEX_NAME} is missing`);
  } else {
    const why = indexDisagreement(index, json, file);
    if (why) bad(`${REDIRECT_INDEX_NAME}: ${why}`);
  }
  if (d.master !== master) bad(`redirect file names master ${d.master}`);
  if (file['repo-registry-id'] !== repo) bad(`redirect file names repo ${file['repo-registry-id']}`);
  if (file.repository !== repoKey(repo)) bad(`redirect file names repository ${file.repository}`);
  if (!file.url.endsWith(l.masterUrlPath(repo, master))) bad(`url ${file.url}`);

  const check = async (rel: string, digest: string, size: number) => {
    const p = path.join(dir, rel);
    const fst = await fs.stat(p).catch(() => undefined);
    if (!fst?.isFile()) return bad(`${rel} is missing`);
    if (fst.size !== size) return bad(`${rel} has ${fst.size} bytes, not ${size}`);
    if (!opts.noHash) {
      const actual = await hashFile(p);
      if (actual !== digest) bad(`${rel} hashes to ${actual}`);
    }
  };
  const jobs: Array<() => Promise<void>> = [];
  for (const [digest, m] of Object.entries(d.manifests)) jobs.push(() => check(manifestRelPath(m.mediaType, digest), digest, m.size));
  for (const [digest, size] of Object.entries(d.blobs)) jobs.push(() => check(blobRelPath(digest), digest, size));
  // crane's tag paths: manifests/<dir>/<tag> has the bytes of the tagged manifest.
  for (const [tag, digest] of Object.entries(d.tags)) {
    const m = d.manifests[digest];
    if (!m) bad(`tag ${tag} names ${digest}, which is not among its manifests`);
    else jobs.push(() => check(manifestRelPath(m.mediaType, tag), digest, m.size));
  }
  for (let i = 0; i < jobs.length; i += 8) await Promise.all(jobs.slice(i, i + 8).map((j) => j()));

  try {
    const tagsList = JSON.parse(await fs.readFile(path.join(dir, TAGS_LIST_REL_PATH), 'utf8')) as { name: string; tags: string[] };
    if (tagsList.name !== repo) bad(`tags/list names ${tagsList.name}`);
    if (JSON.stringify(tagsList.tags) !== JSON.stringify(Object.keys(d.tags).sort())) bad(`tags/list ${JSON.stringify(tagsList.tags)} does not match derrick.tags`);
  } catch (e) {
    bad(`tags/list: ${code(e)}`);
  }
  // An index's children are in the file; the schema already refuses a dangling one.
  for (const m of Object.values(d.manifests)) for (const c of m.children ?? []) if (!d.manifests[c.digest]) bad(`child ${c.digest} is not among its manifests`);
  return file;
}

/**
 * Design.md invariants 1-3 for one repo: web/<key> and app/<key>.json both point at complete
 * masters, the same one, or web at the newer and app at an older one (never app newer); every
 * digest the redirect file names (derrick.manifests, derrick.blobs, tags) exists under its master
 * with its size and hashes to its digest; tags/list matches derrick.tags.
 */
export async function treeProblems(root: string, repo: string, opts: CheckTreeOptions = {}): Promise<TreeCheck> {
  const l = layout(root);
  const key = repoKey(repo);
  const problems: string[] = [];
  const link = (p: string, what: string) => fs.readlink(p).catch((e: unknown) => void problems.push(`${repo}: ${what} symlink ${p}: ${code(e)}`));
  const webTarget = await link(l.web(repo), 'web');
  const appTarget = await link(l.app(repo), 'app');
  if (webTarget === undefined || appTarget === undefined) return { problems };
  const web = webTargetRe(key).exec(webTarget)?.[1];
  const app = appTargetRe(key).exec(appTarget)?.[1];
  if (!web || !MASTER_NAME_RE.test(web)) problems.push(`${repo}: web target ${webTarget} is not a master`);
  if (!app || !MASTER_NAME_RE.test(app)) problems.push(`${repo}: app target ${appTarget} is not a master's redirect file`);
  if (!web || !app || problems.length) return { problems };
  // Through the symlinks themselves, as nginx and the redirector follow them.
  if (!(await fs.stat(l.web(repo)).catch(() => undefined))?.isDirectory()) problems.push(`${repo}: web does not resolve to a directory`);
  if (!(await fs.stat(l.app(repo)).catch(() => undefined))?.isFile()) problems.push(`${repo}: app does not resolve to a file`);

  if (app > web) problems.push(`${repo}: app (${app}) must never be newer than web (${web})`);
  if (app !== web) {
    // The previous publish: an existing, complete master older than web.
    const masters = (await fs.readdir(l.masterDir(repo)).catch(() => [] as string[])).filter((n) => MASTER_NAME_RE.test(n)).sort();
    if (!masters.includes(app)) problems.push(`${repo}: app's master ${app} is not among the masters`);
  }
  const p = opts.previous;
  if (p) {
    if (web < p.web) problems.push(`${repo}: web went back from ${p.web} to ${web}`);
    else if (web === p.web && app !== p.app && app !== p.web) problems.push(`${repo}: app moved to ${app} while web stayed at ${web}`);
    else if (web !== p.web && app !== p.web && app !== web) problems.push(`${repo}: web moved ${p.web} -> ${web} but app is at ${app} (previous app ${p.app})`);
  }
  const webFile = await checkMaster(root, repo, web, opts, problems);
  const file = app === web ? webFile : await checkMaster(root, repo, app, opts, problems);
  // The file app points at is byte for byte the master's own (a symlink, not a copy).
  const served = await fs.readFile(l.app(repo), 'utf8').catch(() => undefined);
  const own = await fs.readFile(path.join(l.master(repo, app), REDIRECT_FILE_NAME), 'utf8').catch(() => undefined);
  if (served !== own) problems.push(`${repo}: app's file differs from master ${app}'s own`);
  if (!file || !webFile) return { problems };
  return { state: { web, app, file, webFile }, problems };
}

/** Invariant 4: every non-temp object in store/blobs/sha256 hashes to its name. */
export async function storeProblems(root: string, opts: { fresh?: boolean } = {}): Promise<{ names: string[]; problems: string[] }> {
  const dir = layout(root).storeBlobsDir;
  const names = (await fs.readdir(dir).catch(() => [] as string[])).filter((n) => !n.startsWith(TMP_PREFIX));
  const problems: string[] = [];
  for (let i = 0; i < names.length; i += 8) {
    await Promise.all(
      names.slice(i, i + 8).map(async (n) => {
        if (!/^[a-f0-9]{64}$/.test(n)) return void problems.push(`store ${n}: not a sha256 hex name`);
        const actual = await hashFile(path.join(dir, n), opts.fresh).catch((e: unknown) => `unreadable (${code(e)})`);
        if (actual !== `sha256:${n}`) problems.push(`store ${n}: hashes to ${actual}`);
      }),
    );
  }
  return { names, problems };
}

/** Temp names under published/ or the store, and lock files left: none may stay after a normal run. */
export async function debrisProblems(root: string): Promise<string[]> {
  const l = layout(root);
  const under = async (dir: string) => ((await fs.readdir(dir, { recursive: true }).catch(() => [] as string[])) as string[]).map((p) => path.join(dir, p));
  const temps = [...(await under(l.publishedDir)), ...(await under(l.storeBlobsDir))].filter((p) => path.basename(p).startsWith(TMP_PREFIX));
  const locks = [];
  for (const p of await under(l.locksDir)) if (!(await fs.stat(p).catch(() => undefined))?.isDirectory()) locks.push(p);
  return [...temps.map((p) => `temp file left: ${path.relative(root, p)}`), ...locks.map((p) => `lock file left: ${path.relative(root, p)}`)];
}
