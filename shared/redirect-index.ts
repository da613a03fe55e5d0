// redirect.idx: a master's redirect file as the redirector's tables, written by the publisher
// beside redirect.json (issue 10). A cold repo used to cost its first request a parse of the JSON
// (~350 us of CPU for 50 tags, and ~45 KB of garbage); with the index it costs a read, two CRCs
// and a few typed-array copies. redirect.json stays the file of record (crane reads it, verify
// checks it): the index names the JSON's size and CRC-32, and a reader that finds them different
// (a file edited or replaced in place) or the index damaged uses the JSON. An index is only as
// trusted as the JSON it was made from, which the publisher validated before writing either.
//
// Layout, little-endian (a big-endian reader ignores the index):
//   0  "DRKIDX1\n"          8  crc32 of bytes 12..end   12 JSON size   16 JSON crc32
//   20 manifests  24 blobs  28 tags  32 tag-name bytes  36 rest bytes  40 zero (8 bytes)
//   48 manifest digests (8 u32 words each, see digest-words.ts), blob digests,
//      manifest sizes (f64), manifest media types (u32, into rest.types), tag targets (u32, a
//      manifest's position), tag name lengths (u8), tag names (ASCII), rest (UTF-8 JSON). Tags
//      are sorted by name (the redirector looks them up by binary search, in place).
import os from 'node:os';
import { crc32 } from 'node:zlib';
import { sha256Words, WORDS_PER_DIGEST } from './digest-words.js';
import type { Descriptor } from './oci.js';
import type { ManifestEntry, RedirectFile } from './redirect-file.js';

const MAGIC = Buffer.from('DRKIDX1\n', 'latin1');
const HEADER = 48;
const DIGEST_BYTES = WORDS_PER_DIGEST * 4;

/** What the index holds beyond the tables: small, and JSON. */
interface Rest {
  name: string;
  protected: boolean;
  url: string;
  master: string;
  types: string[];
  children: Record<string, ManifestEntry['children']>;
  referrers: Record<string, Descriptor[]>;
}

/** One master's tables, as the redirector builds its compact form from them. */
export interface RedirectIndex {
  name: string;
  protected: boolean;
  url: string;
  master: string;
  /** Manifest i's digest is words [8i, 8i + 8). The typed arrays are views of the index's bytes. */
  manifestWords: Uint32Array;
  manifestSizes: Float64Array;
  manifestTypes: string[];
  blobWords: Uint32Array;
  /** Every tag name, sorted, concatenated; tag i ends at tagEnds[i]. */
  tagNames: string;
  tagEnds: Uint32Array;
  /** Tag i's manifest position. */
  tagTargets: Uint32Array;
  /** An index's children, by manifest digest (only the manifests that have them). */
  children: Record<string, ManifestEntry['children']>;
  referrers: Record<string, Descriptor[]>;
}

/**
 * The index of a derrick v4 file already checked by its schema, whose JSON text is `json`.
 * undefined when a digest is not sha256 (the tables hold sha256 only): the JSON serves alone.
 */
export function encodeRedirectIndex(file: RedirectFile, json: Buffer | string): Buffer | undefined {
  const d = file.derrick;
  if (!d) return undefined;
  const jsonBytes = typeof json === 'string' ? Buffer.from(json) : json;
  const manifests = Object.entries(d.manifests);
  const blobs = Object.keys(d.blobs);
  const tags = Object.entries(d.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const position = new Map(manifests.map(([digest], i) => [digest, i]));
  const types: string[] = [];
  const children: Rest['children'] = {};
  for (const [digest, m] of manifests) {
    if (!types.includes(m.mediaType)) types.push(m.mediaType);
    if (m.children) children[digest] = m.children;
  }
  const tagNames = Buffer.from(tags.map(([t]) => t).join(''), 'latin1');
  const rest: Rest = { name: file['repo-registry-id'], protected: file.protected, url: file.url, master: d.master, types, children, referrers: d.referrers };
  const restBytes = Buffer.from(JSON.stringify(rest));
  const nM = manifests.length;
  const nB = blobs.length;
  const nT = tags.length;
  const size = HEADER + (nM + nB) * DIGEST_BYTES + nM * 8 + nM * 4 + nT * 4 + nT + tagNames.length + restBytes.length;
  const out = Buffer.alloc(size);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(jsonBytes.length, 12);
  out.writeUInt32LE(crc32(jsonBytes), 16);
  [nM, nB, nT, tagNames.length, restBytes.length].forEach((n, i) => out.writeUInt32LE(n, 20 + i * 4));
  const words = new Uint32Array(WORDS_PER_DIGEST);
  let at = HEADER;
  for (const digest of [...manifests.map(([dg]) => dg), ...blobs]) {
    if (!sha256Words(digest, words, 0)) return undefined;
    for (const w of words) at = out.writeUInt32LE(w, at);
  }
  for (const [, m] of manifests) at = out.writeDoubleLE(m.size, at);
  for (const [, m] of manifests) at = out.writeUInt32LE(types.indexOf(m.mediaType), at);
  for (const [, digest] of tags) at = out.writeUInt32LE(position.get(digest)!, at);
  for (const [t] of tags) at = out.writeUInt8(t.length, at);
  at += tagNames.copy(out, at);
  restBytes.copy(out, at);
  out.writeUInt32LE(crc32(out.subarray(12)), 8);
  return out;
}

/** An index's tags as [name, manifest position], sorted by name (for checks and tools). */
export function indexTags(x: RedirectIndex): Array<[string, number]> {
  return Array.from(x.tagEnds, (end, i) => [x.tagNames.slice(i === 0 ? 0 : x.tagEnds[i - 1]!, end), x.tagTargets[i]!]);
}

/** Why an index was not used (the reader then parses the JSON). */
export class RedirectIndexMismatch extends Error {}

const LITTLE_ENDIAN = os.endianness() === 'LE';

/**
 * Reads an index against the JSON it must describe (`json`: redirect.json's bytes). Throws
 * RedirectIndexMismatch when it is damaged, of another format, or made from other JSON.
 */
export function decodeRedirectIndex(idx: Buffer, json: Buffer): RedirectIndex {
  const bad = (why: string): never => {
    throw new RedirectIndexMismatch(why);
  };
  if (!LITTLE_ENDIAN) bad('this machine is big-endian');
  if (idx.length < HEADER || !idx.subarray(0, 8).equals(MAGIC)) bad('not a redirect index (format 1)');
  if (crc32(idx.subarray(12)) !== idx.readUInt32LE(8)) bad('damaged (its CRC-32 does not match)');
  if (idx.readUInt32LE(12) !== json.length || idx.readUInt32LE(16) !== crc32(json)) bad('made from another redirect.json');
  const [nM, nB, nT, tagBytes, restBytes] = [20, 24, 28, 32, 36].map((o) => idx.readUInt32LE(o)) as [number, number, number, number, number];
  if (HEADER + (nM + nB) * DIGEST_BYTES + nM * 12 + nT * 5 + tagBytes + restBytes !== idx.length) bad('damaged (its sections do not add up)');
  // Typed arrays need aligned bytes; a read into node's shared pool may not be.
  const b = idx.byteOffset % 8 === 0 ? idx : Buffer.from(idx);
  let at = HEADER;
  const take = <T>(make: (buf: ArrayBufferLike, off: number, n: number) => T, bytes: number, n: number): T => {
    const v = make(b.buffer, b.byteOffset + at, n);
    at += bytes * n;
    return v;
  };
  const manifestWords = take((buf, o, n) => new Uint32Array(buf, o, n), 4, nM * WORDS_PER_DIGEST);
  const blobWords = take((buf, o, n) => new Uint32Array(buf, o, n), 4, nB * WORDS_PER_DIGEST);
  const manifestSizes = take((buf, o, n) => new Float64Array(buf, o, n), 8, nM);
  const typeOf = take((buf, o, n) => new Uint32Array(buf, o, n), 4, nM);
  const targets = take((buf, o, n) => new Uint32Array(buf, o, n), 4, nT);
  const lengths = take((buf, o, n) => new Uint8Array(buf, o, n), 1, nT);
  let rest: Rest;
  try {
    rest = JSON.parse(b.toString('utf8', at + tagBytes, at + tagBytes + restBytes)) as Rest;
  } catch {
    return bad('damaged (its JSON part does not parse)');
  }
  const manifestTypes = new Array<string>(nM);
  for (let i = 0; i < nM; i++) manifestTypes[i] = rest.types[typeOf[i]!] ?? bad('damaged (a media type out of range)');
  const tagNames = b.toString('latin1', at, at + tagBytes);
  const tagEnds = new Uint32Array(nT);
  for (let i = 0, end = 0; i < nT; i++) {
    if (targets[i]! >= nM) bad('damaged (a tag points past the manifests)');
    tagEnds[i] = end += lengths[i]!;
    if (i > 0 && !(compareNames(tagNames, tagEnds, i - 1) < 0)) bad('damaged (its tags are not sorted)');
  }
  const { name, url, master, children, referrers } = rest;
  return {
    name, protected: rest.protected, url, master, manifestWords, manifestSizes, manifestTypes, blobWords,
    tagNames, tagEnds, tagTargets: targets, children, referrers,
  };
}

/** Name i against name i + 1 of a concatenation (see compareRanges). */
function compareNames(names: string, ends: Uint32Array, i: number): number {
  return compareRanges(names, i === 0 ? 0 : ends[i - 1]!, ends[i]!, names, ends[i]!, ends[i + 1]!);
}

/**
 * a[aStart, aEnd) against b[bStart, bEnd) by UTF-16 code unit, as Array.prototype.sort orders
 * strings, without slicing either: the order the index's tags are in, and the one a lookup of a
 * tag among them (redirector/index/compact.ts) searches by.
 */
export function compareRanges(a: string, aStart: number, aEnd: number, b: string, bStart: number, bEnd: number): number {
  const aLen = aEnd - aStart;
  const bLen = bEnd - bStart;
  for (let k = 0; k < Math.min(aLen, bLen); k++) {
    const d = a.charCodeAt(aStart + k) - b.charCodeAt(bStart + k);
    if (d !== 0) return d;
  }
  return aLen - bLen;
}
