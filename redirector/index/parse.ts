// A redirect file's text -> the compact in-memory form of one repo version.
import path from 'node:path';
import { repoKey } from '../../shared/layout.js';
import type { Descriptor } from '../../shared/oci.js';
import { isDigestSyntax, isValidTag } from '../../shared/oci.js';
import { parseRedirectFile, parseRedirectJson, type AnyRedirectFile, type DerrickData, type RedirectFile } from '../../shared/redirect-file.js';
import { BadFileError } from './app-entry.js';
import type { IndexedManifest, IndexedRepo, RepoVersion } from './types.js';

const interned = new Map<string, string>();
function intern(s: string): string {
  let have = interned.get(s);
  if (have === undefined && interned.size < 256) interned.set(s, (have = s));
  return have ?? s;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => !!v && typeof v === 'object' && !Array.isArray(v);
const isSize = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
const MANIFEST_KEYS = new Set(['mediaType', 'size', 'children']);

/**
 * The big maps of derrick data (tags, manifests, blobs), checked by hand against the same rules
 * as the schema (shared/redirect-file.ts), stopping at the first bad entry. The schema then runs
 * on the rest of the file only. Why not the schema for all of it: it reports every issue at
 * ~0.1 ms each (a 25 KB file of 2,000 bad tags held the event loop for 270 ms, 250 KB for 2.2 s),
 * and its deep copy of every load doubled the garbage that kept RSS up under random traffic.
 */
function checkMaps(d: Json): { tags: Json; manifests: Json; blobs: Json } {
  const map = (key: string) => {
    if (!isObject(d[key])) throw new BadFileError(`derrick.${key}: is not an object`);
    return d[key] as Json;
  };
  const tags = map('tags');
  const manifests = map('manifests');
  const blobs = map('blobs');
  const bad = (what: string) => new BadFileError(what.slice(0, 200));
  for (const dg in manifests) {
    const m = manifests[dg];
    if (!isDigestSyntax(dg) || !isObject(m)) throw bad(`derrick.manifests.${dg}: is not a digest -> manifest`);
    if (typeof m.mediaType !== 'string' || !isSize(m.size)) throw bad(`derrick.manifests.${dg}: needs a mediaType and a size`);
    for (const k in m) if (!MANIFEST_KEYS.has(k)) throw bad(`derrick.manifests.${dg}: unknown key "${k}"`);
  }
  for (const t in tags) {
    const dg = tags[t];
    if (!isValidTag(t) || typeof dg !== 'string' || !isDigestSyntax(dg)) throw bad(`derrick.tags.${t}: is not a tag -> digest`);
    if (!Object.hasOwn(manifests, dg)) throw bad(`derrick.tags.${t}: points at ${dg}, which is not in manifests`);
  }
  for (const dg in blobs) if (!isDigestSyntax(dg) || !isSize(blobs[dg])) throw bad(`derrick.blobs.${dg}: is not a digest -> size`);
  return { tags, manifests, blobs };
}

/** Parses and validates a derrick v4 file: the schema for everything but the big maps (see checkMaps). */
function parseChecked(text: string): { file: RedirectFile; maps: { tags: Json; manifests: Json; blobs: Json } } {
  let json: Json;
  try {
    json = JSON.parse(text) as Json;
  } catch (err) {
    throw new BadFileError(`not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(json) || json.version !== 4 || !isObject(json.derrick)) throw new BadFileError('not a derrick redirect file (no derrick data)');
  const maps = checkMaps(json.derrick);
  // Children of index manifests are few: the schema checks those entries whole.
  const withChildren: Json = {};
  for (const dg in maps.manifests) if ((maps.manifests[dg] as Json).children !== undefined) withChildren[dg] = maps.manifests[dg];
  const small = { ...json, derrick: { ...json.derrick, tags: {}, manifests: withChildren, blobs: {} } };
  const file = parseRedirectJson(small) as RedirectFile;
  return { file, maps };
}

export interface ParsedDerrick {
  name: string;
  protected: boolean;
  version: RepoVersion;
  tags: Map<string, string>;
  referrers: Record<string, Descriptor[]>;
}

/**
 * Parses derrick's own v4 file. `expectKey`: the app file's name without .json; a file that
 * claims another repo's name is refused, so it can't replace what that name serves.
 */
export function parseDerrickFile(text: string, real: string, expectKey?: string): ParsedDerrick {
  const { file: parsed, maps } = parseChecked(text);
  const name = parsed['repo-registry-id'];
  if (expectKey !== undefined && repoKey(name) !== expectKey) {
    throw new BadFileError(`repo-registry-id "${name}" does not match the file name (expected the key "${expectKey}")`);
  }
  const d = parsed.derrick!;
  // for-in walks, no spread copies or entry arrays: every cold load runs this, and its garbage
  // is what the GC pauses for under random traffic.
  const raw = maps.manifests as DerrickData['manifests'];
  const manifests = new Map<string, IndexedManifest>();
  for (const dg in raw) {
    const m = raw[dg]!;
    // A handful of media types repeat in every repo: one copy each, not one per manifest.
    const entry: IndexedManifest = { mediaType: intern(m.mediaType), size: m.size };
    // Children were checked by the schema, on the entries that have them (parseChecked).
    const children = d.manifests[dg]?.children;
    if (children) entry.children = children;
    manifests.set(dg, entry);
  }
  // Tag values reuse the manifest map's key strings: one copy of each digest in memory.
  const keyOf = new Map<string, string>();
  for (const k in raw) keyOf.set(k, k);
  const tags = new Map<string, string>();
  const rawTags = maps.tags as Record<string, string>;
  for (const t in rawTags) tags.set(t, keyOf.get(rawTags[t]!) ?? rawTags[t]!);
  const blobs = new Set<string>();
  for (const dg in maps.blobs) blobs.add(dg);
  return {
    name,
    protected: parsed.protected,
    version: { url: parsed.url, master: d.master, dir: path.dirname(real), manifests, blobs },
    tags,
    referrers: d.referrers,
  };
}

export function derrickRepo(p: ParsedDerrick, file: string, real: string, cost: number): IndexedRepo {
  return {
    name: p.name,
    kind: 'derrick',
    file,
    real,
    protected: p.protected,
    current: p.version,
    tags: p.tags,
    sortedTags: [...p.tags.keys()].sort(),
    referrers: p.referrers,
    previous: [],
    cost,
  };
}

/** crane's v2-v4 files, served with crane's own redirects. v1 is the v1 API only, as in crane. */
export function craneRepo(text: string, file: string, cost: number): IndexedRepo {
  const parsed: AnyRedirectFile = parseRedirectFile(text);
  if (parsed.version === 1) throw new BadFileError('crane v1 redirect file: v1 API only, not served on /v2 (as crane)');
  return {
    name: parsed['repo-registry-id'],
    kind: 'crane',
    file,
    real: file,
    protected: parsed.protected,
    current: { url: parsed.url.endsWith('/') ? parsed.url : parsed.url + '/', manifests: new Map(), blobs: new Set() },
    tags: new Map(),
    sortedTags: [],
    referrers: {},
    crane: parsed,
    previous: [],
    cost,
  };
}
