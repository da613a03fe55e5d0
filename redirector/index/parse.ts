// A redirect file's text -> the compact in-memory form of one repo version.
import path from 'node:path';
import { repoKey } from '../../shared/layout.js';
import type { Descriptor } from '../../shared/oci.js';
import { parseRedirectFile, parseRedirectJson, type AnyRedirectFile, type RedirectFile } from '../../shared/redirect-file.js';
import { decodeRedirectIndex } from '../../shared/redirect-index.js';
import { BadFileError } from './app-entry.js';
import { DigestSet, DigestTable, ManifestTable, PackedTagTable, type Tags } from './compact.js';
import { scanDerrickFile, type ScannedFile } from './scan.js';
import type { IndexedRepo, RepoVersion } from './types.js';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => !!v && typeof v === 'object' && !Array.isArray(v);

/**
 * Parses and validates a derrick v4 file: scan.ts reads the big maps into the compact form and
 * checks them by hand (the schema reported every issue at ~0.1 ms each, and its copy of every
 * load was garbage); the schema then runs on the rest of the file, which is small.
 */
function parseChecked(bytes: Buffer): { file: RedirectFile; maps: NonNullable<ScannedFile['maps']> } {
  const { json, maps } = scanDerrickFile(bytes);
  if (json.version !== 4 || !isObject(json.derrick) || !maps) throw new BadFileError('not a derrick redirect file (no derrick data)');
  const file = parseRedirectJson(json) as RedirectFile;
  return { file, maps };
}

export interface ParsedDerrick {
  name: string;
  protected: boolean;
  version: RepoVersion;
  tags: Tags;
  referrers: Record<string, Descriptor[]>;
  /** Read from the master's redirect.idx, not parsed from its JSON. */
  viaIndex: boolean;
}

/**
 * Parses derrick's own v4 file. `expectKey`: the app file's name without .json; a file that
 * claims another repo's name is refused, so it can't replace what that name serves.
 */
export function parseDerrickFile(text: string | Buffer, real: string, expectKey?: string): ParsedDerrick {
  const { file: parsed, maps } = parseChecked(typeof text === 'string' ? Buffer.from(text) : text);
  const name = parsed['repo-registry-id'];
  if (expectKey !== undefined && repoKey(name) !== expectKey) {
    throw new BadFileError(`repo-registry-id "${name}" does not match the file name (expected the key "${expectKey}")`);
  }
  const d = parsed.derrick!;
  // Children were checked by the schema, on the entries that have them (scan.ts): serve its copy.
  for (const dg in d.manifests) maps.manifests.setChildren(dg, d.manifests[dg]!.children);
  return {
    name,
    protected: parsed.protected,
    version: { url: parsed.url, master: d.master, dir: path.dirname(real), manifests: maps.manifests, blobs: maps.blobs },
    tags: maps.tags,
    referrers: d.referrers,
    viaIndex: false,
  };
}

/**
 * The same, from the master's redirect.idx (shared/redirect-index.ts) and the JSON it must
 * describe: no parse. Throws RedirectIndexMismatch when the index can't be used (the caller then
 * parses the JSON), BadFileError when it names another repo.
 */
export function parseDerrickIndex(idx: Buffer, json: Buffer, real: string, expectKey?: string): ParsedDerrick {
  const x = decodeRedirectIndex(idx, json);
  if (expectKey !== undefined && repoKey(x.name) !== expectKey) {
    throw new BadFileError(`repo-registry-id "${x.name}" does not match the file name (expected the key "${expectKey}")`);
  }
  const n = x.manifestSizes.length;
  // build copies the words, so nothing here keeps the file's buffer alive.
  const { table, index } = DigestTable.build(x.manifestWords, [], n);
  const types = new Array<string>(table.size);
  const sizes = new Float64Array(table.size);
  for (let i = 0; i < n; i++) {
    types[index[i]!] = x.manifestTypes[i]!;
    sizes[index[i]!] = x.manifestSizes[i]!;
  }
  const manifests = new ManifestTable(table, types, sizes);
  for (const dg in x.children) manifests.setChildren(dg, x.children[dg]);
  // A table position per tag (the same as the file's unless a digest repeats, which JSON keys can't).
  const targets = new Int32Array(x.tagTargets.length);
  for (let i = 0; i < targets.length; i++) targets[i] = index[x.tagTargets[i]!]!;
  const blobs = new DigestSet(DigestTable.build(x.blobWords, [], x.blobWords.length / 8).table);
  return {
    name: x.name,
    protected: x.protected,
    version: { url: x.url, master: x.master, dir: path.dirname(real), manifests, blobs },
    tags: new PackedTagTable(x.tagNames, x.tagEnds, targets, table),
    referrers: x.referrers,
    viaIndex: true,
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
    // Sorted on the first tags/list, not at every load.
    get sortedTags() {
      return p.tags.sorted;
    },
    referrers: p.referrers,
    previous: [],
    cost,
    viaIndex: p.viaIndex,
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
