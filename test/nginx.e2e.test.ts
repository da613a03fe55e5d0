// The generated nginx config against a real nginx and a real published tree: every published
// file is served byte-for-byte with the same status and headers as the embedded file server,
// and a URL signed for one works on the other.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../shared/config.js';
import { layout, MASTER_META_FILES, repoKey } from '../shared/layout.js';
import { createLogger } from '../shared/log.js';
import { MediaType } from '../shared/oci.js';
import { signPath } from '../shared/signing.js';
import { runPublish } from '../publisher/run-publish.js';
import { createFileServer } from '../redirector/files.js';
import { nginxConf } from '../redirector/nginx-conf.js';
import { generateImage } from '../scripts/gen-image.js';
import { rawRequest, type RawResponse } from './helpers/http.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { requireTool } from './helpers/proc.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { listFiles } from './helpers/walk.js';

const hasNginx = requireTool('nginx', 'the nginx e2e tests are skipped');

const REPO = 'demo/hello';
const KEY = repoKey(REPO);
const SECRET_ENV = 'DERRICK_E2E_NGINX_SECRET';
const SECRET = 'e2e "secret" \\ with spaces';
const PREFIX = '/published';
const IMMUTABLE = 'public, max-age=31536000, immutable';
const DIR_TYPES: Record<string, string> = {
  '2': MediaType.dockerManifest,
  list: MediaType.dockerManifestList,
  oci: MediaType.ociManifest,
  'oci-index': MediaType.ociIndex,
};

interface Server {
  url: string;
  close(): Promise<void>;
}

/** The embedded file server alone, on 127.0.0.1:<free port>, mounted at `*` so it sees everything. */
async function startEmbedded(publishedDir: string, signingSecret?: string): Promise<Server> {
  const app = new Hono();
  app.on(['GET', 'HEAD'], '*', createFileServer({ publishedDir, prefix: PREFIX, signingSecret, access: { anonymous: true, isProtected: (name) => (name === REPO ? false : undefined) } }));
  return new Promise((resolve) => {
    const srv = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        close: () =>
          new Promise<void>((r) => {
            (srv as http.Server).closeAllConnections?.();
            srv.close(() => r());
          }),
      });
    });
  });
}

/** What the contract says a published file is served as. */
function expected(rel: string): { type: string; digest?: string } {
  const parts = rel.split('/');
  const name = parts[parts.length - 1]!;
  const isDigest = /^sha256:[0-9a-f]{64}$/.test(name);
  if (parts[parts.length - 2] === 'blobs') return { type: 'application/octet-stream', digest: isDigest ? name : undefined };
  if (parts[parts.length - 3] === 'manifests') return { type: DIR_TYPES[parts[parts.length - 2]!]!, digest: isDigest ? name : undefined };
  return { type: 'application/json' };
}

function sha256(b: Buffer): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

function header(res: RawResponse, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

function errorCode(res: RawResponse): string {
  expect(header(res, 'content-type')).toBe('application/json');
  return (res.json() as { errors: { code: string }[] }).errors[0]!.code;
}

function nginxServerBlock(config: Config, opts: { proxy?: string; signed: boolean }): string {
  const conf = nginxConf(config, {
    listen: '127.0.0.1:1',
    proxy: opts.proxy,
    env: opts.signed ? { [SECRET_ENV]: SECRET } : {},
  });
  return conf.replace('listen 127.0.0.1:1;', 'listen 127.0.0.1:__PORT__;');
}

describe.skipIf(!hasNginx)('generated nginx config against real nginx', () => {
  let tmp: TmpDir;
  let config: Config;
  let signedConfig: Config;
  let publishedDir: string;
  let master: string;
  let masterRel: string;
  let files: string[];
  let nginx: Nginx;
  let signedNginx: Nginx;
  let embedded: Server;
  let signedEmbedded: Server;
  let upstream: http.Server;
  let upstreamSeen: { url: string; headers: http.IncomingHttpHeaders }[] = [];

  beforeAll(async () => {
    tmp = await tmpDir('derrick-nginx-e2e');
    const images = path.join(tmp.dir, 'images', 'hello');
    await generateImage({ layoutDir: images, tag: 'v1', layers: [1024 * 1024 + 17, 2048] });
    await generateImage({ layoutDir: images, tag: 'multi', format: 'docker', platforms: ['linux/amd64', 'linux/arm64'] });
    await generateImage({ layoutDir: images, tag: 'oci-multi', platforms: ['linux/amd64', 'linux/arm/v7'], layers: [300] });
    const yaml = (signed: boolean) =>
      [
        'root: ./var',
        'repos:',
        `  - name: ${REPO}`,
        `    from: oci:${images}`,
        ...(signed ? ['serve:', '  signing:', `    secret-env: ${SECRET_ENV}`, '    ttl: 5m'] : []),
        '',
      ].join('\n');
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml(false));
    config = parseConfig(yaml(false), file, {});
    signedConfig = parseConfig(yaml(true), file, { [SECRET_ENV]: SECRET });
    const outcomes = await runPublish({ config, policy: 'default', log: createLogger({ level: 'silent' }) });
    expect(outcomes.map((o) => [o.outcome, o.error])).toEqual([['published', undefined]]);

    const l = layout(config.root);
    publishedDir = l.publishedDir;
    const masters = (await fs.readdir(l.masterDir(REPO))).filter((n) => !n.startsWith('.'));
    expect(masters).toHaveLength(1);
    master = masters[0]!;
    masterRel = l.masterUrlPath(REPO, master); // master/<key>/<ts>/
    // The redirect file and its index are internal: never served (checked below), so not among the served files.
    files = (await listFiles(l.master(REPO, master))).filter((f) => !MASTER_META_FILES.includes(f));
    // Debris a crashed publish could leave behind: never served.
    await fs.writeFile(path.join(l.master(REPO, master), 'blobs', '.tmp-partial'), 'partial');
    await fs.mkdir(path.join(l.masterDir(REPO), '.tmp-20990101T000000.000Z-000', 'tags'), { recursive: true });
    await fs.writeFile(path.join(l.masterDir(REPO), '.tmp-20990101T000000.000Z-000', 'tags', 'list'), '{}');

    upstream = http.createServer((req, res) => {
      upstreamSeen.push({ url: req.url!, headers: req.headers });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Docker-Distribution-Api-Version': 'registry/2.0' });
      res.end('{}');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    const upstreamAddr = `127.0.0.1:${(upstream.address() as AddressInfo).port}`;

    [nginx, signedNginx, embedded, signedEmbedded] = await Promise.all([
      startNginx(nginxServerBlock(config, { proxy: upstreamAddr, signed: false })),
      startNginx(nginxServerBlock(signedConfig, { signed: true })),
      startEmbedded(publishedDir),
      startEmbedded(publishedDir, SECRET),
    ]);
  });

  afterAll(async () => {
    await Promise.all([nginx?.stop(), signedNginx?.stop(), embedded?.close(), signedEmbedded?.close()]);
    await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
    await tmp?.cleanup();
  });

  it('published a tree with every kind of file', () => {
    expect(files).toContain('tags/list');
    for (const dir of ['2', 'list', 'oci', 'oci-index']) {
      expect(files.some((f) => f.startsWith(`manifests/${dir}/sha256:`)), dir).toBe(true);
    }
    expect(files).toContain('manifests/list/multi');
    expect(files).toContain('manifests/oci/v1');
    expect(files).toContain('manifests/oci-index/oci-multi');
    expect(files.filter((f) => f.startsWith('blobs/')).length).toBeGreaterThan(5);
  });

  it('serves every master file byte-identical, with the same headers as the embedded server', async () => {
    for (const rel of files) {
      const urlPath = `${PREFIX}/${masterRel}${rel}`;
      const onDisk = await fs.readFile(path.join(publishedDir, masterRel, rel));
      const want = expected(rel);
      const a = await rawRequest(nginx.url, urlPath);
      const b = await rawRequest(embedded.url, urlPath);
      for (const [who, res] of [['nginx', a], ['embedded', b]] as const) {
        const what = `${who} ${rel}`;
        expect(res.status, what).toBe(200);
        expect(res.body.equals(onDisk), what).toBe(true);
        expect(header(res, 'content-type'), what).toBe(want.type);
        expect(header(res, 'content-length'), what).toBe(String(onDisk.length));
        expect(header(res, 'docker-content-digest'), what).toBe(want.digest);
        expect(header(res, 'cache-control'), what).toBe(IMMUTABLE);
        expect(header(res, 'accept-ranges'), what).toBe('bytes');
        expect(header(res, 'etag'), what).toBeTruthy();
        if (want.digest) expect(sha256(res.body), what).toBe(want.digest);
      }
      expect(header(a, 'last-modified')).toBe(header(b, 'last-modified'));
    }
  });

  it('serves web/ links with no-cache, and never app/ (redirect files are internal)', async () => {
    for (const rel of files) {
      const urlPath = `${PREFIX}/web/${KEY}/${rel}`;
      const want = expected(rel);
      for (const server of [nginx, embedded]) {
        const res = await rawRequest(server.url, urlPath);
        expect(res.status, `${server.url} ${rel}`).toBe(200);
        expect(header(res, 'content-type')).toBe(want.type);
        expect(header(res, 'docker-content-digest')).toBe(want.digest);
        expect(header(res, 'cache-control')).toBe('no-cache');
      }
    }
    for (const server of [nginx, embedded]) {
      for (const p of [`${PREFIX}/app/${KEY}.json`, `${PREFIX}/app/demo%7Ehello.json`, `${PREFIX}/app/`, `${PREFIX}/${masterRel}redirect.json`, `${PREFIX}/web/${KEY}/redirect.json`, `${PREFIX}/${masterRel}redirect.idx`, `${PREFIX}/web/${KEY}/redirect.idx`]) {
        const res = await rawRequest(server.url, p);
        expect(res.status, `${server.url} ${p}`).toBe(404);
        expect(errorCode(res)).toBe('NAME_UNKNOWN');
      }
    }
  });

  it('answers HEAD, Range and conditional requests alike', async () => {
    const blob = files.find((f) => f.startsWith('blobs/') && f.length > 20)!;
    const urlPath = `${PREFIX}/${masterRel}${blob}`;
    const onDisk = await fs.readFile(path.join(publishedDir, masterRel, blob));
    const size = onDisk.length;
    for (const server of [nginx, embedded]) {
      const head = await rawRequest(server.url, urlPath, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.body.length).toBe(0);
      expect(header(head, 'content-length')).toBe(String(size));
      expect(header(head, 'docker-content-digest')).toBe(blob.slice('blobs/'.length));

      let res = await rawRequest(server.url, urlPath, { headers: { Range: 'bytes=10-19' } });
      expect(res.status, server.url).toBe(206);
      expect(header(res, 'content-range')).toBe(`bytes 10-19/${size}`);
      expect(res.body.equals(onDisk.subarray(10, 20))).toBe(true);

      res = await rawRequest(server.url, urlPath, { headers: { Range: 'bytes=-5' } });
      expect(res.status).toBe(206);
      expect(header(res, 'content-range')).toBe(`bytes ${size - 5}-${size - 1}/${size}`);
      expect(res.body.equals(onDisk.subarray(size - 5))).toBe(true);

      res = await rawRequest(server.url, urlPath, { headers: { Range: `bytes=${size - 3}-` } });
      expect(res.status).toBe(206);
      expect(res.body.equals(onDisk.subarray(size - 3))).toBe(true);

      res = await rawRequest(server.url, urlPath, { headers: { Range: 'bytes=0-1,5-6' } });
      expect(res.status, `${server.url} multiple ranges`).toBe(200);
      expect(res.body.equals(onDisk)).toBe(true);

      res = await rawRequest(server.url, urlPath, { headers: { Range: `bytes=${size}-` } });
      expect(res.status).toBe(416);
      expect(header(res, 'content-range')).toBe(`bytes */${size}`);

      const etag = header(head, 'etag')!;
      res = await rawRequest(server.url, urlPath, { headers: { 'If-None-Match': etag } });
      expect(res.status, `${server.url} If-None-Match`).toBe(304);
      expect(res.body.length).toBe(0);
      res = await rawRequest(server.url, urlPath, { headers: { 'If-Modified-Since': header(head, 'last-modified')! } });
      expect(res.status, `${server.url} If-Modified-Since`).toBe(304);
    }
  });

  it('answers 404 with the same registry JSON error for missing files, directories and temp names', async () => {
    const cases: [string, string][] = [
      [`${masterRel}blobs/sha256:${'0'.repeat(64)}`, 'BLOB_UNKNOWN'],
      [`${masterRel}manifests/oci/nope`, 'MANIFEST_UNKNOWN'],
      [`${masterRel}manifests/2/sha256:${'0'.repeat(64)}`, 'MANIFEST_UNKNOWN'],
      [`app/nope.json`, 'NAME_UNKNOWN'],
      [`${masterRel}blobs`, 'NAME_UNKNOWN'],
      [`${masterRel}blobs/`, 'BLOB_UNKNOWN'],
      [masterRel.slice(0, -1), 'NAME_UNKNOWN'],
      [masterRel, 'NAME_UNKNOWN'],
      [`web/${KEY}`, 'NAME_UNKNOWN'],
      [`web/${KEY}/`, 'NAME_UNKNOWN'],
      [`${masterRel}blobs/.tmp-partial`, 'BLOB_UNKNOWN'],
      [`master/${KEY}/.tmp-20990101T000000.000Z-000/tags/list`, 'NAME_UNKNOWN'],
    ];
    for (const [rel, code] of cases) {
      for (const server of [nginx, embedded]) {
        const res = await rawRequest(server.url, `${PREFIX}/${rel}`);
        expect(res.status, `${server.url} ${rel}`).toBe(404);
        expect(errorCode(res), `${server.url} ${rel}`).toBe(code);
        expect(header(res, 'cache-control')).toBe('no-cache');
      }
    }
    // A key the config doesn't know is guarded like a protected repo (fail closed).
    for (const server of [nginx, embedded]) {
      const res = await rawRequest(server.url, `${PREFIX}/web/nope/tags/list`);
      expect(res.status, server.url).toBe(401);
      expect(errorCode(res)).toBe('UNAUTHORIZED');
      expect(header(res, 'www-authenticate')).toMatch(/^Basic realm="derrick"/);
    }
    // Outside the prefix: nginx's catch-all answers the same JSON.
    const res = await rawRequest(nginx.url, '/nope');
    expect(res.status).toBe(404);
    expect(errorCode(res)).toBe('NAME_UNKNOWN');
  });

  it('refuses traversal and non-canonical paths', async () => {
    const tagsList = `${masterRel}tags/list`;
    const attempts = [
      `${PREFIX}/../../../../etc/passwd`,
      `${PREFIX}/%2e%2e/%2e%2e/%2e%2e/etc/passwd`,
      `${PREFIX}/../${PREFIX.slice(1)}/${tagsList}`,
      `${PREFIX}/web/${KEY}/../${KEY}/tags/list`,
      `${PREFIX}/web/${KEY}/%2e%2e/${KEY}/tags/list`,
      `${PREFIX}/master/./${tagsList.slice('master/'.length)}`,
      `${PREFIX}/master%2f${tagsList.slice('master/'.length)}`,
      `${PREFIX}/master%2F${tagsList.slice('master/'.length)}`,
      `${PREFIX}/master%5c${tagsList.slice('master/'.length)}`,
      `${PREFIX}//${tagsList}`,
      `${PREFIX}/${tagsList}%00`,
      `/x/..${PREFIX}/${tagsList}`,
    ];
    for (const p of attempts) {
      const a = await rawRequest(nginx.url, p);
      expect([400, 404], `nginx ${p}`).toContain(a.status);
      expect(a.text).not.toContain('root:');
      const b = await rawRequest(embedded.url, p);
      expect([400, 404], `embedded ${p}`).toContain(b.status);
    }
    // The canonical path works on both.
    expect((await rawRequest(nginx.url, `${PREFIX}/${tagsList}`)).status).toBe(200);
    expect((await rawRequest(embedded.url, `${PREFIX}/${tagsList}`)).status).toBe(200);
  });

  it('proxies /v2/ to derrick serve with the client Host and X-Forwarded-For', async () => {
    upstreamSeen = [];
    const res = await rawRequest(nginx.url, '/v2/demo/hello/tags/list?n=1&last=a%2Fb', { headers: { Authorization: 'Basic eDp5' } });
    expect(res.status).toBe(200);
    expect(header(res, 'docker-distribution-api-version')).toBe('registry/2.0');
    expect(upstreamSeen).toHaveLength(1);
    const seen = upstreamSeen[0]!;
    expect(seen.url).toBe('/v2/demo/hello/tags/list?n=1&last=a%2Fb');
    expect(seen.headers.host).toBe(`127.0.0.1:${nginx.port}`);
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers.authorization).toBe('Basic eDp5');
  });

  describe('signed URLs', () => {
    const now = () => Math.floor(Date.now() / 1000);

    it('accepts the same signed URL on nginx and the embedded server', async () => {
      for (const rel of files) {
        const uri = `${PREFIX}/${masterRel}${rel}`;
        const signed = `${uri}?${signPath(uri, SECRET, now() + 300)}`;
        const onDisk = await fs.readFile(path.join(publishedDir, masterRel, rel));
        for (const server of [signedNginx, signedEmbedded]) {
          const res = await rawRequest(server.url, signed);
          expect(res.status, `${server.url} ${rel}`).toBe(200);
          expect(res.body.equals(onDisk)).toBe(true);
          expect(header(res, 'content-type')).toBe(expected(rel).type);
          expect(header(res, 'cache-control')).toBe(IMMUTABLE);
        }
      }
      // The signature covers the decoded path: an encoded '~' in the request still verifies.
      const uri = `${PREFIX}/${masterRel}tags/list`;
      const encoded = `${uri.replace('~', '%7E')}?${signPath(uri, SECRET, now() + 300)}`;
      for (const server of [signedNginx, signedEmbedded]) expect((await rawRequest(server.url, encoded)).status).toBe(200);
    });

    it('refuses missing, invalid and expired signatures with 403 DENIED', async () => {
      const uri = `${PREFIX}/${masterRel}tags/list`;
      const cases: [string, string][] = [
        [uri, 'signed URL required'],
        [`${uri}?${signPath(uri, 'wrong', now() + 300)}`, 'invalid signature'],
        [`${uri}?${signPath(`${PREFIX}/${masterRel}redirect.json`, SECRET, now() + 300)}`, 'invalid signature'],
        [`${uri}?${signPath(uri, SECRET, now() - 10)}`, 'signed URL expired'],
      ];
      for (const [url, message] of cases) {
        for (const server of [signedNginx, signedEmbedded]) {
          const res = await rawRequest(server.url, url);
          expect(res.status, `${server.url} ${url}`).toBe(403);
          expect(errorCode(res)).toBe('DENIED');
          expect((res.json() as { errors: { message: string }[] }).errors[0]!.message, `${server.url} ${url}`).toBe(message);
          const head = await rawRequest(server.url, url, { method: 'HEAD' });
          expect(head.status).toBe(403);
        }
      }
      // Missing file: 403 without a signature, 404 with one.
      const missing = `${PREFIX}/${masterRel}blobs/sha256:${'0'.repeat(64)}`;
      for (const server of [signedNginx, signedEmbedded]) {
        expect((await rawRequest(server.url, missing)).status).toBe(403);
        const res = await rawRequest(server.url, `${missing}?${signPath(missing, SECRET, now() + 300)}`);
        expect(res.status).toBe(404);
        expect(errorCode(res)).toBe('BLOB_UNKNOWN');
      }
    });

    it('needs no signature for web/ of a public repo, and never serves app/', async () => {
      for (const server of [signedNginx, signedEmbedded]) {
        expect((await rawRequest(server.url, `${PREFIX}/web/${KEY}/tags/list`)).status).toBe(200);
        expect((await rawRequest(server.url, `${PREFIX}/app/${KEY}.json`)).status).toBe(404);
        const unknown = await rawRequest(server.url, `${PREFIX}/web/nope/tags/list`);
        expect(unknown.status, server.url).toBe(403);
        expect(errorCode(unknown)).toBe('DENIED');
      }
    });
  });
});
