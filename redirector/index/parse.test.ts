// The loader's hand check of the big maps must refuse exactly what the schema refuses there.
import { describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { parseRedirectFile, RedirectFileError, type RedirectFile } from '../../shared/redirect-file.js';
import { encodeRedirectIndex, RedirectIndexMismatch } from '../../shared/redirect-index.js';
import { parseDerrickFile, parseDerrickIndex } from './parse.js';

const d1 = sha256Digest(Buffer.from('one'));
const d2 = sha256Digest(Buffer.from('two'));
const b1 = sha256Digest(Buffer.from('blob'));

function file(derrick: Record<string, unknown> = {}) {
  return {
    type: 'pulp-docker-redirect', version: 4, repository: 'a~b', 'repo-registry-id': 'a/b', url: 'master/a~b/m/', protected: false,
    schema2_data: [], manifest_list_data: [], manifest_list_amd64_tags: {},
    derrick: {
      version: 1, master: 'm', published: 'p',
      tags: { v1: d1, v2: d2 },
      manifests: { [d1]: { mediaType: MediaType.ociManifest, size: 10 }, [d2]: { mediaType: MediaType.ociIndex, size: 20, children: [{ digest: d1, platform: { os: 'linux', architecture: 'amd64' } }] } },
      blobs: { [b1]: 5 },
      referrers: {},
      ...derrick,
    },
  };
}

const both = (f: unknown) => {
  const text = JSON.stringify(f);
  let schema: unknown;
  let loader: unknown;
  try {
    parseRedirectFile(text);
  } catch (err) {
    schema = err;
  }
  try {
    parseDerrickFile(text, '/x/redirect.json', 'a~b');
  } catch (err) {
    loader = err;
  }
  return { schema, loader };
};

describe('parseDerrickFile', () => {
  it('reads a valid file as the schema does', () => {
    const f = file();
    const p = parseDerrickFile(JSON.stringify(f), '/x/m/redirect.json', 'a~b');
    expect(p.name).toBe('a/b');
    expect(Object.fromEntries(p.tags)).toEqual(f.derrick.tags);
    expect(Object.fromEntries(p.version.manifests)).toEqual(f.derrick.manifests);
    expect([...p.version.blobs]).toEqual([b1]);
    expect(p.version.dir).toBe('/x/m');
  });

  it.each([
    ['a tag pointing outside manifests', { tags: { v1: b1 } }],
    ['an invalid tag', { tags: { '-bad': d1 } }],
    ['a tag -> non-digest', { tags: { v1: 'sha256:xyz' } }],
    ['a manifest key that is not a digest', { manifests: { nope: { mediaType: 'x', size: 1 } }, tags: {} }],
    ['a manifest without a size', { manifests: { [d1]: { mediaType: 'x' } }, tags: {} }],
    ['a negative manifest size', { manifests: { [d1]: { mediaType: 'x', size: -1 } }, tags: {} }],
    ['an unknown manifest key', { manifests: { [d1]: { mediaType: 'x', size: 1, extra: true } }, tags: {} }],
    ['bad children', { manifests: { [d1]: { mediaType: 'x', size: 1, children: [{ digest: 'nope' }] } }, tags: {} }],
    ['a blob key that is not a digest', { blobs: { nope: 1 } }],
    ['a fractional blob size', { blobs: { [b1]: 1.5 } }],
    ['blobs as an array', { blobs: [] }],
    ['an unknown key in derrick data', { extra: 1 }],
  ])('refuses %s, as the schema does', (_name, patch) => {
    const { schema, loader } = both(file(patch));
    expect(schema).toBeInstanceOf(RedirectFileError);
    expect(loader).toBeInstanceOf(Error);
  });

  it('refuses a file whose name is not its key', () => {
    expect(() => parseDerrickFile(JSON.stringify(file()), '/x/redirect.json', 'other')).toThrow(/does not match the file name/);
  });
});

describe('parseDerrickIndex', () => {
  const serialized = (f: ReturnType<typeof file>) => {
    const json = Buffer.from(JSON.stringify(f));
    return { json, idx: encodeRedirectIndex(parseRedirectFile(json.toString()) as RedirectFile, json)! };
  };

  it('gives what parseDerrickFile gives for the same master', () => {
    const f = file({ referrers: { [d1]: [{ mediaType: MediaType.ociManifest, digest: d2, size: 20 }] } });
    const { json, idx } = serialized(f);
    const viaJson = parseDerrickFile(json, '/x/m/redirect.json', 'a~b');
    const viaIndex = parseDerrickIndex(idx, json, '/x/m/redirect.json', 'a~b');
    expect([viaIndex.name, viaIndex.protected, viaIndex.referrers]).toEqual([viaJson.name, viaJson.protected, viaJson.referrers]);
    expect(Object.fromEntries(viaIndex.tags)).toEqual(Object.fromEntries(viaJson.tags));
    expect(viaIndex.tags.sorted).toEqual(viaJson.tags.sorted);
    expect([...viaIndex.version.manifests]).toEqual([...viaJson.version.manifests]);
    expect([...viaIndex.version.blobs]).toEqual([...viaJson.version.blobs]);
    const { manifests: _m, blobs: _b, ...rest } = viaIndex.version;
    const { manifests: _jm, blobs: _jb, ...jsonRest } = viaJson.version;
    expect(rest).toEqual(jsonRest);
    expect(viaIndex.version.manifests.get(d2)?.children).toEqual(f.derrick.manifests[d2]!.children);
  });

  it('finds every tag by name, and no other, whatever the JSON\'s order (prefixes, integer-like names)', () => {
    const names = ['v1', 'v1.0', 'v1.0.1', 'v10', 'latest', '2', '10', 'a', 'Z', '_x', 'v1-rc'];
    const tags = Object.fromEntries(names.map((t, i) => [t, i % 2 ? d1 : d2]));
    const { json, idx } = serialized(file({ tags }));
    const p = parseDerrickIndex(idx, json, '/x/redirect.json', 'a~b');
    expect(p.tags.size).toBe(names.length);
    for (const t of names) {
      expect(p.tags.has(t), t).toBe(true);
      expect(p.tags.get(t), t).toBe(tags[t]);
    }
    for (const t of ['v', 'v1.', 'v1.0.2', 'v100', '1', '', 'z', 'latest0']) {
      expect(p.tags.has(t), t).toBe(false);
      expect(p.tags.get(t), t).toBeUndefined();
    }
    expect(p.tags.sorted).toEqual([...names].sort());
    expect([...p.tags.keys()]).toEqual([...names].sort());
  });

  it('refuses an index of another repo, as the JSON is refused', () => {
    const { json, idx } = serialized(file());
    expect(() => parseDerrickIndex(idx, json, '/x/redirect.json', 'other')).toThrow(/does not match the file name/);
  });

  it('refuses an index made from other JSON, so the caller parses the JSON', () => {
    const { idx } = serialized(file());
    const edited = Buffer.from(JSON.stringify(file({ blobs: {} })));
    expect(() => parseDerrickIndex(idx, edited, '/x/redirect.json', 'a~b')).toThrow(RedirectIndexMismatch);
  });
});
