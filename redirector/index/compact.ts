// The compact in-memory form of one repo version: a few typed arrays instead of a string and an
// object per digest. A loaded repo lives in the LRU long enough to be promoted by the GC, so
// every object it holds is copied twice and traced at each major GC; 250 digest strings and 50
// manifest objects per repo were most of the cold path's GC time (issue 10). Strings are made
// only for what a request asks for, and kept once made (a hot repo makes each one once).
import type { ManifestEntry } from '../../shared/redirect-file.js';
import { HEX, sha256Words, wordsToSha256, WORDS_PER_DIGEST as WORDS } from '../../shared/digest-words.js';
import { compareRanges } from '../../shared/redirect-index.js';

export { HEX, sha256Words };

/** One digest's words for look-ups (the parse is not re-entrant, and neither is a look-up). */
const probe = new Uint32Array(WORDS);

/** Orders two digests stored as words (a at `ai`, b at `bi`). */
export function compareWords(a: Uint32Array, ai: number, b: Uint32Array, bi: number): number {
  for (let w = 0; w < WORDS; w++) {
    const d = a[ai + w]! - b[bi + w]!;
    if (d !== 0) return d;
  }
  return 0;
}

const hexOf = wordsToSha256;

/**
 * A duplicate-free set of digests, each with an index 0..size-1: sha256 ones as words in file
 * order, found through an open-addressing hash on their first word (a digest is uniformly random,
 * so it is its own hash), then any other algorithm's as strings (rare: derrick's store is sha256).
 * No sort: building one costs a pass over the digests.
 */
export class DigestTable {
  /** Strings made so far, by index. */
  private readonly made: Array<string | undefined> = [];
  private constructor(
    /** WORDS per digest. */
    readonly words: Uint32Array,
    /** A power of two of slots, each 0 (empty) or 1 + a digest's index. */
    private readonly slots: Int32Array,
    /** Digests of other algorithms. */
    readonly others: readonly string[],
  ) {}

  /**
   * The table of `n` scanned digests: entry i's digest is `others[i]`, or else the words of
   * `words` at i * WORDS. Returns it with each entry's index in it: a repeated digest gets the
   * index of its first occurrence, so a later value overwrites an earlier one (JSON's last key wins).
   */
  static build(words: Uint32Array, others: ReadonlyArray<string | undefined>, n: number): { table: DigestTable; index: Int32Array } {
    let shaCount = 0;
    for (let i = 0; i < n; i++) if (others[i] === undefined) shaCount++;
    let size = 4;
    while (size < shaCount * 2) size *= 2;
    const table = new DigestTable(new Uint32Array(shaCount * WORDS), new Int32Array(size), []);
    const index = new Int32Array(n);
    let kept = 0;
    const otherList: string[] = [];
    for (let i = 0; i < n; i++) {
      if (others[i] !== undefined) continue;
      const at = table.indexOfWords(words, i * WORDS);
      if (at >= 0) {
        index[i] = at;
        continue;
      }
      for (let w = 0; w < WORDS; w++) table.words[kept * WORDS + w] = words[i * WORDS + w]!;
      table.insert(kept);
      index[i] = kept++;
    }
    for (let i = 0; i < n; i++) {
      const o = others[i];
      if (o === undefined) continue;
      let at = otherList.indexOf(o);
      if (at < 0) at = otherList.push(o) - 1;
      index[i] = shaCount + at;
    }
    if (kept === shaCount && otherList.length === 0) return { table, index };
    // Repeated digests (rare): the same table without the unused tail.
    const exact = new DigestTable(table.words.slice(0, kept * WORDS), table.slots, otherList);
    for (let i = 0; i < n; i++) if (index[i]! >= shaCount) index[i] = index[i]! - shaCount + kept;
    return { table: exact, index };
  }

  private insert(i: number): void {
    const mask = this.slots.length - 1;
    let s = this.words[i * WORDS]! & mask;
    while (this.slots[s] !== 0) s = (s + 1) & mask;
    this.slots[s] = i + 1;
  }

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
    const mask = this.slots.length - 1;
    for (let s = words[at]! & mask; ; s = (s + 1) & mask) {
      const e = this.slots[s]!;
      if (e === 0) return -1;
      if (compareWords(this.words, (e - 1) * WORDS, words, at) === 0) return e - 1;
    }
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

/** Tags, each pointing at a manifest's index; sorted only when a tags/list asks. */
export class TagTable implements Tags {
  private sortedNames: string[] | undefined;
  constructor(
    /** Tag -> manifest index, in file order. */
    private readonly target: Map<string, number>,
    readonly manifests: DigestTable,
  ) {}
  get size() {
    return this.target.size;
  }
  /** Sorted, and never changed (it is also the repo's sortedTags). */
  get sorted(): string[] {
    return (this.sortedNames ??= [...this.target.keys()].sort());
  }
  has(tag: string): boolean {
    return this.target.has(tag);
  }
  get(tag: string): string | undefined {
    const i = this.target.get(tag);
    return i === undefined ? undefined : this.manifests.digestAt(i);
  }
  *entries(): MapIterator<[string, string]> {
    for (const [t, i] of this.target) yield [t, this.manifests.digestAt(i)];
  }
  keys(): MapIterator<string> {
    return this.target.keys();
  }
  *values(): MapIterator<string> {
    for (const i of this.target.values()) yield this.manifests.digestAt(i);
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  forEach(fn: (value: string, key: string, map: ReadonlyMap<string, string>) => void, thisArg?: unknown): void {
    for (const [t, d] of this.entries()) fn.call(thisArg, d, t, this);
  }
}

/** What a repo version's tags are: tag -> digest, and the names sorted (for tags/list). */
export interface Tags extends ReadonlyMap<string, string> {
  /** Sorted, and never changed (it is also the repo's sortedTags). */
  readonly sorted: string[];
}

/**
 * Tags read from a redirect index (shared/redirect-index.ts), which stores them sorted: every
 * name in one string, found by binary search. A loaded repo then holds three objects for its
 * tags instead of a Map and a string per tag, which a young-generation GC copied for each cold
 * repo (issue 10); a name becomes a string only when something lists the tags.
 */
export class PackedTagTable implements Tags {
  private sortedNames: string[] | undefined;
  constructor(
    /** The names, sorted, concatenated. */
    private readonly names: string,
    /** Where name i ends in `names` (it starts where name i - 1 ends). */
    private readonly ends: Uint32Array,
    /** Name i's manifest, as an index into `manifests`. */
    private readonly targets: Int32Array,
    readonly manifests: DigestTable,
  ) {}
  get size() {
    return this.ends.length;
  }
  get sorted(): string[] {
    return (this.sortedNames ??= Array.from({ length: this.size }, (_, i) => this.nameAt(i)));
  }
  private nameAt(i: number): string {
    return this.names.slice(i === 0 ? 0 : this.ends[i - 1]!, this.ends[i]!);
  }
  /** Name i compared with `tag` as the sort compares strings. */
  private compareAt(i: number, tag: string): number {
    return compareRanges(this.names, i === 0 ? 0 : this.ends[i - 1]!, this.ends[i]!, tag, 0, tag.length);
  }
  private find(tag: string): number {
    let lo = 0;
    let hi = this.size - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.compareAt(mid, tag);
      if (c === 0) return mid;
      if (c < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }
  has(tag: string): boolean {
    return this.find(tag) >= 0;
  }
  get(tag: string): string | undefined {
    const i = this.find(tag);
    return i < 0 ? undefined : this.manifests.digestAt(this.targets[i]!);
  }
  *entries(): MapIterator<[string, string]> {
    for (let i = 0; i < this.size; i++) yield [this.nameAt(i), this.manifests.digestAt(this.targets[i]!)];
  }
  *keys(): MapIterator<string> {
    for (let i = 0; i < this.size; i++) yield this.nameAt(i);
  }
  *values(): MapIterator<string> {
    for (let i = 0; i < this.size; i++) yield this.manifests.digestAt(this.targets[i]!);
  }
  [Symbol.iterator]() {
    return this.entries();
  }
  forEach(fn: (value: string, key: string, map: ReadonlyMap<string, string>) => void, thisArg?: unknown): void {
    for (const [t, d] of this.entries()) fn.call(thisArg, d, t, this);
  }
}
