// One pass over a derrick redirect file's bytes into the compact form (compact.ts), with no
// JSON.parse. What JSON.parse cost here (issue 10, profiled): each digest of a new repo became an
// object key, and V8 internalizes every key into its string table, so a cold 21 KB file took
// ~240 us of CPU against ~40 us for a file parsed before, and its 250 strings and 50 objects were
// promoted with the repo and traced at every major GC. This scanner checks strict JSON syntax over
// the whole file, decodes the big maps' digests straight into 32-bit words, checks their entries
// as the schema would (stopping at the first bad one), and builds ordinary values only for the
// rest of the file, which is small and still goes through the schema (parse.ts).
import { isDigestSyntax, isValidTag } from '../../shared/oci.js';
import { BadFileError } from './app-entry.js';
import { DigestSet, DigestTable, HEX, ManifestTable, sha256Words, TagTable } from './compact.js';
import { BACKSLASH, JsonReader, QUOTE, setMember, type Json } from './json-reader.js';

export interface ScannedFile {
  /** The file's values, with derrick.tags and derrick.blobs empty and derrick.manifests holding only the entries with children. */
  json: Json;
  /** Present when the file has a derrick object. */
  maps?: { tags: TagTable; manifests: ManifestTable; blobs: DigestSet };
}

const WORDS = 8;
const SHA256 = Buffer.from('"sha256:');

/** Growable scratch for one map's entries, reused by every parse (a parse never waits). */
class Entries {
  words = new Uint32Array(WORDS * 64);
  /** A digest of another algorithm, by entry (undefined: the entry's digest is in `words`). */
  others: Array<string | undefined> = [];
  n = 0;
  reset() {
    this.n = 0;
    this.others.length = 0;
    // A huge file's scratch is not kept for the life of the process.
    if (this.words.length > WORDS * 4096) this.words = new Uint32Array(WORDS * 64);
  }
  /** Index of a new entry, with room for its words. */
  add(): number {
    if ((this.n + 1) * WORDS > this.words.length) {
      const bigger = new Uint32Array(this.words.length * 2);
      bigger.set(this.words);
      this.words = bigger;
    }
    return this.n++;
  }
  /** The table of the entries so far, with each entry's index in it. */
  table() {
    return DigestTable.build(this.words, this.others, this.n);
  }
  /** Entry i's digest (for an error message). */
  digestAt(i: number): string {
    return this.others[i] ?? DigestTable.build(this.words.slice(i * WORDS, i * WORDS + WORDS), [], 1).table.digestAt(0);
  }
}

const tagDigests = new Entries();
const manifestDigests = new Entries();
const blobDigests = new Entries();
let tagNames: string[] = [];
let mediaTypes: string[] = [];
let sizes: number[] = [];

/** A handful of media types repeat in every repo: one string each, matched on the raw bytes. */
const knownTypes: Array<{ raw: Buffer; value: string }> = [];
const MAX_KNOWN_TYPES = 64;
/** The one matched last: a repo's manifests mostly share one type. */
let lastType = 0;

const bad = (what: string): never => {
  throw new BadFileError(what.slice(0, 200));
};

export function scanDerrickFile(buf: Buffer): ScannedFile {
  const r = new JsonReader(buf);
  let maps: ScannedFile['maps'];
  if (r.peek() !== 0x7b) bad('not a derrick redirect file (no derrick data)');
  const json = r.object(1, (o, key) => {
    if (key !== 'derrick') return false;
    // The last "derrick" wins, as in JSON.
    const d = derrick(r);
    o.derrick = d.json;
    maps = d.maps;
    return true;
  });
  r.end();
  return { json, maps };
}

function derrick(r: JsonReader): { json: Json; maps?: ScannedFile['maps'] } {
  if (r.peek() !== 0x7b) return { json: r.value(1) as Json };
  const withChildren: Json = {};
  const seen = { tags: false, manifests: false, blobs: false };
  const d = r.object(2, (_o, key) => {
    if (key === 'tags') tags(r);
    else if (key === 'manifests') manifests(r, withChildren);
    else if (key === 'blobs') blobs(r);
    else return false;
    seen[key] = true;
    return true;
  });
  for (const k of ['tags', 'manifests', 'blobs'] as const) if (!seen[k]) bad(`derrick.${k}: is not an object`);
  const maps = build();
  d.tags = {};
  d.manifests = withChildren;
  d.blobs = {};
  return { json: d, maps };
}

/** Opens derrick.<key>; false when it is empty. */
function openMap(r: JsonReader, key: string): boolean {
  if (r.peek() !== 0x7b) bad(`derrick.${key}: is not an object`);
  return r.open(0x7d);
}

/** A digest string into `into`; a bad one is refused with `what`. */
function digest(r: JsonReader, into: Entries, what: () => string): void {
  const at = r.peek();
  const i = into.add();
  if (sha256Raw(r.buf, r.pos, into.words, i * WORDS)) {
    r.pos += 73; // "sha256:<64 hex>"
    return;
  }
  if (at !== QUOTE) bad(what());
  const start = r.pos;
  const s = r.string();
  if (!isDigestSyntax(s)) {
    r.pos = start;
    bad(what());
  }
  if (!sha256Words(s, into.words, i * WORDS)) into.others[i] = s;
}

function size(r: JsonReader, what: () => string): number {
  if (!r.atNumber()) bad(what());
  const n = r.number();
  if (!Number.isInteger(n) || n < 0) bad(what());
  return n;
}

function tags(r: JsonReader): void {
  tagDigests.reset();
  tagNames = [];
  if (!openMap(r, 'tags')) return;
  do {
    // Not a plain tag: decoded, it may still be one ("v\u0031").
    const t = tagName(r) ?? r.string();
    if (!isValidTag(t)) bad(`derrick.tags.${t}: is not a tag -> digest`);
    r.expect(0x3a);
    tagNames.push(t);
    digest(r, tagDigests, () => `derrick.tags.${t}: is not a tag -> digest`);
  } while (r.more(0x7d));
}

/** A key that is a valid tag with no escapes, or undefined (pos unchanged). */
function tagName(r: JsonReader): string | undefined {
  if (r.peek() !== QUOTE) return undefined;
  const buf = r.buf;
  const start = r.pos + 1;
  let k = start;
  while (TAG_CHAR[buf[k]!] === 1) k++;
  // TAG_RE (shared/oci.ts): 1-128 of these, not starting with '.' or '-'.
  if (buf[k] !== QUOTE || k === start || k - start > 128 || buf[start] === 0x2e || buf[start] === 0x2d) return undefined;
  r.pos = k + 1;
  return buf.toString('latin1', start, k);
}

function manifests(r: JsonReader, withChildren: Json): void {
  manifestDigests.reset();
  mediaTypes = [];
  sizes = [];
  if (!openMap(r, 'manifests')) return;
  do {
    const at = manifestDigests.n;
    const what = (why: string) => () => `derrick.manifests.${manifestDigests.digestAt(at)}: ${why}`;
    digest(r, manifestDigests, () => `derrick.manifests.${r.string()}: is not a digest -> manifest`);
    r.expect(0x3a);
    if (r.peek() !== 0x7b) bad(what('is not a digest -> manifest')());
    let mediaType: string | undefined;
    let sz: number | undefined;
    let kids: unknown;
    r.object(3, (_o, key) => {
      if (key === 'mediaType') mediaType = r.peek() === QUOTE ? knownType(r) : bad(what('needs a mediaType and a size')());
      else if (key === 'size') sz = size(r, what('needs a mediaType and a size'));
      else if (key === 'children') kids = r.value(3);
      else bad(what(`unknown key "${key}"`)());
      return true;
    });
    if (mediaType === undefined || sz === undefined) bad(what('needs a mediaType and a size')());
    mediaTypes[at] = mediaType!;
    sizes[at] = sz!;
    // The schema checks the few entries with children whole (parse.ts).
    if (kids !== undefined) setMember(withChildren, manifestDigests.digestAt(at), { mediaType, size: sz, children: kids });
  } while (r.more(0x7d));
}

/** A media type string, one copy per distinct value. */
function knownType(r: JsonReader): string {
  // A known type's raw bytes, quotes included, hold no backslash: a match is the whole token.
  const n = knownTypes.length;
  for (let j = 0; j < n; j++) {
    const t = knownTypes[(lastType + j) % n]!;
    if (sameBytes(r.buf, r.pos, t.raw)) {
      lastType = (lastType + j) % n;
      r.pos += t.raw.length;
      return t.value;
    }
  }
  const start = r.pos;
  const s = r.string();
  const raw = r.buf.subarray(start, r.pos);
  if (n < MAX_KNOWN_TYPES && !raw.includes(BACKSLASH)) knownTypes.push({ raw: Buffer.from(raw), value: s });
  return s;
}

function blobs(r: JsonReader): void {
  blobDigests.reset();
  if (!openMap(r, 'blobs')) return;
  do {
    const at = blobDigests.n;
    digest(r, blobDigests, () => `derrick.blobs.${r.string()}: is not a digest -> size`);
    r.expect(0x3a);
    size(r, () => `derrick.blobs.${blobDigests.digestAt(at)}: is not a digest -> size`);
  } while (r.more(0x7d));
}

/** The compact tables of the maps just scanned; tags must name a manifest of the file. */
function build(): NonNullable<ScannedFile['maps']> {
  const { table, index } = manifestDigests.table();
  const mTypes: string[] = new Array<string>(table.size);
  const mSizes = new Float64Array(table.size);
  // In file order, so a repeated digest takes its last entry's values.
  for (let i = 0; i < manifestDigests.n; i++) {
    mTypes[index[i]!] = mediaTypes[i]!;
    mSizes[index[i]!] = sizes[i]!;
  }
  const manifests = new ManifestTable(table, mTypes, mSizes);
  const target = new Map<string, number>();
  for (let i = 0; i < tagNames.length; i++) {
    const other = tagDigests.others[i];
    const m = other === undefined ? table.indexOfWords(tagDigests.words, i * WORDS) : table.indexOf(other);
    if (m < 0) throw new BadFileError(`derrick.tags.${tagNames[i]}: points at ${tagDigests.digestAt(i)}, which is not in manifests`.slice(0, 200));
    target.set(tagNames[i]!, m); // a repeated tag keeps its place and takes the last value, as in JSON
  }
  const tags = new TagTable(target, table);
  const blobs = new DigestSet(blobDigests.table().table);
  return { tags, manifests, blobs };
}

/** Whether `raw` is at `at` in `buf` (in JS: a native compare per manifest cost more than it saved). */
function sameBytes(buf: Buffer, at: number, raw: Buffer): boolean {
  for (let k = raw.length - 1; k >= 0; k--) if (buf[at + k] !== raw[k]) return false;
  return true;
}

/** Bytes a tag may hold ([a-zA-Z0-9_.-]; isValidTag checks the rest). */
const TAG_CHAR = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-') TAG_CHAR[c.charCodeAt(0)] = 1;

/** `"sha256:<64 lowercase hex>"` at `at`, decoded into `out` at `o`; false for anything else. */
function sha256Raw(buf: Buffer, at: number, out: Uint32Array, o: number): boolean {
  for (let k = 0; k < SHA256.length; k++) if (buf[at + k] !== SHA256[k]) return false;
  if (buf[at + 72] !== QUOTE) return false;
  let p = at + SHA256.length;
  for (let w = 0; w < WORDS; w++) {
    let v = 0;
    for (let c = 0; c < 8; c++) {
      const h = HEX[buf[p++]!]!;
      if (h < 0) return false;
      v = (v << 4) | h; // int32 arithmetic; the Uint32Array store reads the bits unsigned
    }
    out[o + w] = v;
  }
  return true;
}
