// The cheap check of a run where nothing changed. A repo is up to date when
//   1. what its source says now for the selected tags (the tag list filtered by tags/exclude,
//      then one resolve per tag: a HEAD for a registry, a lookup in the once-read index.json
//      for a layout), plus the referrer tags (`sha256-<hex>.sig`, ...) the source has for the
//      manifests the last sync found, is exactly the tag -> digest map the last sync recorded, and
//   2. web/ and app/ both point at one publish whose redirect file has those same tags and the
//      repo's `protected` setting.
// Sound because a manifest digest names its bytes, and so its children and blobs: equal digests
// mean equal content, which the last sync stored and verified (gc keeps whatever a repo state
// names). A moved tag changes a digest, a new or deleted tag or a tags/exclude change changes the
// key set (so does a signature added to a published image), and a `protected` change differs
// from the served file; each fails the check and the repo takes the full path. --force-fetch
// never takes this path. Not seen here: a referrer that only the source's referrers API lists,
// added to an unchanged image (one more request per manifest per run); it comes with the next
// change or --force-fetch.
//
// Both files are read with synchronous calls and checked only for the fields used here (the
// full schemas cost more than everything else a no-op does). They are derrick's own files,
// validated when written; anything unexpected in them fails the check and takes the full path,
// which parses them strictly.
import fs from 'node:fs';
import path from 'node:path';
import { REDIRECT_FILE_NAME, type Layout } from '../shared/layout.js';
import { currentPublish, type CurrentPublish } from '../shared/publish/current.js';

export interface Served {
  cur: CurrentPublish;
  /** The master web/ and app/ both point at; undefined when nothing is served or a swap is unfinished. */
  master?: string;
  tags?: Record<string, string>;
  protected?: boolean;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isTagMap = (v: unknown): v is Record<string, string> => isObject(v) && Object.values(v).every((d) => typeof d === 'string');

/** A small JSON file of derrick's, or undefined when it is missing or not a JSON object. */
function readJson(file: string): Json | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return isObject(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

export async function servedPublish(l: Layout, name: string): Promise<Served> {
  const cur = await currentPublish(l, name);
  if (!cur.web || cur.app !== cur.web) return { cur };
  const file = readJson(path.join(l.master(name, cur.web), REDIRECT_FILE_NAME));
  const d = file?.derrick;
  if (file?.version !== 4 || typeof file.protected !== 'boolean' || !isObject(d) || d.master !== cur.web || !isTagMap(d.tags)) return { cur };
  return { cur, master: cur.web, tags: d.tags, protected: file.protected };
}

/**
 * The tag -> digest map the last sync recorded, and the manifests it found (whose referrer tags
 * the check resolves too), read without validating the rest of the state.
 */
export function recordedSync(l: Layout, name: string): { tags?: Record<string, string>; manifests: string[] } {
  const state = readJson(l.repoState(name));
  const tags = state?.tags;
  return { tags: isTagMap(tags) ? tags : undefined, manifests: isObject(state?.manifests) ? Object.keys(state.manifests) : [] };
}

export function sameTags(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((t) => b[t] === a[t]);
}

/** Check 2 above, for tags known to match the source (check 1, or --no-fetch's stored state). */
export function servesTags(served: Served, tags: Record<string, string>, isProtected: boolean): boolean {
  return served.master !== undefined && served.protected === isProtected && sameTags(served.tags!, tags);
}
