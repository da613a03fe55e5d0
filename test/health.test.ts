// /healthz and /readyz on the real `derrick serve`: unauthenticated even when every /v2 request
// needs credentials, outside /v2, and /readyz turns 503 (naming the path) while the published
// tree is gone, and back to 200 when it returns, while /healthz stays 200 throughout.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout } from '../shared/layout.js';
import { startServe, type ServeProcess } from './helpers/derrick.js';
import { rawRequest } from './helpers/http.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { writeHtpasswd } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

describe('health endpoints (real serve, anonymous: false)', () => {
  let tmp: TmpDir;
  let tree: PublishedTree;
  let serve: ServeProcess;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-health');
    await writeHtpasswd(tmp.dir, { alice: 'secret' });
    tree = await makePublishedTree(tmp.dir, [{ name: 'demo/h', images: [{ tag: 'v1', layers: [1000] }] }], 'serve:\n  anonymous: false\n  htpasswd: ./htpasswd\n');
    serve = await startServe(tree.configFile);
  });
  afterAll(async () => {
    await serve?.stop();
    await tmp?.cleanup();
  });

  it('answer without credentials while /v2 asks for them; HEAD works; not cached', async () => {
    expect((await rawRequest(serve.url, '/v2/')).status).toBe(401);
    const h = await rawRequest(serve.url, '/healthz');
    expect(h.status).toBe(200);
    expect(h.json()).toEqual({ status: 'ok' });
    const r = await rawRequest(serve.url, '/readyz');
    expect(r.status, r.text).toBe(200);
    expect(r.json()).toEqual({ status: 'ready' });
    expect(r.headers['cache-control']).toBe('no-store');
    expect((await rawRequest(serve.url, '/readyz', { method: 'HEAD' })).status).toBe(200);
  });

  it('/readyz is 503 naming the missing published dir while it is gone; /healthz stays 200', async () => {
    const l = layout(tree.config.root);
    const away = `${l.publishedDir}.away`;
    await fs.rename(l.publishedDir, away);
    try {
      const r = await rawRequest(serve.url, '/readyz');
      expect(r.status, r.text).toBe(503);
      expect(r.json().status).toBe('not ready');
      expect(r.json().problems).toContain(`${l.publishedDir}: ENOENT`);
      expect((await rawRequest(serve.url, '/healthz')).status).toBe(200);
    } finally {
      await fs.rename(away, l.publishedDir);
    }
    const back = await rawRequest(serve.url, '/readyz');
    expect(back.status, back.text).toBe(200);
    // Only app/ missing (a tree with nothing published yet is not a tree derrick can serve from).
    await fs.rename(l.appDir, `${l.appDir}.away`);
    try {
      const r = await rawRequest(serve.url, '/readyz');
      expect(r.status).toBe(503);
      expect(r.json().problems).toEqual([`${path.join(l.publishedDir, 'app')}: ENOENT`]);
    } finally {
      await fs.rename(`${l.appDir}.away`, l.appDir);
    }
  });
});
