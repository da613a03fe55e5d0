// redirect.idx: what the publisher writes must read back as the JSON it was made from, and any
// sign that it is not (damage, another JSON, another format) must be refused, never half-used.
import { describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from './oci.js';
import { parseRedirectFile, serializeRedirectFile, type RedirectFile } from './redirect-file.js';
import { decodeRedirectIndex, encodeRedirectIndex, indexTags, RedirectIndexMismatch } from './redirect-index.js';
import { crc32 } from 'node:zlib';
import { wordsToSha256 } from './digest-words.js';

const dg = (s: string) => sha256Digest(Buffer.from(s));
const [m1, m2, m3, b1, b2] = ['m1', 'm2', 'm3', 'b1', 'b2'].map(dg) as [string, string, string, string, string];

function file(): RedirectFile {
  return parseRedirectFile(JSON.stringify({
    type: 'pulp-docker-redirect', version: 4, repository: 'a~b', 'repo-registry-id': 'a/b', url: 'master/a~b/M/', protected: true,
    schema2_data: [], manifest_list_data: [], manifest_list_amd64_tags: {},
    derrick: {
      version: 1, master: 'M', published: 'P',
      // "10" and "2" are integer-like: JSON objects put them first, and so must the index.
      tags: { latest: m1, '10': m2, '2': m3, 'v1.0-rc_1': m1 },
      manifests: {
        [m1]: { mediaType: MediaType.ociManifest, size: 1234 },
        [m2]: { mediaType: MediaType.ociIndex, size: 99, children: [{ digest: m1, platform: { os: 'linux', architecture: 'amd64' } }] },
        [m3]: { mediaType: MediaType.dockerManifest, size: 0 },
      },
      blobs: { [b1]: 5, [b2]: 2 ** 40 },
      referrers: { [m1]: [{ mediaType: MediaType.ociManifest, digest: m3, size: 0, artifactType: 'application/x-sig', annotations: { a: 'é' } }] },
    },
  })) as RedirectFile;
}

const encoded = () => {
  const f = file();
  const json = Buffer.from(serializeRedirectFile(f));
  return { f, json, idx: encodeRedirectIndex(f, json)! };
};

describe('redirect index', () => {
  it('reads back as the JSON it was made from', () => {
    const { f, json, idx } = encoded();
    const x = decodeRedirectIndex(idx, json);
    const d = f.derrick!;
    expect([x.name, x.protected, x.url, x.master]).toEqual(['a/b', true, 'master/a~b/M/', 'M']);
    const manifests = Object.keys(d.manifests);
    expect(manifests.map((_, i) => wordsToSha256(x.manifestWords, i * 8))).toEqual(manifests);
    expect([...x.manifestSizes]).toEqual(Object.values(d.manifests).map((m) => m.size));
    expect(x.manifestTypes).toEqual(Object.values(d.manifests).map((m) => m.mediaType));
    expect(Object.keys(d.blobs).map((_, i) => wordsToSha256(x.blobWords, i * 8))).toEqual(Object.keys(d.blobs));
    // Sorted by name (code unit order), whatever the JSON's order.
    const sorted = Object.entries(d.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    expect(sorted.map(([t]) => t)).toEqual(['10', '2', 'latest', 'v1.0-rc_1']);
    expect(indexTags(x).map(([t, i]) => [t, manifests[i]])).toEqual(sorted);
    expect(x.children).toEqual({ [m2]: d.manifests[m2]!.children });
    expect(x.referrers).toEqual(d.referrers);
  });

  it('reads from an unaligned buffer (a slice of node\'s pool)', () => {
    const { json, idx } = encoded();
    const unaligned = Buffer.concat([Buffer.from('x'), idx]).subarray(1);
    expect(unaligned.byteOffset % 8).not.toBe(0);
    expect(decodeRedirectIndex(unaligned, json).name).toBe('a/b');
  });

  it('is refused when made from another redirect.json', () => {
    const { json, idx } = encoded();
    const edited = Buffer.from(json.toString().replace('"size": 1234', '"size": 1235'));
    expect(edited.length).toBe(json.length);
    expect(() => decodeRedirectIndex(idx, edited)).toThrow(/made from another redirect.json/);
    expect(() => decodeRedirectIndex(idx, Buffer.concat([json, Buffer.from(' ')]))).toThrow(RedirectIndexMismatch);
  });

  it('is refused when any byte of it is damaged, or it is cut short', () => {
    const { json, idx } = encoded();
    for (let at = 0; at < idx.length; at += 7) {
      const bad = Buffer.from(idx);
      bad[at]! ^= 0x20;
      expect(() => decodeRedirectIndex(bad, json), `byte ${at}`).toThrow(RedirectIndexMismatch);
    }
    for (const n of [0, 10, 47, 48, idx.length - 1]) expect(() => decodeRedirectIndex(idx.subarray(0, n), json)).toThrow(RedirectIndexMismatch);
  });

  it('is refused when its tags are not sorted (a lookup by binary search would miss one)', () => {
    const f = file();
    f.derrick!.tags = { aa: m1, ab: m2 };
    const json = Buffer.from(serializeRedirectFile(f));
    const idx = encodeRedirectIndex(f, json)!;
    const at = idx.indexOf('aaab', 48, 'latin1');
    expect(at).toBeGreaterThan(0);
    const swapped = Buffer.from(idx);
    swapped.write('abaa', at, 'latin1');
    swapped.writeUInt32LE(crc32(swapped.subarray(12)), 8); // a well-formed index, but unsorted
    expect(() => decodeRedirectIndex(swapped, json)).toThrow(/tags are not sorted/);
    const repeated = Buffer.from(idx);
    repeated.write('aaaa', at, 'latin1');
    repeated.writeUInt32LE(crc32(repeated.subarray(12)), 8);
    expect(() => decodeRedirectIndex(repeated, json)).toThrow(/tags are not sorted/);
  });

  it('is not written for a digest that is not sha256 (the JSON serves alone)', () => {
    const f = file();
    const other = `sha512:${'a'.repeat(128)}`;
    f.derrick!.blobs[other] = 1;
    expect(encodeRedirectIndex(f, serializeRedirectFile(f))).toBeUndefined();
  });
});
