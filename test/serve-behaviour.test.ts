// derrick serve under change and with special data: reload during a real publish, a bad
// redirect file, protected repos with signed URLs, and crane's own redirect files.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../shared/config.js';
import { layout } from '../shared/layout.js';
import { createLogger } from '../shared/log.js';
import { MediaType, sha256Digest } from '../shared/oci.js';
import { startServer, type RunningServer } from '../redirector/serve.js';
import { generateImage } from '../scripts/gen-image.js';
import { derrick } from './helpers/derrick.js';
import { rawRequest } from './helpers/http.js';
import { makeHtpasswd } from './helpers/registry.js';
import { makePublishedTree } from './helpers/published.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/crane');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A pino destination that keeps lines in memory, so a test can assert what was logged. */
function memoryLogger() {
  const lines: string[] = [];
  const stream = { write: (s: string) => void lines.push(s) };
  return { log: createLogger({ level: 'warn', stream }), lines };
}

describe('reload: a real publish while a client polls', () => {
  let tmp: TmpDir;
  let server: RunningServer;

  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('serves the new tag within 1 s of the app swap, and no request fails', async () => {
    tmp = await tmpDir('derrick-reload');
    const tree = await makePublishedTree(tmp.dir, [{ name: 'demo/app', images: [{ tag: 'v1', layers: [100_000] }] }]);
    server = await startServer(tree.config, { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
    const v2 = await tree.addImage('demo/app', { tag: 'v2', layers: [120_000] });

    let stop = false;
    const failures: string[] = [];
    let polls = 0;
    let firstNew: number | undefined;
    const poll = (async () => {
      while (!stop) {
        const [old, fresh] = await Promise.all([
          rawRequest(server.url, '/v2/demo/app/manifests/v1'),
          rawRequest(server.url, '/v2/demo/app/manifests/v2'),
        ]);
        polls++;
        if (old.status !== 200) failures.push(`v1: ${old.status}`);
        if (fresh.status === 200 && firstNew === undefined) {
          firstNew = Date.now();
          expect(fresh.headers['docker-content-digest']).toBe(v2.digest);
        } else if (fresh.status !== 200 && fresh.status !== 404) failures.push(`v2: ${fresh.status}`);
      }
    })();
    const r = await derrick(['publish', '-c', tree.configFile]);
    expect(r.code, r.stderr).toBe(0);
    const l = layout(tree.config.root);
    const swappedAt = (await fs.lstat(l.app('demo/app'))).mtimeMs;
    const deadline = Date.now() + 3000;
    while (firstNew === undefined && Date.now() < deadline) await sleep(5);
    stop = true;
    await poll;
    expect(failures).toEqual([]);
    expect(polls).toBeGreaterThan(10);
    expect(firstNew, 'the new tag was never served').toBeDefined();
    expect(firstNew! - swappedAt).toBeLessThanOrEqual(1000);
  });
});

describe('a bad redirect file', () => {
  let tmp: TmpDir;
  let server: RunningServer;
  const mem = memoryLogger();

  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('keeps the last good version of that repo, leaves the others alone, and logs an error', async () => {
    tmp = await tmpDir('derrick-badfile');
    const tree = await makePublishedTree(tmp.dir, [
      { name: 'good', images: [{ tag: 'latest' }] },
      { name: 'victim', images: [{ tag: 'latest' }] },
    ]);
    server = await startServer(tree.config, { listen: '127.0.0.1:0', log: mem.log });
    const l = layout(tree.config.root);
    // Replace the app link with garbage the way a broken tool would: rename over it.
    const tmpFile = path.join(l.appDir, 'garbage.tmp');
    await fs.writeFile(tmpFile, '{"type": "pulp-docker-redirect", "version": 4, "trunc');
    await fs.rename(tmpFile, l.app('victim'));
    await server.index.reload(l.app('victim'));
    const victim = await rawRequest(server.url, '/v2/victim/manifests/latest');
    expect(victim.status).toBe(200);
    expect(victim.headers['docker-content-digest']).toBe(tree.images.get('victim:latest')!.digest);
    const good = await rawRequest(server.url, '/v2/good/manifests/latest');
    expect(good.status).toBe(200);
    expect(mem.lines.some((line) => line.includes('redirect file rejected') && line.includes('victim'))).toBe(true);
    const metrics = await rawRequest(server.url, '/metrics');
    expect(metrics.text).toMatch(/derrick_redirect_file_errors_total [1-9]/);
  });
});

describe('protected repos and signed URLs', () => {
  let tmp: TmpDir;
  let server: RunningServer;
  const auth = 'Basic ' + Buffer.from('bob:hunter2').toString('base64');

  beforeAll(async () => {
    tmp = await tmpDir('derrick-protected');
    await fs.writeFile(path.join(tmp.dir, 'htpasswd'), makeHtpasswd('bob', 'hunter2') + '\n');
    process.env.DERRICK_TEST_SIGNING = 'sign-me';
    const tree = await makePublishedTree(
      tmp.dir,
      [{ name: 'private/app', protected: true, images: [{ tag: 'latest', layers: [50_000] }] }],
      ['serve:', '  htpasswd: ./htpasswd', '  signing: { secret-env: DERRICK_TEST_SIGNING, ttl: 1s }'].join('\n'),
    );
    server = await startServer(tree.config, { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
  });

  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  it('401 without credentials, 200 with them, 403 once the signed URL expires', async () => {
    const anon = await rawRequest(server.url, '/v2/private/app/manifests/latest');
    expect(anon.status).toBe(401);
    expect(anon.headers['www-authenticate']).toMatch(/^Basic realm="derrick"/);
    const m = await rawRequest(server.url, '/v2/private/app/manifests/latest', { headers: { Authorization: auth, Accept: MediaType.ociManifest } });
    expect(m.status).toBe(200);
    const layer = JSON.parse(m.text).layers[0].digest as string;
    const redirect = await rawRequest(server.url, `/v2/private/app/blobs/${layer}`, { headers: { Authorization: auth } });
    expect(redirect.status).toBe(307);
    const location = redirect.headers.location!;
    expect(location).toMatch(/\?md5=[A-Za-z0-9_-]+&expires=\d+$/);
    const ok = await rawRequest(server.url, location);
    expect(ok.status).toBe(200);
    expect(sha256Digest(ok.body)).toBe(layer);
    const unsigned = await rawRequest(server.url, location.split('?')[0]!);
    expect(unsigned.status).toBe(403);
    const tampered = await rawRequest(server.url, location.replace(/expires=(\d+)/, (_, e) => `expires=${Number(e) + 100}`));
    expect(tampered.status).toBe(403);
    await sleep(2100);
    const expired = await rawRequest(server.url, location);
    expect(expired.status).toBe(403);
    expect(expired.json().errors[0].code).toBe('DENIED');
  });
});

describe('crane redirect files', () => {
  let tmp: TmpDir;
  let server: RunningServer;
  const mem = memoryLogger();

  beforeAll(async () => {
    tmp = await tmpDir('derrick-crane');
    const yaml = `root: ./var\nserve:\n  crane-data: ${FIXTURES}\n  redirect-status: 302\n`;
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: mem.log });
  });

  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });

  const get = (p: string, accept?: string) => rawRequest(server.url, p, { headers: accept ? { Accept: accept } : {} });
  const list = `${MediaType.dockerManifestList}, ${MediaType.dockerManifest}`;

  it.each([
    ['v4: a list to a client that accepts lists', '/v2/acme/tools/manifests/stable', list, 'http://cdn.example.test/pulp/docker/v2/tools/manifests/list/stable'],
    ['v4: amd64 fallback for a schema2-only client', '/v2/acme/tools/manifests/stable', MediaType.dockerManifest, `http://cdn.example.test/pulp/docker/v2/tools/manifests/2/sha256:${'1'.repeat(64)}`],
    ['v4: schema2 tag', '/v2/acme/tools/manifests/2.0', MediaType.dockerManifest, 'http://cdn.example.test/pulp/docker/v2/tools/manifests/2/2.0'],
    ['v4: schema1 for a client without schema2', '/v2/acme/tools/manifests/2.0', undefined, 'http://cdn.example.test/pulp/docker/v2/tools/manifests/1/2.0'],
    ['v4: blobs', `/v2/acme/tools/blobs/sha256:${'9'.repeat(64)}`, undefined, `http://cdn.example.test/pulp/docker/v2/tools/blobs/sha256:${'9'.repeat(64)}`],
    ['v4: tags/list', '/v2/acme/tools/tags/list', undefined, 'http://cdn.example.test/pulp/docker/v2/tools/tags/list'],
    ['v3: schema2 tag (url without trailing slash)', '/v2/acme/base/manifests/9.1', MediaType.dockerManifest, 'http://cdn.example.test/pulp/docker/v2/base/manifests/2/9.1'],
    ['v3: unknown-to-schema2 tag goes to schema1', '/v2/acme/base/manifests/8.0', MediaType.dockerManifest, 'http://cdn.example.test/pulp/docker/v2/base/manifests/1/8.0'],
    ['v2: manifests path unchanged', '/v2/acme/legacy/manifests/latest', MediaType.dockerManifest, 'http://cdn.example.test/legacy/manifests/latest'],
  ])('%s', async (_name, p, accept, location) => {
    const r = await get(p, accept);
    expect(r.status).toBe(302);
    expect(r.headers.location).toBe(location);
  });

  it('skips v1 and bad-version files without losing the others', async () => {
    // Not served: answered like any unknown name (401 to an anonymous caller, see access.ts).
    expect((await get('/v2/acme/old/manifests/latest')).status).toBe(401);
    expect((await get('/v2/acme/broken/manifests/latest')).status).toBe(401);
    expect(server.index.names()).toEqual(['acme/base', 'acme/legacy', 'acme/tools']);
    expect(mem.lines.some((l) => l.includes('wrong_version.json'))).toBe(true);
  });

  it('derrick publishes win over a crane file with the same name', async () => {
    const layoutDir = path.join(tmp.dir, 'img');
    const img = await generateImage({ layoutDir, tag: 'stable' });
    const yaml = `root: ./var\nrepos:\n  - name: acme/tools\n    from: oci:${layoutDir}\n`;
    const file = path.join(tmp.dir, 'pub.yaml');
    await fs.writeFile(file, yaml);
    const r = await derrick(['publish', '-c', file]);
    expect(r.code, r.stderr).toBe(0);
    await server.index.reload();
    const m = await get('/v2/acme/tools/manifests/stable', MediaType.ociManifest);
    expect(m.status).toBe(200);
    expect(m.headers['docker-content-digest']).toBe(img.digest);
  });
});
