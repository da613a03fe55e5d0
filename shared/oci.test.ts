import { describe, expect, it } from 'vitest';
import { amd64Child, isDigestSyntax, isSha256Digest, isValidName, isValidTag, MediaType, parseManifest, parseReferrerTag, referrerTagsOf, sha256Digest } from './oci.js';

describe('grammars', () => {
  it.each(['a', 'library/alpine', 'a.b/c_d/e__f/g-h', 'x--y', 'a'.repeat(255)])('valid name %s', (n) => expect(isValidName(n)).toBe(true));
  it.each(['', 'A', '../x', 'a/../b', 'a//b', '/a', 'a/', 'a%2fb', '.a', 'a_', 'a___b', 'a'.repeat(256)])('invalid name %j', (n) =>
    expect(isValidName(n)).toBe(false),
  );
  it.each(['latest', 'v1.2.3', '_x', 'A-b.c_d', 'x'.repeat(128)])('valid tag %s', (t) => expect(isValidTag(t)).toBe(true));
  it.each(['', '-x', '.x', 'a/b', 'x'.repeat(129), 'a:b'])('invalid tag %j', (t) => expect(isValidTag(t)).toBe(false));
  it('digests', () => {
    const d = sha256Digest('hello');
    expect(isSha256Digest(d)).toBe(true);
    expect(isDigestSyntax('sha512:abc')).toBe(true);
    expect(isSha256Digest('sha256:ABC')).toBe(false);
    expect(isDigestSyntax('sha256:..%2f')).toBe(false);
    expect(isDigestSyntax('nocolon')).toBe(false);
  });
});

describe('parseManifest', () => {
  it('reads an image manifest: config and layers are its blobs', () => {
    const m = parseManifest(
      Buffer.from(JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: sha256Digest('c'), size: 1 },
        layers: [{ mediaType: MediaType.ociLayerGzip, digest: sha256Digest('l'), size: 2 }],
        subject: { mediaType: MediaType.ociManifest, digest: sha256Digest('s'), size: 3 },
      })),
    );
    expect(m.blobs.map((b) => b.digest)).toEqual([sha256Digest('c'), sha256Digest('l')]);
    expect(m.subject?.digest).toBe(sha256Digest('s'));
    expect(m.artifactType).toBe(MediaType.ociConfig);
  });

  it('reads an index without a mediaType field, and finds linux/amd64', () => {
    const children = [
      { mediaType: MediaType.ociManifest, digest: sha256Digest('arm'), size: 1, platform: { os: 'linux', architecture: 'arm64' } },
      { mediaType: MediaType.ociManifest, digest: sha256Digest('amd'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
    ];
    const m = parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: children })));
    expect(m.mediaType).toBe(MediaType.ociIndex);
    expect(amd64Child(m.manifests)?.digest).toBe(sha256Digest('amd'));
  });

  it('rejects garbage, unknown types and malformed descriptors', () => {
    expect(() => parseManifest(Buffer.from('not json'))).toThrow(/not valid JSON/);
    expect(() => parseManifest(Buffer.from(JSON.stringify({ mediaType: 'application/x-foo' })))).toThrow(/unsupported/);
    expect(() => parseManifest(Buffer.from(JSON.stringify({ mediaType: MediaType.ociManifest, config: { digest: '../x', size: 1 } })))).toThrow(/malformed/);
  });
});

describe('referrer tags', () => {
  const d = sha256Digest('image');
  const hex = d.slice(7);

  it('names the tag schema index and cosign tags of a digest, and reads the subject back', () => {
    expect(referrerTagsOf(d)).toEqual([`sha256-${hex}`, `sha256-${hex}.sig`, `sha256-${hex}.att`, `sha256-${hex}.sbom`]);
    expect(referrerTagsOf(d).map(parseReferrerTag)).toEqual([
      { subject: d, kind: 'index' }, { subject: d, kind: 'sig' }, { subject: d, kind: 'att' }, { subject: d, kind: 'sbom' },
    ]);
    for (const t of referrerTagsOf(d)) expect(isValidTag(t)).toBe(true);
  });

  it.each(['v1', `sha256-${hex.slice(1)}`, `sha256-${hex}.sig2`, `sha256-${hex.toUpperCase()}.sig`, `sha512-${hex}`, `sha256-${hex}.sig.sig`])(
    'an ordinary tag: %s', (t) => expect(parseReferrerTag(t)).toBeUndefined(),
  );

  it('has none for a digest it cannot verify', () => expect(referrerTagsOf('sha512:' + 'a'.repeat(128))).toEqual([]));
});
