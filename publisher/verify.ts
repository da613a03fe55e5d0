// The tree check behind `derrick verify`: for one repo, web/ and app/ point at complete masters in
// the right order (app never newer than web), and every master under a real name is complete:
// every name its redirect file lists exists with its size (and, deep, hashes to its digest), and
// tags/list matches. Read-only; run-verify.ts adds locks, reporting and repair.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  MASTER_NAME_RE, REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME, TAGS_LIST_REL_PATH, blobRelPath, manifestRelPath, repoKey, type Layout,
} from '../shared/layout.js';
import { parseRedirectFile, type RedirectFile } from '../shared/redirect-file.js';
import { decodeRedirectIndex } from '../shared/redirect-index.js';
import { readdirOrEmpty } from '../shared/publish/fsutil.js';

/** One thing wrong, named the way an operator finds it: the repo, a path under root, the problem. */
export interface Damage {
  repo: string;
  /** Relative to root, e.g. published/master/<key>/<ts>/blobs/sha256:… */
  path: string;
  problem: string;
  /** The master it is in, when it is in one; undefined for the web/app links themselves. */
  master?: string;
}

export interface RepoVerdict {
  repo: string;
  /** False when neither web/ nor app/ names the repo: nothing was checked. */
  published: boolean;
  /** Master web/<key> points at, when it names one. */
  web?: string;
  app?: string;
  /** Every master under a real name, oldest first (each was checked). */
  masters: string[];
  /** Files checked (stat, and hashed when deep). */
  files: number;
  damage: Damage[];
}

export interface VerifyOptions {
  /** Hash every manifest and blob, not just check that it exists with its size. */
  deep?: boolean;
  /** Shared between repos of one run: published files are hardlinks, so an inode is hashed once. */
  hashes?: Map<string, string>;
}

async function sha256File(file: string, cache: Map<string, string>): Promise<string> {
  const st = await fs.stat(file, { bigint: true });
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  const digest = 'sha256:' + h.digest('hex');
  cache.set(key, digest);
  return digest;
}

function errText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'missing' : code ?? (err as Error).message;
}

/** Checks one master directory; pushes what is wrong into `damage` and returns the files checked. */
export async function verifyMaster(l: Layout, repo: string, master: string, damage: Damage[], opts: VerifyOptions = {}): Promise<number> {
  const dir = l.master(repo, master);
  const rel = (p: string) => path.relative(l.root, path.join(dir, p));
  const hurt = (p: string, problem: string) => damage.push({ repo, path: rel(p), problem, master });
  const hashes = opts.hashes ?? new Map<string, string>();

  let file: RedirectFile;
  let json: Buffer;
  try {
    json = await fs.readFile(path.join(dir, REDIRECT_FILE_NAME));
    const parsed = parseRedirectFile(json.toString('utf8'));
    if (parsed.version !== 4 || !parsed.derrick) throw new Error('not a derrick redirect file (no derrick data)');
    file = parsed as RedirectFile;
  } catch (err) {
    // Without the list of names there is nothing else to check against.
    hurt(REDIRECT_FILE_NAME, `unreadable redirect file: ${errText(err)}`);
    return 1;
  }
  // The index is optional (older publishes have none); one that is there must describe this JSON,
  // or serve quietly falls back to parsing it, and something changed the master after its publish.
  const index = await fs.readFile(path.join(dir, REDIRECT_INDEX_NAME)).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : err));
  if (index instanceof Error) hurt(REDIRECT_INDEX_NAME, `unreadable: ${errText(index)}`);
  else if (index) {
    try {
      decodeRedirectIndex(index, json);
    } catch (err) {
      hurt(REDIRECT_INDEX_NAME, `${(err as Error).message}; serve reads redirect.json instead`);
    }
  }
  const d = file.derrick!;
  if (d.master !== master) hurt(REDIRECT_FILE_NAME, `names master ${d.master}, not its own directory ${master}`);
  if (file['repo-registry-id'] !== repo) hurt(REDIRECT_FILE_NAME, `is for repo ${file['repo-registry-id']}, not ${repo}`);

  const wanted: Array<{ rel: string; digest: string; size: number }> = [];
  for (const [digest, m] of Object.entries(d.manifests)) wanted.push({ rel: manifestRelPath(m.mediaType, digest), digest, size: m.size });
  // crane's tag paths, manifests/<dir>/<tag>, carry the tagged manifest's bytes.
  for (const [tag, digest] of Object.entries(d.tags)) {
    const m = d.manifests[digest];
    if (m) wanted.push({ rel: manifestRelPath(m.mediaType, tag), digest, size: m.size });
  }
  for (const [digest, size] of Object.entries(d.blobs)) wanted.push({ rel: blobRelPath(digest), digest, size });

  const checkOne = async (w: (typeof wanted)[number]) => {
    const p = path.join(dir, w.rel);
    let st;
    try {
      st = await fs.stat(p);
    } catch (err) {
      return void hurt(w.rel, errText(err));
    }
    if (!st.isFile()) return void hurt(w.rel, 'not a regular file');
    if (st.size !== w.size) return void hurt(w.rel, `${st.size} bytes, expected ${w.size}`);
    if (!opts.deep) return;
    const actual = await sha256File(p, hashes).catch((err: unknown) => `unreadable (${errText(err)})`);
    if (actual !== w.digest) hurt(w.rel, `hashes to ${actual}, expected ${w.digest}`);
  };
  let next = 0;
  const worker = async () => {
    while (next < wanted.length) await checkOne(wanted[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(8, wanted.length) }, worker));

  const expectTags = Object.keys(d.tags).sort();
  try {
    const list = JSON.parse(await fs.readFile(path.join(dir, TAGS_LIST_REL_PATH), 'utf8')) as { name?: unknown; tags?: unknown };
    if (list.name !== repo) hurt(TAGS_LIST_REL_PATH, `names repo ${JSON.stringify(list.name)}, not ${repo}`);
    if (JSON.stringify(list.tags) !== JSON.stringify(expectTags)) {
      hurt(TAGS_LIST_REL_PATH, `lists ${JSON.stringify(list.tags)}, the redirect file has ${JSON.stringify(expectTags)}`);
    }
  } catch (err) {
    hurt(TAGS_LIST_REL_PATH, err instanceof SyntaxError ? `not JSON: ${err.message}` : errText(err));
  }
  return wanted.length + 2;
}

/** What a link is: absent, not a symlink, or a symlink with this target. */
async function linkTarget(p: string): Promise<{ kind: 'absent' } | { kind: 'other'; what: string } | { kind: 'link'; target: string }> {
  let st;
  try {
    st = await fs.lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw err;
  }
  if (!st.isSymbolicLink()) return { kind: 'other', what: st.isDirectory() ? 'a directory' : 'a regular file or other' };
  return { kind: 'link', target: await fs.readlink(p) };
}

/** The master a web/app link names, or a damage entry saying why it names none. */
function checkLink(
  l: Layout, repo: string, which: 'web' | 'app', t: Awaited<ReturnType<typeof linkTarget>>, masters: string[], damage: Damage[],
): string | undefined {
  const key = repoKey(repo);
  const rel = path.relative(l.root, which === 'web' ? l.web(repo) : l.app(repo));
  const hurt = (problem: string) => void damage.push({ repo, path: rel, problem });
  if (t.kind === 'absent') return void hurt(`missing, while ${which === 'web' ? 'app' : 'web'} exists`);
  if (t.kind === 'other') return void hurt(`is ${t.what}, not a symlink`);
  const suffix = which === 'app' ? `/${REDIRECT_FILE_NAME}` : '';
  const prefix = `../master/${key}/`;
  const name = t.target.startsWith(prefix) && t.target.endsWith(suffix) ? t.target.slice(prefix.length, t.target.length - suffix.length) : '';
  if (!MASTER_NAME_RE.test(name)) return void hurt(`points at ${t.target}, not at a master of ${repo}`);
  if (!masters.includes(name)) return void hurt(`dangling: points at ${t.target}, and master ${name} does not exist`);
  return name;
}

/**
 * Checks one repo. With neither link the repo is not published (never, or unpublished by cache
 * eviction; its masters wait for gc): nothing is served, so nothing is damaged. Otherwise every
 * master under a real name is checked, not only the served ones: a master replaced less than
 * `grace` ago still answers blob redirects, and no master may ever be incomplete under its name.
 */
export async function verifyRepo(l: Layout, repo: string, opts: VerifyOptions = {}): Promise<RepoVerdict> {
  const damage: Damage[] = [];
  const masters = (await readdirOrEmpty(l.masterDir(repo))).filter((n) => MASTER_NAME_RE.test(n)).sort();
  const webLink = await linkTarget(l.web(repo));
  const appLink = await linkTarget(l.app(repo));
  if (webLink.kind === 'absent' && appLink.kind === 'absent') return { repo, published: false, masters, files: 0, damage };
  const web = checkLink(l, repo, 'web', webLink, masters, damage);
  const app = checkLink(l, repo, 'app', appLink, masters, damage);
  if (web && app && app > web) {
    damage.push({ repo, path: path.relative(l.root, l.app(repo)), problem: `points at ${app}, newer than web's ${web} (app must never be ahead of web)` });
  }
  const hashes = opts.hashes ?? new Map<string, string>();
  let files = 0;
  for (const m of masters) files += await verifyMaster(l, repo, m, damage, { ...opts, hashes });
  return { repo, published: true, web, app, masters, files, damage };
}
