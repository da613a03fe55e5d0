// Publish one repo: build a new master directory from the store, make it durable, and only
// then swap web/<repo> and app/<file>.json to it (invariants 1 and 2).
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Layout } from '../layout.js';
import {
  MASTER_NAME_RE, REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME, TAGS_LIST_REL_PATH,
  blobRelPath, manifestDir, masterName, masterNameDate, repoKey,
} from '../layout.js';
import { MediaType, amd64Child } from '../oci.js';
import { type RedirectFile, REDIRECT_FILE_TYPE, serializeRedirectFile } from '../redirect-file.js';
import { encodeRedirectIndex } from '../redirect-index.js';
import { currentPublish, readMasterRedirect } from './current.js';
import { fsyncDir, linkOrCopySync, readdirOrEmpty, tmpName, writeNewFileSynced } from './fsutil.js';
import type { RepoState } from './repo-state.js';
import { swapSymlink } from './swap.js';

export interface PublishOptions {
  layout: Layout;
  state: RepoState;
  protected: boolean;
  /** Absolute base URL where <root>/published is served, or undefined for URLs relative to it. */
  publishedUrl?: string;
  dryRun?: boolean;
  /**
   * Build a new master even when the tags are unchanged: store objects were repaired, and the
   * served master still holds hardlinks to their old, corrupt inodes.
   */
  republish?: boolean;
  now?: () => Date;
}

export interface PublishResult {
  outcome: 'published' | 'unchanged';
  master: string;
  /** Objects linked into the new master, and how many of them had to be copied (cross-device). */
  linked: number;
  copied: number;
}

function sameContent(a: RepoState, f: RedirectFile | undefined, isProtected: boolean): boolean {
  if (!f?.derrick || f.protected !== isProtected) return false;
  const ta = Object.entries(a.tags);
  const tb = f.derrick.tags;
  return ta.length === Object.keys(tb).length && ta.every(([t, d]) => tb[t] === d);
}

/** A name later than every existing master, unique even within one millisecond. */
export async function nextMasterName(l: Layout, name: string, now: Date): Promise<string> {
  const existing = (await readdirOrEmpty(l.masterDir(name))).filter((n) => MASTER_NAME_RE.test(n)).sort();
  const last = existing.at(-1);
  let candidate = masterName(now);
  if (last && candidate <= last) {
    const seq = Number(last.slice(-3)) + 1;
    candidate = masterName(masterNameDate(last) > now ? masterNameDate(last) : now, seq);
    if (candidate <= last) candidate = masterName(new Date(masterNameDate(last).getTime() + 1));
  }
  return candidate;
}

export function buildRedirectFile(
  state: RepoState, l: Layout, master: string, isProtected: boolean, publishedUrl: string | undefined, now: Date,
): RedirectFile {
  const rel = l.masterUrlPath(state.name, master);
  const url = publishedUrl ? `${publishedUrl.replace(/\/+$/, '')}/${rel}` : rel;
  const schema2: string[] = [];
  const lists: string[] = [];
  const amd64: Record<string, [string, number]> = {};
  for (const [digest, m] of Object.entries(state.manifests)) {
    if (m.mediaType === MediaType.dockerManifest) schema2.push(digest);
    if (m.mediaType === MediaType.dockerManifestList) lists.push(digest);
  }
  for (const [tag, digest] of Object.entries(state.tags)) {
    const m = state.manifests[digest]!;
    if (m.mediaType === MediaType.dockerManifest) schema2.push(tag);
    if (m.mediaType === MediaType.dockerManifestList) {
      lists.push(tag);
      const child = amd64Child(m.children ?? []);
      if (child && state.manifests[child.digest]?.mediaType === MediaType.dockerManifest) amd64[tag] = [child.digest, 2];
    }
  }
  return {
    type: REDIRECT_FILE_TYPE,
    version: 4,
    repository: repoKey(state.name),
    'repo-registry-id': state.name,
    url,
    protected: isProtected,
    schema2_data: schema2,
    manifest_list_data: lists,
    manifest_list_amd64_tags: amd64,
    derrick: {
      version: 1,
      master,
      published: now.toISOString(),
      tags: state.tags,
      manifests: state.manifests,
      blobs: state.blobs,
      referrers: state.referrers,
    },
  };
}

/** Builds the master under a temp name, so an interrupted build is never mistaken for a publish. */
async function buildMaster(l: Layout, state: RepoState, file: RedirectFile, dir: string) {
  const counts = { linked: 0, copied: 0 };
  const dirs = new Set<string>([dir, path.join(dir, 'blobs'), path.join(dir, 'tags'), path.join(dir, 'manifests')]);
  for (const m of Object.values(state.manifests)) dirs.add(path.join(dir, 'manifests', manifestDir(m.mediaType)));
  for (const d of dirs) await fs.mkdir(d, { recursive: true });

  const links: Array<[string, string]> = [];
  for (const digest of Object.keys(state.blobs)) links.push([digest, path.join(dir, blobRelPath(digest))]);
  for (const [digest, m] of Object.entries(state.manifests)) {
    links.push([digest, path.join(dir, 'manifests', manifestDir(m.mediaType), digest)]);
  }
  // Tag paths exist for crane, which redirects to manifests/<2|list>/<tag>.
  for (const [tag, digest] of Object.entries(state.tags)) {
    links.push([digest, path.join(dir, 'manifests', manifestDir(state.manifests[digest]!.mediaType), tag)]);
  }
  for (const [digest, dst] of links) counts[linkOrCopySync(l.storeBlob(digest), dst)]++;
  const tagsList = JSON.stringify({ name: state.name, tags: Object.keys(state.tags).sort() }) + '\n';
  await writeNewFileSynced(path.join(dir, TAGS_LIST_REL_PATH), tagsList);
  const json = serializeRedirectFile(file);
  await writeNewFileSynced(path.join(dir, REDIRECT_FILE_NAME), json);
  // The redirector's fast way in (shared/redirect-index.ts); none when a digest is not sha256.
  const index = encodeRedirectIndex(file, json);
  if (index) await writeNewFileSynced(path.join(dir, REDIRECT_INDEX_NAME), index);
  // Entries (links, files) become durable with their directories; children before parents.
  for (const d of [...dirs].sort().reverse()) await fsyncDir(d);
  return counts;
}

export async function publishRepo(opts: PublishOptions): Promise<PublishResult> {
  const { layout: l, state } = opts;
  const now = (opts.now ?? (() => new Date()))();
  const name = state.name;
  const cur = await currentPublish(l, name);
  const currentFile = cur.web ? await readMasterRedirect(l, name, cur.web) : undefined;

  if (cur.web && currentFile && !opts.republish && sameContent(state, currentFile, opts.protected)) {
    // A run killed between the two swaps left app behind web: finish that swap.
    if (cur.app !== cur.web && !opts.dryRun) await swapSymlink(l.app(name), appTarget(name, cur.web));
    return { outcome: 'unchanged', master: cur.web, linked: 0, copied: 0 };
  }
  const master = await nextMasterName(l, name, now);
  if (opts.dryRun) return { outcome: 'published', master, linked: 0, copied: 0 };
  // Finish an interrupted swap first: if this run dies between its own two swaps, app must be
  // left at the previous publish (web's now), never two publishes behind web (invariant 2).
  if (cur.web && currentFile && cur.app !== cur.web) await swapSymlink(l.app(name), appTarget(name, cur.web));

  const file = buildRedirectFile(state, l, master, opts.protected, opts.publishedUrl, now);
  const parent = l.masterDir(name);
  await fs.mkdir(parent, { recursive: true });
  const tmp = tmpName(parent, master);
  let counts;
  try {
    counts = await buildMaster(l, state, file, tmp);
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw err;
  }
  await fs.rename(tmp, path.join(parent, master));
  await fsyncDir(parent);
  // The last step, and the only one readers see: web first, then app.
  await swapSymlink(l.web(name), `../master/${repoKey(name)}/${master}`);
  await swapSymlink(l.app(name), appTarget(name, master));
  return { outcome: 'published', master, ...counts };
}

function appTarget(name: string, master: string): string {
  return `../master/${repoKey(name)}/${master}/${REDIRECT_FILE_NAME}`;
}

