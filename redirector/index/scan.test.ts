// The scanner replaces JSON.parse for derrick files: it must accept exactly the JSON that
// JSON.parse accepts, give the same values outside the big maps, and give the big maps' meaning
// (last key wins, any digest algorithm) in the compact form.
import { describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { BadFileError } from './app-entry.js';
import { parseDerrickFile } from './parse.js';
import { scanDerrickFile } from './scan.js';

const d1 = sha256Digest(Buffer.from('one'));
const d2 = sha256Digest(Buffer.from('two'));
const b1 = sha256Digest(Buffer.from('blob'));
const sha512 = `sha512:${'ab'.repeat(64)}`;

const file = (derrick: Record<string, unknown> = {}, top: Record<string, unknown> = {}) => ({
  type: 'pulp-docker-redirect', version: 4, repository: 'a~b', 'repo-registry-id': 'a/b', url: 'master/a~b/m/', protected: false,
  schema2_data: [d1, 'v1'], manifest_list_data: [], manifest_list_amd64_tags: { v2: [d1, 2] },
  derrick: {
    version: 1, master: 'm', published: 'p',
    tags: { v1: d1, v2: d2 },
    manifests: { [d1]: { mediaType: MediaType.ociManifest, size: 10 }, [d2]: { mediaType: MediaType.ociIndex, size: 20, children: [{ digest: d1 }] } },
    blobs: { [b1]: 5 },
    referrers: { [d1]: [{ mediaType: MediaType.ociManifest, digest: d2, size: 1e3, annotations: { 'a\u00e9\n"': 'x\\y' } }] },
    ...derrick,
  },
  ...top,
});

const scan = (text: string) => scanDerrickFile(Buffer.from(text));

describe('scanDerrickFile', () => {
  it('gives JSON.parse values outside the big maps, whatever the spacing and escapes', () => {
    const f = file({}, { extra: [1, -2.5e-3, 0, true, null, { deep: [[]] }], url: 'a\/b\u0041', note: '\u2603 \ud83d\ude00' });
    for (const text of [JSON.stringify(f), JSON.stringify(f, null, 3), JSON.stringify(f).replace(/"url":"[^"]*"/, '"url" :\t"a\\/b\\u0041"\r\n')]) {
      const { json, maps } = scan(text);
      const want = JSON.parse(text);
      want.derrick = { ...want.derrick, tags: {}, blobs: {}, manifests: { [d2]: want.derrick.manifests[d2] } };
      expect(json).toEqual(want);
      expect(Object.fromEntries(maps!.tags)).toEqual(f.derrick.tags);
      expect([...maps!.blobs]).toEqual([b1]);
    }
  });

  it('refuses every truncation of a file, and what JSON.parse refuses', () => {
    const text = JSON.stringify(file());
    for (let n = 0; n < text.length; n++) expect(() => scan(text.slice(0, n)), `first ${n} bytes`).toThrow(BadFileError);
    const good = JSON.stringify(file({}, { extra: 1 }));
    for (const to of [
      '"extra":01', '"extra":1.', '"extra":-', '"extra":NaN', '"extra":"a\tb"', '"extra":"\\x"', '"extra":"\\u12"', "'extra':1",
      '"extra":[1,]', '"extra":{"a":1,}', '"extra":tru', 'extra:1', '"extra":1 2', '"extra":+1', '"extra":.5',
    ]) {
      const bad = good.replace('"extra":1', to);
      expect(() => JSON.parse(bad), bad).toThrow();
      expect(() => scan(bad), to).toThrow(BadFileError);
    }
    expect(() => scan(good + ' x')).toThrow(/after the end/);
    expect(() => scan('\ufeff' + good)).toThrow(BadFileError);
    expect(() => scan(good.replace('"extra":1', `"extra":${'['.repeat(100)}${']'.repeat(100)}`))).toThrow(/nested too deeply/);
  });

  it('keeps the last of repeated keys, as JSON.parse does', () => {
    const text = JSON.stringify(file())
      .replace(`"tags":{`, `"tags":{"v2":"${d1}",`)
      .replace(`"blobs":{`, `"blobs":{"${b1}":7,`)
      .replace(`"manifests":{`, `"manifests":{"${d1}":{"mediaType":"old","size":1},`);
    const p = parseDerrickFile(text, '/x/m/redirect.json');
    expect(p.tags.get('v2')).toBe(d2);
    expect(p.tags.sorted).toEqual(['v1', 'v2']);
    expect(p.version.manifests.get(d1)).toEqual({ mediaType: MediaType.ociManifest, size: 10 });
    expect(p.version.manifests.size).toBe(2);
    expect([...p.version.blobs]).toEqual([b1]);
  });

  it('finds digests that share their first 32 bits (one hash slot), in file order', () => {
    const near = ['f', '0', '9', 'a', '0'].map((c, i) => `sha256:00000000${c.repeat(55)}${i}`);
    const blobs = Object.fromEntries([...near, b1].map((d, i) => [d, i]));
    const text = JSON.stringify(file({ blobs })).replace(`"blobs":{`, `"blobs":{"${near[2]}":9,`);
    const p = parseDerrickFile(text, '/x/m/redirect.json');
    expect([...p.version.blobs]).toEqual([near[2], near[0], near[1], near[3], near[4], b1]);
    for (const d of [...near, b1]) expect(p.version.blobs.has(d)).toBe(true);
    expect(p.version.blobs.has(`sha256:00000000${'f'.repeat(56)}`)).toBe(false);
  });

  it('keeps digests of other algorithms and escaped keys, and finds them', () => {
    const upper = `sha256:${'A'.repeat(64)}`;
    const f = file({
      tags: { v1: d1, v2: sha512, v3: upper },
      manifests: { [d1]: { mediaType: 'a', size: 1 }, [sha512]: { mediaType: 'b', size: 2 }, [upper]: { mediaType: 'c', size: 3 } },
      blobs: { [sha512]: 1, [b1]: 2 },
    });
    const text = JSON.stringify(f).replace('"v1":', '"v\\u0031":').replace('"mediaType":"b"', '"mediaType":"\\u0062"').replace(`"${b1}":`, `"sha256:\\u0031${b1.slice(8)}":`);
    const p = parseDerrickFile(text, '/x/m/redirect.json');
    const b1Escaped = `sha256:1${b1.slice(8)}`;
    expect(Object.fromEntries(p.tags)).toEqual({ v1: d1, v2: sha512, v3: upper });
    expect(p.version.manifests.get(upper)).toEqual({ mediaType: 'c', size: 3 });
    expect(p.version.manifests.get(sha512)).toEqual({ mediaType: 'b', size: 2 });
    // An escaped media type is decoded, and not remembered by its raw bytes.
    expect(parseDerrickFile(JSON.stringify(f), '/x/m/redirect.json').version.manifests.get(sha512)!.mediaType).toBe('b');
    expect(p.version.manifests.get(`sha256:${'a'.repeat(64)}`)).toBeUndefined();
    expect(p.version.blobs.has(sha512)).toBe(true);
    expect(p.version.blobs.has(b1Escaped)).toBe(true);
    expect(p.version.blobs.has(b1)).toBe(b1 === b1Escaped);
    expect(p.version.blobs.size).toBe(2);
  });

  it('names the first bad entry of a big map without reading past it', () => {
    const tags: Record<string, string> = { ok: d1 };
    for (let i = 0; i < 1000; i++) tags[`t${i}`] = 'x';
    expect(() => scan(JSON.stringify(file({ tags })))).toThrow('derrick.tags.t0: is not a tag -> digest');
    expect(() => scan(JSON.stringify(file({ tags: { v1: 5 } })))).toThrow('derrick.tags.v1: is not a tag -> digest');
    expect(() => scan(JSON.stringify(file({ manifests: { [d1]: { mediaType: 7, size: 1 } } })))).toThrow(`derrick.manifests.${d1}: needs a mediaType`);
    expect(() => scan(JSON.stringify(file({ blobs: { [b1]: '5' } })))).toThrow(`derrick.blobs.${b1}: is not a digest -> size`);
    expect(() => scan(JSON.stringify(file({ blobs: undefined })))).toThrow('derrick.blobs: is not an object');
  });
});
