// Disk full: the derrick root on a small tmpfs that fills up mid-publish and mid-fill. The
// previous publish stays served, the CLI names the cause and the path, nothing half-written is
// left in published/ or the store, and once space is freed the next run (or pull) succeeds.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { pullOnce } from '../scripts/soak/puller.js';
import { pushImage } from '../scripts/soak/upstream.js';
import { layout } from '../shared/layout.js';
import { sha256Digest } from '../shared/oci.js';
import { openStore } from '../shared/publish/store.js';
import { derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { requireTool } from './helpers/proc.js';
import { blobRequest, errorCode, errorMessage, findTmpFiles, getManifest, pollUntil, readAppFile, startPtServe, writePtConfig, type PtServe } from './helpers/pull-through.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { canMountTmpfs, mountSmallFs, type SmallFs } from './helpers/small-fs.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { assertNoDebris, checkStore, checkTree, masters, storeListing } from './helpers/tree.js';

const MiB = 1024 * 1024;
const canMount = canMountTmpfs();

describe.skipIf(!canMount)('disk full during derrick publish', () => {
  const REPO = 'full/app';
  let tmp: TmpDir;
  let small: SmallFs;
  let serve: ServeProcess | undefined;
  let images: string;
  let root: string;
  let cfg: string;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-diskfull');
    small = await mountSmallFs(path.join(tmp.dir, 'mnt'), '6m');
    images = path.join(tmp.dir, 'images');
    root = path.join(small.dir, 'var');
    cfg = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(cfg, [`root: ${JSON.stringify(root)}`, 'repos:', `  - name: ${REPO}`, `    from: oci:${images}`, ''].join('\n'));
  });
  afterAll(async () => {
    await serve?.stop();
    await small?.unmount();
    await tmp?.cleanup();
  });

  const pull = (img: GeneratedImage) => pullOnce(serve!.url, { repo: REPO, tag: 'v1', allowed: new Set([img.digest]) });

  it('keeps the previous publish served, names ENOSPC and the path, leaves no debris, and succeeds once space is freed', { timeout: 180_000 }, async () => {
    const small1 = await generateImage({ layoutDir: images, tag: 'v1', seed: 'small', layers: [512 * 1024, 4096] });
    const first = await derrick(['publish', '-c', cfg]);
    expect(first.code, first.stderr).toBe(0);
    const before = await checkTree(root, REPO);
    const mastersBefore = await masters(root, REPO);
    serve = await startServe(cfg);
    await pull(small1);

    // v1 moves to 2 x 3 MiB of incompressible layers: more than the ~5.4 MiB left.
    const big = await generateImage({ layoutDir: images, tag: 'v1', seed: 'big', layers: [3 * MiB, 3 * MiB] });
    expect(big.totalBytes).toBeGreaterThan(small.free());
    const failed = await derrick(['publish', '-c', cfg]);
    expect(failed.code, failed.stderr).toBe(1);
    expect(failed.stderr + failed.stdout).toMatch(/ENOSPC/);
    expect(failed.stderr + failed.stdout, 'the message names a path on the full filesystem').toContain(small.dir);

    // The previous publish is intact and still what is served; nothing half-built is left.
    const after = await checkTree(root, REPO, { previous: before });
    expect([after.web, after.app]).toEqual([before.web, before.app]);
    expect(await masters(root, REPO)).toEqual(mastersBefore);
    await assertNoDebris(root);
    await checkStore(root);
    await pull(small1);
    expect(serve.proc.alive()).toBe(true);

    // Space freed: the next run publishes the new image, and the server moves to it.
    await small.resize('64m');
    const again = await derrick(['publish', '-c', cfg]);
    expect(again.code, again.stderr).toBe(0);
    const final = await checkTree(root, REPO, { previous: after });
    expect(final.file.derrick!.tags.v1).toBe(big.digest);
    await assertNoDebris(root);
    await pollUntil(() => pull(big).then(() => true), 30_000, 'the server to serve the new publish');
  });

  it('a tag move with no new bytes on a disk with no byte left: the same, and no stray repo state or master', { timeout: 180_000 }, async () => {
    // Runs after the test above (space freed, v1 = big). v2 names an image already in the store,
    // so only the small files fail: repo state, tags/list, redirect.json.
    const big = await generateImage({ layoutDir: images, tag: 'v1', seed: 'big', layers: [3 * MiB, 3 * MiB] });
    await generateImage({ layoutDir: images, tag: 'v2', seed: 'big', layers: [3 * MiB, 3 * MiB] });
    const before = await checkTree(root, REPO);
    const mastersBefore = await masters(root, REPO);
    const filler = path.join(small.dir, 'filler');
    await fs.writeFile(filler, Buffer.alloc(small.free(), 1)).catch(() => undefined);
    await fs.appendFile(filler, Buffer.alloc(64 * 1024, 1)).catch(() => undefined);
    const failed = await derrick(['publish', '-c', cfg]);
    expect(failed.code, failed.stderr).toBe(1);
    expect(failed.stderr).toMatch(/ENOSPC/);
    expect(failed.stderr, 'the message names a path on the full filesystem').toContain(small.dir);
    const after = await checkTree(root, REPO, { previous: before });
    expect([after.web, after.app]).toEqual([before.web, before.app]);
    expect(await masters(root, REPO)).toEqual(mastersBefore);
    await assertNoDebris(root);
    expect(await fs.readdir(layout(root).repoStateDir), 'only the repo state file, no writer temp').toEqual([`${REPO.replace('/', '~')}.json`]);
    await pull(big);

    await fs.rm(filler);
    const again = await derrick(['publish', '-c', cfg]);
    expect(again.code, again.stderr).toBe(0);
    const final = await checkTree(root, REPO, { previous: after });
    expect(final.file.derrick!.tags).toEqual({ v1: big.digest, v2: big.digest });
    await assertNoDebris(root);
  });
});

describe.skipIf(!canMount)('disk full under the store', () => {
  let tmp: TmpDir;
  let small: SmallFs;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-diskfull-store');
    small = await mountSmallFs(path.join(tmp.dir, 'mnt'), '1m');
  });
  afterAll(async () => {
    await small?.unmount();
    await tmp?.cleanup();
  });

  it('putBytes (manifests) that hits ENOSPC names the file and leaves no temp file', async () => {
    const l = layout(path.join(small.dir, 'var'));
    const store = await openStore(l);
    const bytes = Buffer.alloc(2 * 1024 * 1024, 7);
    const err = (await store.putBytes(sha256Digest(bytes), bytes).then(() => undefined, (e: Error) => e)) as NodeJS.ErrnoException | undefined;
    expect(err?.code).toBe('ENOSPC');
    expect(await fs.readdir(l.storeBlobsDir), 'temp files left in the store').toEqual([]);
    expect(err?.message).toContain(l.storeBlobsDir);
  });
});

describe.skipIf(!canMount || !requireTool('docker-registry', 'the pull-through disk-full test is skipped'))('disk full during a pull-through fill', () => {
  const UPSTREAM_REPO = 'full/base';
  const CACHE_REPO = `up/${UPSTREAM_REPO}`;
  let tmp: TmpDir;
  let small: SmallFs;
  let reg: Registry;
  let serve: PtServe | undefined;
  let root: string;
  let img: GeneratedImage;
  let img2: GeneratedImage;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-diskfull-pt');
    small = await mountSmallFs(path.join(tmp.dir, 'mnt'), '4m');
    reg = await startRegistry();
    const gen = path.join(tmp.dir, 'gen');
    img = await generateImage({ layoutDir: gen, tag: 'v1', seed: 'pt-big', layers: [6 * MiB, 4096] });
    await pushImage(reg.url, UPSTREAM_REPO, gen, img, 'v1');
    img2 = await generateImage({ layoutDir: gen, tag: 'v2', seed: 'pt-small', layers: [4096] });
    await pushImage(reg.url, UPSTREAM_REPO, gen, img2, 'v2');
    root = path.join(small.dir, 'var');
    const cfg = await writePtConfig(tmp.dir, 'derrick.yaml', { root, routes: [{ prefix: 'up', url: reg.url }] });
    serve = await startPtServe(cfg);
  });
  afterAll(async () => {
    await serve?.stop();
    await reg?.stop();
    await small?.unmount();
    await tmp?.cleanup();
  });

  it('fails the client, stores and publishes nothing partial, and a pull after space is freed succeeds', { timeout: 180_000 }, async () => {
    const m = await getManifest(serve!.url, CACHE_REPO, 'v1');
    expect(m.status).toBe(200);
    const layer = img.manifests[0]!.layers[0]!;
    expect(small.free()).toBeLessThan(6 * MiB);
    // The fill streams to the client while it writes: the disk fills up mid-body, so the client
    // sees its response cut short; only when every byte was received and verified before the
    // writer noticed does it get the whole (correct) blob. Never a complete-looking wrong one.
    const res = await blobRequest(serve!.url, CACHE_REPO, layer, 'GET').catch((err: Error) => err);
    if (!(res instanceof Error)) {
      expect(res.status).toBe(200);
      expect(sha256Digest(res.body)).toBe(layer);
    }

    // Nothing partial: no temp file, no object for the layer, and the cache repo is not published.
    const l = layout(root);
    await pollUntil(async () => (await findTmpFiles(l.storeBlobsDir)).length === 0, 10_000, 'the fill temp file to be removed');
    expect(await storeListing(root)).not.toContain(layer.slice('sha256:'.length));
    expect(await readAppFile(root, CACHE_REPO)).toBeUndefined();
    expect(await findTmpFiles(l.publishedDir)).toEqual([]);
    expect(serve!.proc.alive()).toBe(true);

    // A disk with no byte left: a cold manifest (a tag never pulled) cannot be stored.
    const filler = path.join(small.dir, 'filler');
    await fs.writeFile(filler, Buffer.alloc(Math.max(0, small.free()), 1)).catch(() => undefined);
    await fs.appendFile(filler, Buffer.alloc(64 * 1024, 1)).catch(() => undefined);
    const cold = await getManifest(serve!.url, CACHE_REPO, 'v2');
    // A spec error naming the cause and where: derrick's own disk, not the upstream (503).
    expect(cold.status).toBe(503);
    expect(errorCode(cold)).toBe('UNAVAILABLE');
    expect(errorMessage(cold)).toMatch(/^derrick's store failed/);
    expect(errorMessage(cold)).toMatch(/ENOSPC/);
    // The file it could not write: the blob's temp file, or the fill lock taken before it.
    expect(errorMessage(cold)).toMatch(new RegExp(`'(${escapeRe(l.storeBlobsDir)}|${escapeRe(l.locksDir)})/`));
    expect(await readAppFile(root, CACHE_REPO)).toBeUndefined();
    expect(await findTmpFiles(l.storeBlobsDir)).toEqual([]);

    await fs.rm(filler);
    await small.resize('64m');
    await pollUntil(() => pullOnce(serve!.url, { repo: CACHE_REPO, tag: 'v1', allowed: new Set([img.digest]) }).then(() => true), 30_000, 'a pull after space is freed');
    await pollUntil(() => pullOnce(serve!.url, { repo: CACHE_REPO, tag: 'v2', allowed: new Set([img2.digest]) }).then(() => true), 30_000, 'a pull of v2 after space is freed');
    await checkStore(root);
  });
});

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
