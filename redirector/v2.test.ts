import { describe, expect, it } from 'vitest';
import { parseV2Path } from './v2.js';

// The grammar parseV2Path implements, as the anchored regexes it replaced: the oracle.
const ORACLE: Array<[RegExp, string, boolean]> = [
  [/^\/v2\/(.+)\/blobs\/uploads(?:\/.*)?$/, 'upload', false],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, 'manifest', true],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, 'blob', true],
  [/^\/v2\/(.+)\/tags\/list$/, 'tags', false],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, 'referrers', true],
];

function oracle(path: string) {
  if (path === '/v2/' || path === '/v2') return { route: 'base' };
  if (path === '/v2/_catalog') return { route: 'catalog' };
  for (const [re, route, hasRef] of ORACLE) {
    const m = re.exec(path);
    if (m) return hasRef ? { route, name: m[1], ref: m[2] } : { route, name: m[1] };
  }
  return { route: 'unknown' };
}

describe('parseV2Path', () => {
  it('agrees with the regex grammar on every combination of awkward segments', () => {
    const parts = ['', 'a', 'library', 'blobs', 'manifests', 'tags', 'list', 'referrers', 'uploads', 'v2', 'constructor', 'toString', 'sha256:abc', '..', '%2f', 'x y'];
    const paths = new Set<string>(['/v2', '/v2/', '/v2/_catalog', '/v2//', '/', '', '/v3/a/blobs/x', 'v2/a/blobs/x']);
    for (const a of parts) {
      for (const b of parts) {
        for (const c of parts) {
          paths.add(`/v2/${a}/${b}/${c}`);
          paths.add(`/v2/${a}/${b}/${c}/`);
          for (const d of ['blobs', 'manifests', 'tags', 'uploads', 'list']) paths.add(`/v2/${a}/${d}/${b}/${c}`);
        }
        paths.add(`/v2/${a}/${b}`);
      }
    }
    let checked = 0;
    for (const p of paths) {
      expect(parseV2Path(p), p).toEqual(oracle(p));
      checked++;
    }
    expect(checked).toBeGreaterThan(20_000);
  });

  it('splits nested names at the last segments', () => {
    expect(parseV2Path('/v2/a/blobs/b/blobs/sha256:1')).toEqual({ route: 'blob', name: 'a/blobs/b', ref: 'sha256:1' });
    expect(parseV2Path('/v2/hub/library/alpine/manifests/3.20')).toEqual({ route: 'manifest', name: 'hub/library/alpine', ref: '3.20' });
    expect(parseV2Path('/v2/x/blobs/uploads/abc/def')).toEqual({ route: 'upload', name: 'x' });
    expect(parseV2Path('/v2/x/tags/other')).toEqual({ route: 'unknown' });
    // Only a whole "uploads" segment is the upload endpoint.
    expect(parseV2Path('/v2/x/blobs/uploadsx')).toEqual({ route: 'blob', name: 'x', ref: 'uploadsx' });
    expect(parseV2Path('/v2/x/blobs/uploads')).toEqual({ route: 'upload', name: 'x' });
  });
});
