import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Hono, type Context } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from '../shared/oci.js';
import { signPath } from '../shared/signing.js';
import { tmpDir, type TmpDir } from '../test/helpers/tmp.js';
import {
  IMMUTABLE_CACHE_CONTROL,
  MANIFEST_DIR_TYPES,
  classifyPath,
  createFileServer,
  notFoundCode,
  parseRange,
  parseRequestPath,
  type FileServerOptions,
} from './files.js';

const KEY = 'demo~hello';
const TS = '20261124T095738.398Z-000';
const MASTER = `master/${KEY}/${TS}`;
const SECRET = 'sekrit value';

interface Fixture {
  tmp: TmpDir;
  published: string;
  blob: Buffer;
  blobDigest: string;
  manifests: Record<string, { body: Buffer; digest: string }>;
  big: { digest: string; size: number };
}

let fx: Fixture;

async function writeFile(file: string, data: Buffer | string) {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, data);
}

beforeAll(async () => {
  const tmp = await tmpDir('derrick-files-test');
  const published = path.join(tmp.dir, 'published');
  const m = path.join(published, MASTER);
  const blob = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz'); // 36 bytes
  const blobDigest = sha256Digest(blob);
  await writeFile(path.join(m, 'blobs', blobDigest), blob);
  const manifests: Fixture['manifests'] = {};
  for (const dir of Object.keys(MANIFEST_DIR_TYPES)) {
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST_DIR_TYPES[dir], dir }));
    const digest = sha256Digest(body);
    manifests[dir] = { body, digest };
    await writeFile(path.join(m, 'manifests', dir, digest), body);
    await writeFile(path.join(m, 'manifests', dir, `tag-${dir}`), body);
  }
  await writeFile(path.join(m, 'tags', 'list'), JSON.stringify({ name: 'demo/hello', tags: ['tag-2'] }));
  await writeFile(path.join(m, 'redirect.json'), '{"type":"pulp-docker-redirect"}');
  await writeFile(path.join(m, 'blobs', '.tmp-partial'), 'partial');
  await writeFile(path.join(published, 'master', KEY, '.tmp-20261124T100000.000Z-000', 'blobs', blobDigest), blob);
  await fs.mkdir(path.join(published, 'web'), { recursive: true });
  await fs.mkdir(path.join(published, 'app'), { recursive: true });
  await fs.symlink(`../${MASTER}`, path.join(published, 'web', KEY));
  await fs.symlink(`../${MASTER}/redirect.json`, path.join(published, 'app', `${KEY}.json`));
  // Links that escape the published tree, or point into temp debris.
  await writeFile(path.join(tmp.dir, 'secret.txt'), 'do not serve');
  await fs.symlink('../../secret.txt', path.join(published, 'web', 'evil'));
  await fs.symlink(`../master/${KEY}/.tmp-20261124T100000.000Z-000`, path.join(published, 'web', 'debris'));

  // 50 MB blob, written in chunks.
  const h = createHash('sha256');
  const bigFile = path.join(tmp.dir, 'big');
  const fh = await fs.open(bigFile, 'w');
  const chunk = randomBytes(1024 * 1024);
  const size = 50 * 1024 * 1024;
  for (let i = 0; i < 50; i++) {
    chunk[0] = i;
    h.update(chunk);
    await fh.write(chunk);
  }
  await fh.close();
  const bigDigest = 'sha256:' + h.digest('hex');
  await fs.rename(bigFile, path.join(m, 'blobs', bigDigest));
  fx = { tmp, published, blob, blobDigest, manifests, big: { digest: bigDigest, size } };
}, 60_000);

afterAll(async () => {
  await fx?.tmp.cleanup();
});

/** Every repo public and anonymous reads allowed: what these tests of the file serving itself need. */
const OPEN = { anonymous: true, isProtected: () => false };

function appWith(extra: Partial<FileServerOptions> = {}, mount = '/published/*') {
  const handler = createFileServer({ publishedDir: fx.published, prefix: '/published', access: OPEN, ...extra });
  const app = new Hono();
  app.on(['GET', 'HEAD'], mount, handler);
  return app;
}

async function errorOf(res: Response) {
  expect(res.headers.get('content-type')).toBe('application/json');
  const body = (await res.json()) as { errors: { code: string; message: string; detail: unknown }[] };
  expect(body.errors).toHaveLength(1);
  return body.errors[0]!;
}

/** Calls the handler with a URL that no WHATWG parser has normalized (as a raw proxy might). */
async function rawCall(handler: (c: Context) => Promise<Response>, rawUrl: string, method = 'GET'): Promise<Response> {
  const q = rawUrl.includes('?') ? new URLSearchParams(rawUrl.slice(rawUrl.indexOf('?') + 1)) : new URLSearchParams();
  const fake = {
    req: {
      method,
      url: `http://localhost${rawUrl}`,
      header: () => undefined,
      query: (k: string) => q.get(k) ?? undefined,
    },
  };
  return handler(fake as unknown as Context);
}

describe('helpers', () => {
  it('classifies paths by their last segments', () => {
    const d = 'sha256:' + 'a'.repeat(64);
    expect(classifyPath(['master', KEY, TS, 'blobs', d])).toEqual({ kind: 'blob', contentType: 'application/octet-stream', digest: d });
    expect(classifyPath(['web', KEY, 'manifests', 'list', d])).toEqual({ kind: 'manifest', contentType: MediaType.dockerManifestList, digest: d });
    expect(classifyPath(['web', KEY, 'manifests', 'oci', 'latest'])).toEqual({ kind: 'manifest', contentType: MediaType.ociManifest });
    expect(classifyPath(['web', KEY, 'manifests', 'oci-index', 'x.json']).contentType).toBe(MediaType.ociIndex);
    expect(classifyPath(['web', KEY, 'manifests', 'other', 'x']).kind).toBe('other');
    expect(classifyPath(['web', KEY, 'tags', 'list'])).toEqual({ kind: 'json', contentType: 'application/json' });
    expect(classifyPath(['app', `${KEY}.json`]).contentType).toBe('application/json');
    expect(classifyPath(['web', KEY, 'README'])).toEqual({ kind: 'other', contentType: 'application/octet-stream' });
  });

  it('picks the registry error code from the path', () => {
    expect(notFoundCode('/published/master/a/b/blobs/sha256:x')).toBe('BLOB_UNKNOWN');
    expect(notFoundCode('/published/web/a/manifests/2/v1')).toBe('MANIFEST_UNKNOWN');
    expect(notFoundCode('/published/web/a/tags/list')).toBe('NAME_UNKNOWN');
  });

  it('parses Range headers like nginx with max_ranges 1', () => {
    expect(parseRange(undefined, 10)).toEqual({ kind: 'full' });
    expect(parseRange('bytes=0-3', 10)).toEqual({ kind: 'partial', start: 0, end: 3 });
    expect(parseRange('bytes=5-', 10)).toEqual({ kind: 'partial', start: 5, end: 9 });
    expect(parseRange('bytes=-3', 10)).toEqual({ kind: 'partial', start: 7, end: 9 });
    expect(parseRange('bytes=-30', 10)).toEqual({ kind: 'partial', start: 0, end: 9 });
    expect(parseRange('bytes=2-100', 10)).toEqual({ kind: 'partial', start: 2, end: 9 });
    expect(parseRange('bytes=10-', 10)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=-0', 10)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=5-3', 10)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=x', 10)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=0-0', 0)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=0-1,3-4', 10)).toEqual({ kind: 'full' });
    expect(parseRange('items=0-1', 10)).toEqual({ kind: 'full' });
  });

  it('rejects non-canonical request paths', () => {
    const bad = [
      '/published/../etc/passwd',
      '/published/%2e%2e/etc/passwd',
      '/published/%2E%2E/x',
      '/published/master/./x',
      '/published/master/%2e/x',
      '/published/master%2fdemo/x',
      '/published/master%2Fdemo/x',
      '/published/master%5cdemo',
      '/published/master\\demo',
      '/published/a%00b',
      '/published/a%0ab',
      '/published//master/x',
      '/published/master/x/',
      '/published/.tmp-x/y',
      '/published/master/%2etmp-x',
      '/published/bad%zz',
      '/publishedx/master',
      '/other',
    ];
    for (const p of bad) expect(parseRequestPath(p, '/published'), p).toMatchObject({ ok: false });
    expect(parseRequestPath('/published/web/a%7Eb/tags/list', '/published')).toEqual({
      ok: true,
      uri: '/published/web/a~b/tags/list',
      segments: ['web', 'a~b', 'tags', 'list'],
    });
  });
});

describe('createFileServer', () => {
  it('serves every kind of published file with the right headers', async () => {
    const app = appWith();
    const blobUrl = `/published/${MASTER}/blobs/${fx.blobDigest}`;
    let res = await app.request(blobUrl);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(fx.blob);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('content-length')).toBe(String(fx.blob.length));
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('docker-content-digest')).toBe(fx.blobDigest);
    expect(res.headers.get('etag')).toBe(`"${fx.blobDigest}"`);
    expect(res.headers.get('cache-control')).toBe(IMMUTABLE_CACHE_CONTROL);
    expect(new Date(res.headers.get('last-modified')!).getTime()).toBeGreaterThan(0);

    for (const [dir, { body, digest }] of Object.entries(fx.manifests)) {
      res = await app.request(`/published/${MASTER}/manifests/${dir}/${digest}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer())).toEqual(body);
      expect(res.headers.get('content-type')).toBe(MANIFEST_DIR_TYPES[dir]);
      expect(res.headers.get('docker-content-digest')).toBe(digest);
      expect(res.headers.get('etag')).toBe(`"${digest}"`);
      // By tag: same type, no digest header, weak etag.
      res = await app.request(`/published/${MASTER}/manifests/${dir}/tag-${dir}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer())).toEqual(body);
      expect(res.headers.get('content-type')).toBe(MANIFEST_DIR_TYPES[dir]);
      expect(res.headers.get('docker-content-digest')).toBeNull();
      expect(res.headers.get('etag')).toMatch(/^W\/"[0-9a-f]+-[0-9a-f]+"$/);
    }

    res = await app.request(`/published/${MASTER}/tags/list`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ name: 'demo/hello', tags: ['tag-2'] });

    // The master's redirect file is what app/ links to: internal, never served.
    res = await app.request(`/published/${MASTER}/redirect.json`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toBe('application/json');
  });

  it('follows web/ links, which are not immutable; never serves app/ (redirect files are internal)', async () => {
    const app = appWith();
    let res = await app.request(`/published/web/${KEY}/blobs/${fx.blobDigest}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(fx.blob);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    expect(res.headers.get('docker-content-digest')).toBe(fx.blobDigest);
    res = await app.request(`/published/app/${KEY}.json`);
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe('NAME_UNKNOWN');
    // Percent-encoded '~' is the same path.
    res = await app.request(`/published/web/demo%7Ehello/tags/list`);
    expect(res.status).toBe(200);
  });

  it('answers 404 with a registry JSON error for missing files, directories and temp names', async () => {
    const app = appWith();
    const cases: [string, string][] = [
      [`/published/${MASTER}/blobs/sha256:${'0'.repeat(64)}`, 'BLOB_UNKNOWN'],
      [`/published/${MASTER}/manifests/2/nope`, 'MANIFEST_UNKNOWN'],
      [`/published/web/nope/tags/list`, 'NAME_UNKNOWN'],
      [`/published/${MASTER}/blobs`, 'NAME_UNKNOWN'],
      [`/published/${MASTER}/blobs/`, 'BLOB_UNKNOWN'],
      [`/published/${MASTER}`, 'NAME_UNKNOWN'],
      [`/published/web/${KEY}`, 'NAME_UNKNOWN'],
      [`/published/${MASTER}/blobs/.tmp-partial`, 'BLOB_UNKNOWN'],
      [`/published/master/${KEY}/.tmp-20261124T100000.000Z-000/blobs/${fx.blobDigest}`, 'BLOB_UNKNOWN'],
      [`/published/web/debris/blobs/${fx.blobDigest}`, 'BLOB_UNKNOWN'],
      [`/published/web/evil`, 'NAME_UNKNOWN'],
    ];
    for (const [url, code] of cases) {
      const res = await app.request(url);
      expect(res.status, url).toBe(404);
      const e = await errorOf(res);
      expect(e.code, url).toBe(code);
      expect(res.headers.get('cache-control')).toBe('no-cache');
    }
    const head = await app.request(`/published/${MASTER}/blobs/sha256:${'0'.repeat(64)}`, { method: 'HEAD' });
    expect(head.status).toBe(404);
    expect(await head.text()).toBe('');
  });

  it('answers 404 when the published dir does not exist (yet)', async () => {
    const app = new Hono();
    app.get('/published/*', createFileServer({ publishedDir: path.join(fx.tmp.dir, 'missing'), prefix: '/published', access: OPEN }));
    const res = await app.request(`/published/${MASTER}/tags/list`);
    expect(res.status).toBe(404);
    expect((await errorOf(res)).code).toBe('NAME_UNKNOWN');
  });

  it('refuses traversal and encoded separators', async () => {
    // Through a WHATWG URL, `..` and `%2e%2e` are resolved before routing; mounted at `*`, the
    // handler still sees (and refuses) the result, which is outside the prefix.
    const app = appWith({}, '*');
    for (const url of [
      '/published/../secret.txt',
      '/published/%2e%2e/secret.txt',
      '/published/web/%2e%2e/%2e%2e/secret.txt',
      `/published/master%2f${KEY}/${TS}/tags/list`,
      `/published/master%2F${KEY}/${TS}/tags/list`,
      `/published/master%5c${KEY}/${TS}/tags/list`,
      '/published/web/evil',
    ]) {
      const res = await app.request(url);
      expect(res.status, url).toBe(404);
      await errorOf(res);
    }
    // Raw, un-normalized paths straight into the handler.
    const handler = createFileServer({ publishedDir: fx.published, prefix: '/published', access: OPEN });
    for (const url of [
      '/published/../secret.txt',
      '/published/web/../../secret.txt',
      '/published/%2e%2e/secret.txt',
      '/published/web/%2E%2E/%2E%2E/secret.txt',
      `/published/master/${KEY}/${TS}/./tags/list`,
      '/published/master\\..\\..\\secret.txt',
      '/published/a%00b',
    ]) {
      const res = await rawCall(handler, url);
      expect(res.status, url).toBe(404);
      await errorOf(res);
    }
    const ok = await rawCall(handler, `/published/${MASTER}/tags/list`);
    expect(ok.status).toBe(200);
    await ok.body?.cancel();
  });

  it('checks the wire path from @hono/node-server bindings, not the normalized URL', async () => {
    const app = appWith();
    const target = `/published/${MASTER}/tags/list`;
    // The URL resolves to a valid file, but the request-target as sent had a dot segment.
    let res = await app.request(target, {}, { incoming: { url: `/published/web/../${MASTER}/tags/list` } });
    expect(res.status).toBe(404);
    await errorOf(res);
    res = await app.request(target, {}, { incoming: { url: `/published/%2e%2e/published/${MASTER}/tags/list?x=1` } });
    expect(res.status).toBe(404);
    res = await app.request(target, {}, { incoming: { url: `${target}?x=/../` } });
    expect(res.status).toBe(200);
    await res.body?.cancel();
  });

  it('answers HEAD with headers only', async () => {
    const app = appWith();
    const res = await app.request(`/published/${MASTER}/blobs/${fx.blobDigest}`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(fx.blob.length));
    expect(res.headers.get('docker-content-digest')).toBe(fx.blobDigest);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(await res.text()).toBe('');
    // Straight into the handler too: no body, not just stripped by Hono.
    const handler = createFileServer({ publishedDir: fx.published, prefix: '/published', access: OPEN });
    const raw = await rawCall(handler, `/published/${MASTER}/blobs/${fx.blobDigest}`, 'HEAD');
    expect(raw.body).toBeNull();
    expect(raw.headers.get('content-length')).toBe(String(fx.blob.length));
  });

  it('serves single ranges and 416 for unsatisfiable ones', async () => {
    const app = appWith();
    const url = `/published/${MASTER}/blobs/${fx.blobDigest}`;
    const size = fx.blob.length;
    const get = (range: string, extra: Record<string, string> = {}) => app.request(url, { headers: { Range: range, ...extra } });

    let res = await get('bytes=0-9');
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 0-9/${size}`);
    expect(res.headers.get('content-length')).toBe('10');
    expect(res.headers.get('docker-content-digest')).toBe(fx.blobDigest);
    expect(await res.text()).toBe('0123456789');

    res = await get('bytes=30-');
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 30-35/${size}`);
    expect(await res.text()).toBe('uvwxyz');

    res = await get('bytes=-4');
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 32-35/${size}`);
    expect(await res.text()).toBe('wxyz');

    res = await get('bytes=34-1000');
    expect(res.status).toBe(206);
    expect(await res.text()).toBe('yz');

    for (const r of ['bytes=36-', 'bytes=100-200', 'bytes=-0', 'bytes=9-3']) {
      res = await get(r);
      expect(res.status, r).toBe(416);
      expect(res.headers.get('content-range')).toBe(`bytes */${size}`);
      expect(await res.text()).toBe('');
    }

    res = await get('bytes=0-1,4-5');
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(fx.blob);

    // If-Range: a matching strong ETag keeps the range, anything else gets the whole file.
    res = await get('bytes=0-1', { 'If-Range': `"${fx.blobDigest}"` });
    expect(res.status).toBe(206);
    await res.body?.cancel();
    res = await get('bytes=0-1', { 'If-Range': '"other"' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(size));
    await res.body?.cancel();

    res = await app.request(url, { method: 'HEAD', headers: { Range: 'bytes=1-2' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-length')).toBe('2');
    expect(await res.text()).toBe('');
  });

  it('answers conditional requests with 304', async () => {
    const app = appWith();
    const url = `/published/${MASTER}/blobs/${fx.blobDigest}`;
    let res = await app.request(url, { headers: { 'If-None-Match': `"${fx.blobDigest}"` } });
    expect(res.status).toBe(304);
    expect(await res.text()).toBe('');
    expect(res.headers.get('etag')).toBe(`"${fx.blobDigest}"`);
    expect(res.headers.get('cache-control')).toBe(IMMUTABLE_CACHE_CONTROL);
    res = await app.request(url, { headers: { 'If-None-Match': `"x", W/"${fx.blobDigest}"` } });
    expect(res.status).toBe(304);
    res = await app.request(url, { headers: { 'If-None-Match': '*' } });
    expect(res.status).toBe(304);
    res = await app.request(url, { headers: { 'If-None-Match': '"something-else"' } });
    expect(res.status).toBe(200);
    await res.body?.cancel();

    const tagUrl = `/published/${MASTER}/manifests/oci/tag-oci`;
    const first = await app.request(tagUrl);
    const etag = first.headers.get('etag')!;
    const lastModified = first.headers.get('last-modified')!;
    await first.body?.cancel();
    res = await app.request(tagUrl, { headers: { 'If-None-Match': etag } });
    expect(res.status).toBe(304);
    res = await app.request(tagUrl, { headers: { 'If-Modified-Since': lastModified } });
    expect(res.status).toBe(304);
    res = await app.request(tagUrl, { headers: { 'If-Modified-Since': new Date(Date.parse(lastModified) - 5000).toUTCString() } });
    expect(res.status).toBe(200);
    await res.body?.cancel();
  });

  it('checks nginx secure_link signatures on master/ only', async () => {
    const now = Date.parse('2026-11-24T10:00:00Z');
    const app = appWith({ signingSecret: SECRET, now: () => now });
    const uri = `/published/${MASTER}/blobs/${fx.blobDigest}`;
    const future = Math.floor(now / 1000) + 300;

    let res = await app.request(`${uri}?${signPath(uri, SECRET, future)}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(fx.blob);

    // The signature is over the decoded path: an encoded '~' still verifies.
    res = await app.request(`${uri.replace('~', '%7E')}?${signPath(uri, SECRET, future)}`);
    expect(res.status).toBe(200);
    await res.body?.cancel();

    res = await app.request(uri);
    expect(res.status).toBe(403);
    let e = await errorOf(res);
    expect(e.code).toBe('DENIED');

    res = await app.request(`${uri}?${signPath(uri, 'wrong secret', future)}`);
    expect(res.status).toBe(403);
    expect((await errorOf(res)).code).toBe('DENIED');

    // Signed for a different path.
    res = await app.request(`${uri}?${signPath(`/published/${MASTER}/tags/list`, SECRET, future)}`);
    expect(res.status).toBe(403);
    await errorOf(res);

    // Tampered expiry.
    res = await app.request(`${uri}?${signPath(uri, SECRET, future).replace(String(future), String(future + 1))}`);
    expect(res.status).toBe(403);

    res = await app.request(`${uri}?${signPath(uri, SECRET, Math.floor(now / 1000) - 1)}`);
    expect(res.status).toBe(403);
    e = await errorOf(res);
    expect(e.code).toBe('DENIED');
    expect(e.message).toBe('signed URL expired');

    res = await app.request(uri, { method: 'HEAD' });
    expect(res.status).toBe(403);

    // A missing file under master/ is still 403 without a signature (no existence oracle) and
    // 404 with one.
    const missing = `/published/${MASTER}/blobs/sha256:${'0'.repeat(64)}`;
    expect((await app.request(missing)).status).toBe(403);
    expect((await app.request(`${missing}?${signPath(missing, SECRET, future)}`)).status).toBe(404);

    // web/ of a public repo needs no signature; app/ is never served, signed or not.
    res = await app.request(`/published/web/${KEY}/tags/list`);
    expect(res.status).toBe(200);
    await res.body?.cancel();
    res = await app.request(`/published/app/${KEY}.json`);
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it('streams a 50 MB blob, whole and ranged', async () => {
    const app = appWith();
    const url = `/published/${MASTER}/blobs/${fx.big.digest}`;
    const res = await app.request(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(fx.big.size));
    const h = createHash('sha256');
    let n = 0;
    let chunks = 0;
    for await (const c of res.body! as unknown as AsyncIterable<Uint8Array>) {
      h.update(c);
      n += c.length;
      chunks++;
    }
    expect(n).toBe(fx.big.size);
    expect('sha256:' + h.digest('hex')).toBe(fx.big.digest);
    expect(chunks).toBeGreaterThan(10); // streamed, not one buffer

    const start = 20 * 1024 * 1024 + 7;
    const ranged = await app.request(url, { headers: { Range: `bytes=${start}-` } });
    expect(ranged.status).toBe(206);
    const part = Buffer.from(await ranged.arrayBuffer());
    expect(part.length).toBe(fx.big.size - start);
    const whole = await fs.readFile(path.join(fx.published, MASTER, 'blobs', fx.big.digest));
    expect(part.equals(whole.subarray(start))).toBe(true);
  });

  it('closes the file when a client stops reading', async () => {
    const app = appWith();
    const res = await app.request(`/published/${MASTER}/blobs/${fx.big.digest}`);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    await reader.cancel();
  });
});
