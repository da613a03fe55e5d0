// Table-driven status and header checks for every endpoint of `derrick serve`, against a real
// published tree and a real listening server (raw paths, so traversal reaches the server as sent).
import fs from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/log.js';
import { MediaType, sha256Digest } from '../shared/oci.js';
import { layout } from '../shared/layout.js';
import { startServer, type RunningServer } from '../redirector/serve.js';
import { makeHtpasswd } from './helpers/registry.js';
import { rawRequest } from './helpers/http.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const ALL = [MediaType.ociIndex, MediaType.ociManifest, MediaType.dockerManifestList, MediaType.dockerManifest].join(', ');
const SINGLE = [MediaType.ociManifest, MediaType.dockerManifest].join(', ');

let tmp: TmpDir;
let tree: PublishedTree;
let server: RunningServer;
let url: string;
const auth = 'Basic ' + Buffer.from('alice:s3cret').toString('base64');
/** The path and query of an absolute Location, to request it on the same server. */
const pathOf = (location: string) => {
  const u = new URL(location);
  return u.pathname + u.search;
};

beforeAll(async () => {
  tmp = await tmpDir('derrick-serve-api');
  await fs.writeFile(path.join(tmp.dir, 'htpasswd'), makeHtpasswd('alice', 's3cret') + '\n');
  process.env.DERRICK_TEST_SECRET = 'test-secret';
  tree = await makePublishedTree(
    tmp.dir,
    [
      {
        name: 'demo/hello',
        images: [
          { tag: 'v1', layers: [2048, 300_000] },
          { tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'] },
          { tag: 'dmulti', format: 'docker', platforms: ['linux/arm64', 'linux/amd64'] },
          ...Array.from({ length: 5 }, (_, i) => ({ tag: `t${i}`, layers: [100] })),
        ],
      },
      { name: 'other', images: [{ tag: 'latest' }] },
      { name: 'secret/repo', protected: true, images: [{ tag: 'latest' }] },
    ],
    ['serve:', '  htpasswd: ./htpasswd'].join('\n'),
  );
  server = await startServer(tree.config, { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
  url = server.url;
});

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

const img = (ref: string) => tree.images.get(ref)!;

interface Case {
  name: string;
  method?: string;
  path: string | (() => string);
  headers?: Record<string, string>;
  status: number;
  code?: string;
  expect?: (r: Awaited<ReturnType<typeof rawRequest>>) => void;
}

const cases: Case[] = [
  { name: 'base', path: '/v2/', status: 200, expect: (r) => expect(r.json()).toEqual({}) },
  { name: 'base HEAD', method: 'HEAD', path: '/v2/', status: 200 },
  {
    name: 'manifest by tag, inline',
    path: '/v2/demo/hello/manifests/v1',
    headers: { Accept: ALL },
    status: 200,
    expect: (r) => {
      expect(r.headers['content-type']).toBe(MediaType.ociManifest);
      expect(r.headers['docker-content-digest']).toBe(img('demo/hello:v1').digest);
      expect(sha256Digest(r.body)).toBe(img('demo/hello:v1').digest);
      expect(r.headers['content-length']).toBe(String(r.body.length));
      expect(r.headers.etag).toBe(`"${img('demo/hello:v1').digest}"`);
      expect(r.headers['cache-control']).toMatch(/max-age=30\b/);
    },
  },
  {
    name: 'manifest HEAD by tag',
    method: 'HEAD',
    path: '/v2/demo/hello/manifests/v1',
    status: 200,
    expect: (r) => {
      expect(r.body.length).toBe(0);
      expect(r.headers['docker-content-digest']).toBe(img('demo/hello:v1').digest);
      expect(Number(r.headers['content-length'])).toBe(img('demo/hello:v1').size);
    },
  },
  {
    name: 'manifest by digest is immutable',
    path: () => `/v2/demo/hello/manifests/${img('demo/hello:v1').digest}`,
    status: 200,
    expect: (r) => expect(r.headers['cache-control']).toContain('immutable'),
  },
  {
    name: 'If-None-Match gives 304',
    path: '/v2/demo/hello/manifests/v1',
    headers: { 'If-None-Match': '"placeholder"' },
    status: 304,
  },
  {
    name: 'index served to a client that accepts it',
    path: '/v2/demo/hello/manifests/multi',
    headers: { Accept: ALL },
    status: 200,
    expect: (r) => {
      expect(r.headers['content-type']).toBe(MediaType.ociIndex);
      expect(r.headers['docker-content-digest']).toBe(img('demo/hello:multi').digest);
    },
  },
  {
    name: 'amd64 fallback for a single-manifest client (OCI index)',
    path: '/v2/demo/hello/manifests/multi',
    headers: { Accept: SINGLE },
    status: 200,
    expect: (r) => {
      const amd64 = img('demo/hello:multi').manifests.find((m) => m.platform === 'linux/amd64')!;
      expect(r.headers['docker-content-digest']).toBe(amd64.digest);
      expect(sha256Digest(r.body)).toBe(amd64.digest);
    },
  },
  {
    name: 'amd64 fallback for a docker schema2-only client (manifest list)',
    path: '/v2/demo/hello/manifests/dmulti',
    headers: { Accept: MediaType.dockerManifest },
    status: 200,
    expect: (r) => {
      const amd64 = img('demo/hello:dmulti').manifests.find((m) => m.platform === 'linux/amd64')!;
      expect(r.headers['content-type']).toBe(MediaType.dockerManifest);
      expect(r.headers['docker-content-digest']).toBe(amd64.digest);
    },
  },
  { name: 'no Accept gets the stored manifest', path: '/v2/demo/hello/manifests/multi', status: 200, expect: (r) => expect(r.headers['content-type']).toBe(MediaType.ociIndex) },
  { name: 'unknown tag', path: '/v2/demo/hello/manifests/nope', status: 404, code: 'MANIFEST_UNKNOWN' },
  // An unknown name answers an anonymous caller like a protected one, so protected names can't be discovered.
  { name: 'unknown repo', path: '/v2/no/such/manifests/v1', status: 401, code: 'UNAUTHORIZED' },
  { name: 'unknown repo with credentials', path: '/v2/no/such/manifests/v1', headers: { Authorization: auth }, status: 404, code: 'NAME_UNKNOWN' },
  { name: 'bad digest in manifest ref', path: '/v2/demo/hello/manifests/sha256:totallywrong!', status: 400, code: 'DIGEST_INVALID' },
  { name: 'unknown digest', path: `/v2/demo/hello/manifests/sha256:${'0'.repeat(64)}`, status: 404, code: 'MANIFEST_UNKNOWN' },
  {
    name: 'blob redirect (307) to the embedded server',
    path: () => `/v2/demo/hello/blobs/${img('demo/hello:v1').blobs[1]}`,
    status: 307,
    expect: (r) => {
      // Absolute, on the Host the request named (issue 9: some clients mis-resolve a relative one).
      expect(r.headers.location).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/published\/master\/demo~hello\/\d{8}T\d{6}\.\d{3}Z-\d{3}\/blobs\/sha256:/);
    },
  },
  { name: 'blob HEAD redirects too', method: 'HEAD', path: () => `/v2/demo/hello/blobs/${img('demo/hello:v1').blobs[0]}`, status: 307 },
  { name: 'blob of another repo is unknown here', path: () => `/v2/other/blobs/${img('demo/hello:v1').blobs[1]}`, status: 404, code: 'BLOB_UNKNOWN' },
  { name: 'bad blob digest', path: '/v2/demo/hello/blobs/sha256:xyz!', status: 400, code: 'DIGEST_INVALID' },
  { name: 'blob digest with no algorithm', path: '/v2/demo/hello/blobs/notadigest', status: 400, code: 'DIGEST_INVALID' },
  {
    name: 'tags/list',
    path: '/v2/demo/hello/tags/list',
    status: 200,
    expect: (r) => expect(r.json()).toEqual({ name: 'demo/hello', tags: ['dmulti', 'multi', 't0', 't1', 't2', 't3', 't4', 'v1'] }),
  },
  {
    name: 'tags/list first page with Link',
    path: '/v2/demo/hello/tags/list?n=3',
    status: 200,
    expect: (r) => {
      expect(r.json().tags).toEqual(['dmulti', 'multi', 't0']);
      expect(r.headers.link).toBe('</v2/demo/hello/tags/list?last=t0&n=3>; rel="next"');
    },
  },
  {
    name: 'tags/list following the Link',
    path: '/v2/demo/hello/tags/list?last=t0&n=3',
    status: 200,
    expect: (r) => {
      expect(r.json().tags).toEqual(['t1', 't2', 't3']);
      expect(r.headers.link).toContain('last=t3');
    },
  },
  { name: 'tags/list last page has no Link', path: '/v2/demo/hello/tags/list?last=t3&n=3', status: 200, expect: (r) => { expect(r.json().tags).toEqual(['t4', 'v1']); expect(r.headers.link).toBeUndefined(); } },
  { name: 'tags/list n=0', path: '/v2/demo/hello/tags/list?n=0', status: 200, expect: (r) => { expect(r.json().tags).toEqual([]); expect(r.headers.link).toBeUndefined(); } },
  { name: 'tags/list n=-1', path: '/v2/demo/hello/tags/list?n=-1', status: 400, code: 'PAGINATION_NUMBER_INVALID' },
  { name: 'tags/list n=999999999 is clamped', path: '/v2/demo/hello/tags/list?n=999999999', status: 200, expect: (r) => expect(r.json().tags).toHaveLength(8) },
  { name: 'tags/list n=abc', path: '/v2/demo/hello/tags/list?n=abc', status: 400, code: 'PAGINATION_NUMBER_INVALID' },
  { name: 'catalog hides protected repos from anonymous callers', path: '/v2/_catalog', status: 200, expect: (r) => expect(r.json()).toEqual({ repositories: ['demo/hello', 'other'] }) },
  { name: 'catalog shows them with credentials', path: '/v2/_catalog', headers: { Authorization: auth }, status: 200, expect: (r) => expect(r.json().repositories).toEqual(['demo/hello', 'other', 'secret/repo']) },
  { name: 'catalog pagination', path: '/v2/_catalog?n=1', status: 200, expect: (r) => { expect(r.json().repositories).toEqual(['demo/hello']); expect(r.headers.link).toBe('</v2/_catalog?last=demo%2Fhello&n=1>; rel="next"'); } },
  { name: 'catalog n=-1', path: '/v2/_catalog?n=-1', status: 400, code: 'PAGINATION_NUMBER_INVALID' },
  { name: 'catalog n=999999999', path: '/v2/_catalog?n=999999999', status: 200, expect: (r) => expect(r.json().repositories).toHaveLength(2) },
  {
    name: 'referrers: empty index, never 404',
    path: () => `/v2/demo/hello/referrers/${img('demo/hello:v1').digest}`,
    status: 200,
    expect: (r) => {
      expect(r.headers['content-type']).toBe(MediaType.ociIndex);
      expect(r.json()).toEqual({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
    },
  },
  { name: 'referrers filtered', path: () => `/v2/demo/hello/referrers/${img('demo/hello:v1').digest}?artifactType=application/x-sig`, status: 200, expect: (r) => expect(r.headers['oci-filters-applied']).toBe('artifactType') },
  { name: 'referrers bad digest', path: '/v2/demo/hello/referrers/nope', status: 400, code: 'DIGEST_INVALID' },
  { name: 'protected repo without credentials', path: '/v2/secret/repo/manifests/latest', status: 401, code: 'UNAUTHORIZED', expect: (r) => expect(r.headers['www-authenticate']).toMatch(/^Basic realm="/) },
  { name: 'protected repo with bad credentials', path: '/v2/secret/repo/manifests/latest', headers: { Authorization: 'Basic ' + Buffer.from('alice:wrong').toString('base64') }, status: 401, code: 'UNAUTHORIZED' },
  { name: 'protected repo with credentials', path: '/v2/secret/repo/manifests/latest', headers: { Authorization: auth }, status: 200 },
  { name: 'protected blob without credentials', path: () => `/v2/secret/repo/blobs/${img('secret/repo:latest').blobs[0]}`, status: 401, code: 'UNAUTHORIZED' },
  ...['PUT', 'POST', 'PATCH', 'DELETE'].map((method) => ({ name: `${method} manifest is unsupported`, method, path: '/v2/demo/hello/manifests/v1', status: 405, code: 'UNSUPPORTED' })),
  { name: 'POST upload is unsupported', method: 'POST', path: '/v2/demo/hello/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
  { name: 'GET upload status is unsupported', path: '/v2/demo/hello/blobs/uploads/abc', status: 405, code: 'UNSUPPORTED' },
  { name: 'DELETE blob is unsupported', method: 'DELETE', path: () => `/v2/demo/hello/blobs/${img('demo/hello:v1').blobs[0]}`, status: 405, code: 'UNSUPPORTED' },
  { name: 'traversal with ..', path: '/v2/demo/../other/manifests/latest', status: 400, code: 'NAME_INVALID' },
  { name: 'traversal with %2e%2e', path: '/v2/demo/%2e%2e/other/manifests/latest', status: 400, code: 'NAME_INVALID' },
  { name: 'traversal with %2f', path: '/v2/demo%2fhello/manifests/v1', status: 400, code: 'NAME_INVALID' },
  { name: 'traversal into blobs', path: '/v2/demo/hello/blobs/..%2f..%2fstore', status: 400, code: 'DIGEST_INVALID' },
  { name: 'uppercase name', path: '/v2/Demo/hello/tags/list', status: 400, code: 'NAME_INVALID' },
  { name: 'unknown endpoint', path: '/v2/demo/hello/whatever', status: 404 },
];

describe('derrick serve: status and headers', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const p = typeof c.path === 'function' ? c.path() : c.path;
    const headers = { ...c.headers };
    if (headers['If-None-Match'] === '"placeholder"') headers['If-None-Match'] = `"${img('demo/hello:v1').digest}"`;
    const r = await rawRequest(url, p, { method: c.method, headers });
    expect(r.status, `${c.method ?? 'GET'} ${p}: ${r.text}`).toBe(c.status);
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
    if (c.code) {
      expect(r.headers['content-type']).toBe('application/json');
      if ((c.method ?? 'GET') !== 'HEAD') {
        const body = r.json();
        expect(body.errors[0].code).toBe(c.code);
        expect(typeof body.errors[0].message).toBe('string');
      }
    }
    c.expect?.(r);
  });

  it('follows a blob redirect to the embedded server: bytes, digest, Range', async () => {
    const digest = img('demo/hello:v1').blobs[1]!;
    const r = await rawRequest(url, `/v2/demo/hello/blobs/${digest}`);
    expect(new URL(r.headers.location!).origin).toBe(url);
    const blob = await rawRequest(url, pathOf(r.headers.location!));
    expect(blob.status).toBe(200);
    expect(sha256Digest(blob.body)).toBe(digest);
    expect(blob.headers['docker-content-digest']).toBe(digest);
    expect(blob.headers['cache-control']).toContain('immutable');
    const part = await rawRequest(url, pathOf(r.headers.location!), { headers: { Range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 10-19/${blob.body.length}`);
    expect(part.body.equals(blob.body.subarray(10, 20))).toBe(true);
  });

  it('the embedded server on the real port: raw traversal refused, HEAD without a body, 304 on If-None-Match', async () => {
    const digest = img('demo/hello:v1').blobs[1]!;
    const location = pathOf((await rawRequest(url, `/v2/demo/hello/blobs/${digest}`)).headers.location!);
    await fs.writeFile(path.join(tmp.dir, 'secret.txt'), 'not for you');
    for (const p of ['/published/../secret.txt', '/published/%2e%2e/%2e%2e/secret.txt', '/published/web/..%2f..%2fsecret.txt', location.replace('/blobs/', '/.tmp-x/')]) {
      const r = await rawRequest(url, p);
      expect(r.status, p).toBe(404);
      expect(r.text).not.toContain('not for you');
      expect(r.json().errors[0].code).toMatch(/^(NAME|BLOB)_UNKNOWN$/);
    }
    const full = await rawRequest(url, location);
    expect(sha256Digest(full.body)).toBe(digest);
    const head = await rawRequest(url, location, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(head.headers['content-length']).toBe(String(full.body.length));
    expect(head.headers['docker-content-digest']).toBe(digest);
    const again = await rawRequest(url, location, { headers: { 'If-None-Match': `"${digest}"` } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    const post = await rawRequest(url, location, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('answers a TLS ClientHello on the plain port at once (Go clients probe TLS first)', async () => {
    const started = Date.now();
    const err = await new Promise<Error>((resolve) => {
      const sock = tls.connect({ host: '127.0.0.1', port: Number(new URL(url).port), rejectUnauthorized: false });
      sock.once('secureConnect', () => resolve(new Error('TLS handshake unexpectedly succeeded')));
      sock.once('error', resolve);
    });
    expect(err.message).toMatch(/wrong version number|packet length too long|ECONNRESET|socket disconnected/i);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('serves /metrics with request counters', async () => {
    const r = await rawRequest(url, '/metrics');
    expect(r.status).toBe(200);
    expect(r.text).toMatch(/derrick_http_requests_total\{route="manifest",method="GET",status="200"\} \d+/);
    expect(r.text).toMatch(/derrick_repos_indexed 3/);
  });

  it('the published tree is where the redirects point', async () => {
    const l = layout(tree.config.root);
    const r = await rawRequest(url, `/v2/other/blobs/${img('other:latest').blobs[0]}`);
    const rel = pathOf(r.headers.location!).replace(/^\/published\//, '');
    await expect(fs.stat(path.join(l.publishedDir, rel))).resolves.toBeTruthy();
  });
});
