// The compact in-memory form of one repo version: a few typed arrays instead of a string and an
// object per digest. A loaded repo lives in the LRU long enough to be promoted by the GC, so
// every object it holds is copied twice and traced at each major GC; 250 digest strings and 50
// manifest objects per repo were most of the cold path's GC time (issue 10). Strings are made
// only for what a request asks for, and kept once made (a hot repo makes each one once).
import type { ManifestEntry } from '../../shared/redirect-file.js';

/** A sha256 digest as 8 big-endian 32-bit words: 32 bytes, compared without a string. */
const WORDS = 8;
const SHA256_PREFIX = 'sha256:';
const SHA256_LENGTH = SHA256_PREFIX.length + 64;

/** Hex digit value of a char code, -1 for anything but [0-9a-f] (a digest is lowercase). */
export const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) HEX[97 + i] = 10 + i;

/** One digest's words for look-ups (the parse is not re-entrant, and neither is a look-up). */
const probe = new Uint32Array(WORDS);

/** Decodes "sha256:<64 lowercase hex>" into `out` at `at`; false for any other digest. */
export function sha256Words(digest: string, out: Uint32Array, at: number): boolean {
  if (digest.length !== SHA256_LENGTH || !digest.startsWith(SHA256_PREFIX)) return false;
  for (let w = 0; w < WORDS; w++) {
    let v = 0;
    for (let c = 0; c < 8; c++) {
      const code = digest.charCodeAt(SHA256_PREFIX.length + w * 8 + c);
      const h = code < 256 ? HEX[code]! : -1;
      if (h < 0) return false;
      v = v * 16 + h;
    }
    out[at + w] = v;
  }
  return true;
}

/** Orders two digests stored as words (a at `ai`, b at `bi`). */
export function compareWords(a: Uint32Array, ai: number, b: Uint32Array, bi: number): number {
  for (let w = 0; w < WORDS; w++) {
    const d = a[ai + w]! - b[bi + w]!;
    if (d !== 0) return d;
  }
  return 0;
}

const hexOf = (words: Uint32Array, at: number) => {
  let s = SHA256_PREFIX;
  for (let w = 0; w < WORDS; w++) s += words[at + w]!.toString(16).padStart(8, '0');
  return s;
};

/**
 * A sorted, duplicate-free set of digests, each with an index 0..size-1: sha256 ones as words
 * (binary search), then any other algorithm's as strings (rare: derrick's store is sha256).
 */
export class DigestTable {
  /** Strings made so far, by index. */
  private readonly made: Array<string | undefined> = [];
  constructor(
    /** WORDS per digest, sorted. */
    readonly words: Uint32Array,
    /** Digests of other algorithms, sorted. */
    readonly others: readonly string[] = [],
  ) {}

  get size(): number {
    return this.words.length / WORDS + this.others.length;
  }

  /** The digest's index, or -1. */
  indexOf(digest: string): number {
    if (sha256Words(digest, probe, 0)) return this.indexOfWords(probe, 0);
    const i = this.others.indexOf(digest);
    return i < 0 ? -1 : this.words.length / WORDS + i;
  }

  /** The index of the sha256 digest stored as words in `words` at `at`, or -1. */
  indexOfWords(words: Uint32Array, at: number): number {
    let lo = 0;
    let hi = this.words.length / WORDS - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const d = compareWords(this.words, mid * WORDS, words, at);
      if (d === 0) return mid;
      if (d < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  digestAt(i: number): string {
    const shas = this.words.length / WORDS;
    if (i >= shas) return this.others[i - shas]!;
    return (this.made[i] ??= hexOf(this.words, i * WORDS));
  }
}

/** A version's config and layer digests: what a blob redirect checks membership in. */
export class DigestSet implements ReadonlySet<string> {
  constructor(readonly table: DigestTable) {}
  get size() {
    return this.table.size;
  }
  has(digest: string): boolean {
    return this.table.indexOf(digest) >= 0;
  }
  *keys(): SetIterator<string> {
    for (let i = 0; i < this.table.size; i++) yield this.table.digestAt(i);
  }
  values() {
    return this.keys();
  }
  *entries(): SetIterator<[string, string]> {
    for (const d of this.keys()) yield [d, d];
  }
  [Symbol.iterator]() {
    return this.keys();
  }
  forEach(fn: (value: string, key: string, set: ReadonlySet<string>) => void, thisArg?: unknown): void {
    for (const d of this.keys()) fn.call(thisArg, d, d, this);
  }
}

/** A version's manifests: digest -> media type (interned), size, an index's children. */
export class ManifestTable implements ReadonlyMap<string, ManifestEntry> {
  private readonly made: Array<ManifestEntry | undefined> = [];
  constructor(
    readonly table: DigestTable,
    readonly mediaTypes: readonly string[],
    readonly sizes: Float64Array,
  ) {}
  /** An index's children by manifest index; most manifests have none. */
  private children: Array<ManifestEntry['children']> | undefined;
  /** Set once, by the parse, for the entries the schema checked. */
  setChildren(digest: string, children: ManifestEntry['children']): void {
    const i = this.table.indexOf(digest);
    if (i >= 0 && children) (this.children ??= [])[i] = children;
  }
  get size() {
    return this.table.size;
  }
  has(digest: string): boolean {
    return this.table.indexOf(digest) >= 0;
  }
  get(digest: string): ManifestEntry | undefined {
    const i = this.table.indexOf(digest);
    return i < 0 ? undefined : this.at(i);
  }
  at(i: number): ManifestEntry {
    let m = this.made[i];
    if (!m) {
      m = { mediaType: this.mediaTypes[i]!, size: this.sizes[i]! };
      const children = this.children?.[i];
      if (children) m.children = children;
      this.made[i] = m;
    }
    return m;
  }
  *entries(): MapIterator<[string, ManifestEntry]> {
    for (let i = 0; i < this.table.size; i++) yield [this.table.digestAt(i), this.at(i)];
  }
  *keys(): MapIterator<string> {
    for (let i = 0; i < this.table.size; i++) yield this.table.digestAt(i);
  }
  *values(): MapIterator<ManifestEntry> {
    for (let i = 0; i < this.table.size; i++) yield this.at(i);
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  forEach(fn: (value: ManifestEntry, key: string, map: ReadonlyMap<string, ManifestEntry>) => void, thisArg?: unknown): void {
    for (const [d, m] of this.entries()) fn.call(thisArg, m, d, this);
  }
}

/** Tags, sorted (tags/list pages them as they are), each pointing at a manifest's index. */
export class TagTable implements ReadonlyMap<string, string> {
  constructor(
    /** Sorted, unique; never changed (it is also the repo's sortedTags). */
    readonly sorted: string[],
    /** The manifest index of sorted[i]. */
    readonly target: Int32Array,
    readonly manifests: DigestTable,
  ) {}
  get size() {
    return this.sorted.length;
  }
  private find(tag: string): number {
    let lo = 0;
    let hi = this.sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const t = this.sorted[mid]!;
      if (t === tag) return mid;
      if (t < tag) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
  has(tag: string): boolean {
    return this.find(tag) >= 0;
  }
  get(tag: string): string | undefined {
    const i = this.find(tag);
    return i < 0 ? undefined : this.manifests.digestAt(this.target[i]!);
  }
  *entries(): MapIterator<[string, string]> {
    for (let i = 0; i < this.sorted.length; i++) yield [this.sorted[i]!, this.manifests.digestAt(this.target[i]!)];
  }
  *keys(): MapIterator<string> {
    yield* this.sorted;
  }
  *values(): MapIterator<string> {
    for (let i = 0; i < this.sorted.length; i++) yield this.manifests.digestAt(this.target[i]!);
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  forEach(fn: (value: string, key: string, map: ReadonlyMap<string, string>) => void, thisArg?: unknown): void {
    for (const [t, d] of this.entries()) fn.call(thisArg, d, t, this);
  }
}
