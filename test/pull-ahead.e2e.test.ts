// Pull-ahead (issue 12): serving an unpublished image manifest starts single-flight fills of its
// blobs, so the image is stored and committed without the client asking for a blob, a client
// pulling meanwhile joins those fills (one upstream GET per blob), and `pull-ahead: false` turns
// it off. Real docker-registry upstream (behind the fault proxy to slow blob answers), real skopeo.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { exists, getManifest, pullTo, seedImage, sleep, startPtServe, storeBlobPath, waitForCommit, writePtConfig, type PtServe, type SeededImage } from './helpers/pull-through.js';
import { requireTool } from './helpers/proc.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = requireTool('docker-registry', 'pull-ahead e2e tests are skipped') && requireTool('skopeo', 'pull-ahead e2e tests are skipped');

describe.skipIf(!hasTools)('pull-ahead (real docker-registry upstream)', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let proxy: FaultProxy;
  let serve: PtServe;
  let root: string;
  const img: Record<string, SeededImage> = {};

  beforeAll(async () => {
    tmp = await tmpDir('derrick-pull-ahead');
    reg = await startRegistry();
    proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
    const layers = [300_000, 500_000, 200_000, 400_000, 100_000];
    await Promise.all([
      seedImage(reg, tmp.dir, 'ahead/alone', { tag: 'v1', seed: 'ahead-alone', layers }).then((s) => (img.alone = s)),
      seedImage(reg, tmp.dir, 'ahead/joined', { tag: 'v1', seed: 'ahead-joined', layers }).then((s) => (img.joined = s)),
      seedImage(reg, tmp.dir, 'ahead/off', { tag: 'v1', seed: 'ahead-off', layers }).then((s) => (img.off = s)),
    ]);
    const dir = path.join(tmp.dir, 'serve');
    root = path.join(dir, 'var');
    const file = await writePtConfig(dir, 'derrick.yaml', {
      routes: [
        { prefix: 'on', url: proxy.url, tagTtl: '1h' },
        { prefix: 'off', url: proxy.url, tagTtl: '1h', pullAhead: false },
      ],
    });
    serve = await startPtServe(file);
  });

  afterAll(async () => {
    await serve?.stop();
    await proxy?.close();
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('a manifest GET alone: every blob is fetched once and the image committed, no blob asked for by the client', async () => {
    const im = img.alone!;
    const res = await getManifest(serve.url, 'on/ahead/alone', 'v1');
    expect(res.status, res.text).toBe(200);
    // Committed: a blob HEAD is answered with the redirect to the published tree.
    expect(await waitForCommit(serve.url, 'on/ahead/alone', im.blobs.at(-1)!, 20_000)).toMatch(/\/published\/master\//);
    for (const d of im.blobs) {
      expect(await exists(storeBlobPath(root, d)), `stored ${d}`).toBe(true);
      expect(await reg.waitForRequests('GET', `/v2/ahead/alone/blobs/${d}`, 1), `upstream GETs of ${d}`).toBe(1);
    }
    // derrick made only those: the client's HEAD above was answered from the published tree.
    await sleep(300);
    for (const d of im.blobs) expect(reg.blobGets(d, 'ahead/alone')).toBe(1);
  });

  it('clients pulling while pull-ahead fills run join them: exactly one upstream GET per blob', async () => {
    const im = img.joined!;
    // Slow every blob answer so the pulls surely overlap the pull-ahead fills.
    const delay = proxy.addRule({ method: 'GET', path: /^\/v2\/ahead\/joined\/blobs\//, action: { kind: 'delay', ms: 800 } });
    try {
      const first = await getManifest(serve.url, 'on/ahead/joined', 'v1');
      expect(first.status).toBe(200);
      const digests = await Promise.all(
        Array.from({ length: 3 }, (_, i) => pullTo(serve.host, 'on/ahead/joined:v1', path.join(tmp.dir, 'out', `joined-${i}`), { dest: 'dir' })),
      );
      for (const d of digests) expect(d).toBe(im.digest);
    } finally {
      proxy.clearRules();
    }
    expect(delay.hits()).toBe(im.blobs.length);
    await waitForCommit(serve.url, 'on/ahead/joined', im.blobs.at(-1)!, 20_000);
    await sleep(300);
    for (const d of im.blobs) expect(reg.blobGets(d, 'ahead/joined'), `upstream GETs of ${d}`).toBe(1);
  });

  it('pull-ahead: false: a manifest GET fetches no blob', async () => {
    const im = img.off!;
    const res = await getManifest(serve.url, 'off/ahead/off', 'v1');
    expect(res.status).toBe(200);
    await sleep(1500);
    for (const d of im.blobs) {
      expect(reg.blobGets(d, 'ahead/off'), `upstream GETs of ${d}`).toBe(0);
      expect(await exists(storeBlobPath(root, d))).toBe(false);
    }
    // And the cache still works the ordinary way.
    expect(await pullTo(serve.host, 'off/ahead/off:v1', path.join(tmp.dir, 'out', 'off'), { dest: 'dir' })).toBe(im.digest);
    await fs.rm(path.join(tmp.dir, 'out', 'off'), { recursive: true, force: true });
  });
});
