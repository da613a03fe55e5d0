import { describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from './oci.js';
import { parseRedirectFile, RedirectFileError, serializeRedirectFile, type RedirectFile } from './redirect-file.js';

const m = sha256Digest('manifest');
const b = sha256Digest('blob');

function file(): RedirectFile {
  return {
    type: 'pulp-docker-redirect',
    version: 4,
    repository: 'demo~hello',
    'repo-registry-id': 'demo/hello',
    url: 'master/demo~hello/20260101T000000.000Z-000/',
    protected: false,
    schema2_data: [],
    manifest_list_data: [],
    manifest_list_amd64_tags: {},
    derrick: {
      version: 1,
      master: '20260101T000000.000Z-000',
      published: '2026-01-01T00:00:00.000Z',
      tags: { latest: m },
      manifests: { [m]: { mediaType: MediaType.ociManifest, size: 10 } },
      blobs: { [b]: 5 },
      referrers: {},
    },
  };
}

describe('redirect file', () => {
  it('round-trips through serialize and parse', () => {
    expect(parseRedirectFile(serializeRedirectFile(file()))).toEqual(file());
  });

  it('refuses to write a tag that points outside the manifests', () => {
    const f = file();
    f.derrick!.tags.other = sha256Digest('nowhere');
    expect(() => serializeRedirectFile(f)).toThrow(/derrick\.tags\.other: points at/);
  });

  it('names the bad key when parsing', () => {
    const f = JSON.parse(serializeRedirectFile(file()));
    f['repo-registry-id'] = 'Bad/Name';
    expect(() => parseRedirectFile(JSON.stringify(f))).toThrow(RedirectFileError);
    expect(() => parseRedirectFile(JSON.stringify(f))).toThrow(/repo-registry-id/);
  });

  it('reads crane v1-v3 and rejects other versions and garbage', () => {
    expect(parseRedirectFile('{"repository":"r","repo-registry-id":"a/b","url":"http://x/","version":2}').version).toBe(2);
    expect(parseRedirectFile('{"repository":"r","repo-registry-id":"a/b","url":"http://x/","version":3,"schema2_data":["t"]}').version).toBe(3);
    expect(parseRedirectFile('{"repository":"r","repo-registry-id":"a/b","url":"u","version":1,"images":[{"id":"x"}],"tags":{"t":"x"}}').version).toBe(1);
    expect(() => parseRedirectFile('{"version":-1}')).toThrow(/version -1 is not supported/);
    expect(() => parseRedirectFile('{"trunc')).toThrow(/not valid JSON/);
  });
});
