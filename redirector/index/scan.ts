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

type Json = Record<string, unknown>;

export interface ScannedFile {
  /** The file's values, with derrick.tags and derrick.blobs empty and derrick.manifests holding only the entries with children. */
  json: Json;
  /** Present when the file has a derrick object. */
  maps?: { tags: TagTable; manifests: ManifestTable; blobs: DigestSet };
}

const WORDS = 8;
const MAX_DEPTH = 64;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
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

export function scanDerrickFile(buf: Buffer): ScannedFile {
  let pos = 0;
  let maps: ScannedFile['maps'];

  const fail = (what: string): never => {
    throw new BadFileError(`not valid JSON: ${what} at position ${pos}`);
  };
  const bad = (what: string): never => {
    throw new BadFileError(what.slice(0, 200));
  };
  const ws = () => {
    for (;;) {
      const c = buf[pos];
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) pos++;
      else return;
    }
  };
  const expect = (c: number) => {
    ws();
    if (buf[pos] !== c) fail(`expected '${String.fromCharCode(c)}'`);
    pos++;
  };
  /** After a member or an element: true when another follows (a ',' was read), false at `close`. */
  const more = (close: number) => {
    ws();
    const c = buf[pos];
    if (c === 0x2c) return (pos++, true);
    if (c === close) return (pos++, false);
    return fail(`expected ',' or '${String.fromCharCode(close)}'`);
  };
  /** Whether an object or array opened at `pos` is empty (and then consumes its end). */
  const empty = (close: number) => {
    ws();
    if (buf[pos] === close) return (pos++, true);
    return false;
  };

  const string = (): string => {
    ws();
    if (buf[pos] !== QUOTE) fail('expected a string');
    const start = ++pos;
    for (;;) {
      const c = buf[pos];
      if (c === undefined) fail('unterminated string');
      if (c === QUOTE) return buf.toString('utf8', start, pos++);
      if (c === BACKSLASH) return escaped(start);
      if (c! < 0x20) fail('control character in a string');
      pos++;
    }
  };
  /** The rest of a string that has escapes, from `start` (just after its quote). */
  const escaped = (start: number): string => {
    let out = buf.toString('utf8', start, pos);
    let from = pos;
    for (;;) {
      const c = buf[pos];
      if (c === undefined) fail('unterminated string');
      if (c === QUOTE) {
        out += buf.toString('utf8', from, pos++);
        return out;
      }
      if (c! < 0x20) fail('control character in a string');
      if (c !== BACKSLASH) {
        pos++;
        continue;
      }
      out += buf.toString('utf8', from, pos);
      const e = buf[pos + 1];
      pos += 2;
      if (e === 0x75) {
        let v = 0;
        for (let k = 0; k < 4; k++) {
          const h = hexDigit(buf[pos + k]);
          if (h < 0) fail('bad \\u escape');
          v = v * 16 + h;
        }
        out += String.fromCharCode(v);
        pos += 4;
      } else {
        const s = e === 0x22 ? '"' : e === 0x5c ? '\\' : e === 0x2f ? '/' : e === 0x62 ? '\b' : e === 0x66 ? '\f' : e === 0x6e ? '\n' : e === 0x72 ? '\r' : e === 0x74 ? '\t' : undefined;
        if (s === undefined) fail('bad escape');
        out += s;
      }
      from = pos;
    }
  };

  const digits = () => {
    const from = pos;
    while (buf[pos]! >= 0x30 && buf[pos]! <= 0x39) pos++;
    return pos - from;
  };
  const number = (): number => {
    ws();
    const start = pos;
    if (buf[pos] === 0x2d) pos++;
    if (buf[pos] === 0x30) pos++;
    else if (!digits()) fail('bad number');
    let plain = true;
    if (buf[pos] === 0x2e) {
      pos++;
      plain = false;
      if (!digits()) fail('bad number');
    }
    if (buf[pos] === 0x65 || buf[pos] === 0x45) {
      pos++;
      plain = false;
      if (buf[pos] === 0x2b || buf[pos] === 0x2d) pos++;
      if (!digits()) fail('bad number');
    }
    // Sizes are plain non-negative integers: no string for them.
    if (plain && buf[start] !== 0x2d && pos - start <= 15) {
      let v = 0;
      for (let k = start; k < pos; k++) v = v * 10 + buf[k]! - 0x30;
      return v;
    }
    return Number(buf.toString('latin1', start, pos));
  };
  const literal = (word: string, value: unknown) => {
    for (let k = 0; k < word.length; k++) if (buf[pos + k] !== word.charCodeAt(k)) fail('unexpected token');
    pos += word.length;
    return value;
  };

  const value = (depth: number): unknown => {
    ws();
    const c = buf[pos];
    if (c === QUOTE) return string();
    if (c === 0x7b) return object(depth + 1);
    if (c === 0x5b) return array(depth + 1);
    if (c === 0x74) return literal('true', true);
    if (c === 0x66) return literal('false', false);
    if (c === 0x6e) return literal('null', null);
    if (c === 0x2d || (c! >= 0x30 && c! <= 0x39)) return number();
    return fail(c === undefined ? 'unexpected end' : 'unexpected token');
  };
  const set = (o: Json, k: string, v: unknown) => {
    if (k === '__proto__') Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
    else o[k] = v;
  };
  const object = (depth: number, member?: (o: Json, key: string) => boolean): Json => {
    if (depth > MAX_DEPTH) fail('nested too deeply');
    const o: Json = {};
    pos++; // {
    if (empty(0x7d)) return o;
    do {
      const k = string();
      expect(0x3a);
      if (!member?.(o, k)) set(o, k, value(depth));
    } while (more(0x7d));
    return o;
  };
  const array = (depth: number): unknown[] => {
    if (depth > MAX_DEPTH) fail('nested too deeply');
    const a: unknown[] = [];
    pos++; // [
    if (empty(0x5d)) return a;
    do a.push(value(depth));
    while (more(0x5d));
    return a;
  };

  /** A digest string into `into`; a bad one is refused with `what`. */
  const digest = (into: Entries, what: () => string) => {
    ws();
    const i = into.add();
    if (sha256Raw(buf, pos, into.words, i * WORDS)) {
      pos += 73; // "sha256:<64 hex>"
      return;
    }
    const at = pos;
    if (buf[pos] !== QUOTE) bad(what());
    const s = string();
    if (!isDigestSyntax(s)) {
      pos = at;
      bad(what());
    }
    if (!sha256Words(s, into.words, i * WORDS)) into.others[i] = s;
  };
  const openMap = (key: string) => {
    ws();
    if (buf[pos] !== 0x7b) bad(`derrick.${key}: is not an object`);
    pos++;
    return !empty(0x7d);
  };
  const size = (what: () => string) => {
    ws();
    const c = buf[pos];
    if (c !== 0x2d && !(c! >= 0x30 && c! <= 0x39)) bad(what());
    const n = number();
    if (!Number.isInteger(n) || n < 0) bad(what());
    return n;
  };

  const tags = () => {
    tagDigests.reset();
    tagNames = [];
    if (!openMap('tags')) return;
    do {
      // Not a plain tag: decoded, it may still be one ("v\u0031").
      const t = tagName() ?? string();
      if (!isValidTag(t)) bad(`derrick.tags.${t}: is not a tag -> digest`);
      expect(0x3a);
      tagNames.push(t);
      digest(tagDigests, () => `derrick.tags.${t}: is not a tag -> digest`);
    } while (more(0x7d));
  };
  /** A key that is a valid tag with no escapes, or undefined (pos unchanged). */
  const tagName = (): string | undefined => {
    ws();
    if (buf[pos] !== QUOTE) return undefined;
    let k = pos + 1;
    while (TAG_CHAR[buf[k]!] === 1) k++;
    // TAG_RE (shared/oci.ts): 1-128 of these, not starting with '.' or '-'.
    const first = buf[pos + 1];
    if (buf[k] !== QUOTE || k === pos + 1 || k - pos - 1 > 128 || first === 0x2e || first === 0x2d) return undefined;
    const t = buf.toString('latin1', pos + 1, k);
    pos = k + 1;
    return t;
  };

  const manifests = (small: Json) => {
    manifestDigests.reset();
    mediaTypes = [];
    sizes = [];
    if (!openMap('manifests')) return;
    do {
      const at = manifestDigests.n;
      digest(manifestDigests, () => `derrick.manifests.${string()}: is not a digest -> manifest`);
      expect(0x3a);
      ws();
      if (buf[pos] !== 0x7b) bad(`derrick.manifests.${manifestDigests.digestAt(at)}: is not a digest -> manifest`);
      let mediaType: string | undefined;
      let sz: number | undefined;
      let kids: unknown;
      const entry = object(3, (_o, key) => {
        if (key === 'mediaType') {
          ws();
          mediaType = buf[pos] === QUOTE ? knownType() : undefined;
          if (mediaType === undefined) bad(`derrick.manifests.${manifestDigests.digestAt(at)}: needs a mediaType and a size`);
        } else if (key === 'size') {
          sz = size(() => `derrick.manifests.${manifestDigests.digestAt(at)}: needs a mediaType and a size`);
        } else if (key === 'children') {
          kids = value(3);
        } else {
          bad(`derrick.manifests.${manifestDigests.digestAt(at)}: unknown key "${key}"`);
        }
        return true;
      });
      void entry;
      if (mediaType === undefined || sz === undefined) bad(`derrick.manifests.${manifestDigests.digestAt(at)}: needs a mediaType and a size`);
      mediaTypes[at] = mediaType!;
      sizes[at] = sz!;
      // The schema checks the few entries with children whole (parse.ts).
      if (kids !== undefined) set(small, manifestDigests.digestAt(at), { mediaType, size: sz, children: kids });
    } while (more(0x7d));
  };
  /** A media type string, one copy per distinct value. */
  const knownType = (): string => {
    // A known type's raw bytes, quotes included, hold no backslash: a match is the whole token.
    const n = knownTypes.length;
    for (let j = 0; j < n; j++) {
      const t = knownTypes[(lastType + j) % n]!;
      if (sameBytes(buf, pos, t.raw)) {
        lastType = (lastType + j) % n;
        pos += t.raw.length;
        return t.value;
      }
    }
    const start = pos;
    const s = string();
    if (n < MAX_KNOWN_TYPES && !buf.subarray(start, pos).includes(BACKSLASH)) knownTypes.push({ raw: Buffer.from(buf.subarray(start, pos)), value: s });
    return s;
  };

  const blobs = () => {
    blobDigests.reset();
    if (!openMap('blobs')) return;
    do {
      const at = blobDigests.n;
      const what = () => `derrick.blobs.${blobDigests.digestAt(at)}: is not a digest -> size`;
      digest(blobDigests, () => `derrick.blobs.${string()}: is not a digest -> size`);
      expect(0x3a);
      size(what);
    } while (more(0x7d));
  };

  const derrick = (): Json => {
    ws();
    if (buf[pos] !== 0x7b) return value(1) as Json;
    const withChildren: Json = {};
    const seen = { tags: false, manifests: false, blobs: false };
    const d = object(2, (o, key) => {
      if (key === 'tags') tags();
      else if (key === 'manifests') manifests(withChildren);
      else if (key === 'blobs') blobs();
      else return false;
      seen[key] = true;
      return true;
    });
    for (const k of ['tags', 'manifests', 'blobs'] as const) if (!seen[k]) bad(`derrick.${k}: is not an object`);
    maps = build();
    d.tags = {};
    d.manifests = withChildren;
    d.blobs = {};
    return d;
  };

  ws();
  if (buf[pos] !== 0x7b) bad('not a derrick redirect file (no derrick data)');
  const json = object(1, (o, key) => {
    if (key !== 'derrick') return false;
    maps = undefined;
    o.derrick = derrick();
    return true;
  });
  ws();
  if (pos !== buf.length) fail('unexpected data after the end');
  return { json, maps };
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

const hexDigit = (c: number | undefined) => {
  if (c === undefined) return -1;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return HEX[c]!;
};

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
