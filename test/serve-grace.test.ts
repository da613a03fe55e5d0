// Invariant 5 on the wire: a blob of a publish replaced less than `grace` ago still gets its
// redirect (into the old master, which still has the file), and past `grace` it is unknown. The
// real `derrick serve` over a tree made by real publishes; the publish swaps while it runs.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readIndexJson, REF_NAME } from './helpers/layout.js';
import { derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { rawRequest } from './helpers/http.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { pollUntil } from './helpers/pull-through.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { checkTree } from './helpers/tree.js';

const REPO = 'demo/grace';
const GRACE_MS = 4000;
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('blob redirects within grace of a swap (real serve, real publishes)', () => {
  let tmp: TmpDir;
  let tree: PublishedTree;
  let serve: ServeProcess;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-grace');
    tree = await makePublishedTree(tmp.dir, [
      { name: REPO, images: [{ tag: 'keep', layers: [20_000] }, { tag: 'gone', seed: 'only-in-the-old-publish', layers: [60_000] }] },
    ]);
    // The same tree, served with a short grace.
    const yaml = (await fs.readFile(tree.configFile, 'utf8')).replace(/^grace: .*$/m, `grace: ${GRACE_MS / 1000}s`);
    expect(yaml).toContain(`grace: ${GRACE_MS / 1000}s`);
    const serveCfg = path.join(tmp.dir, 'serve.yaml');
    await fs.writeFile(serveCfg, yaml);
    serve = await startServe(serveCfg);
  });
  afterAll(async () => {
    await serve?.stop();
    await tmp?.cleanup();
  });

  it('redirects a replaced publish\'s blob into its old master until grace ends, then answers BLOB_UNKNOWN', async () => {
    const before = await checkTree(tree.config.root, REPO);
    const gone = tree.images.get(`${REPO}:gone`)!;
    const keep = tree.images.get(`${REPO}:keep`)!;
    const only = gone.manifests[0]!.layers.filter((d) => !keep.blobs.includes(d));
    expect(only.length).toBeGreaterThan(0);
    const blob = only[0]!;
    const url = `/v2/${REPO}/blobs/${blob}`;
    const r0 = await rawRequest(serve.url, url);
    expect(r0.status, r0.text).toBe(307);

    // Drop the tag at the source and publish: the new master no longer names the blob.
    const layoutDir = path.join(tmp.dir, 'images', REPO.replaceAll('/', '_'));
    const index = await readIndexJson(layoutDir);
    index.manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME] !== 'gone');
    await fs.writeFile(path.join(layoutDir, 'index.json'), JSON.stringify(index));
    const pub = await derrick(['publish', '-c', tree.configFile]);
    expect(pub.code, pub.stdout + pub.stderr).toBe(0);
    const after = await checkTree(tree.config.root, REPO);
    expect(after.web > before.web).toBe(true);
    expect(after.file.derrick!.blobs[blob]).toBeUndefined();
    const swapped = Date.now();
    await pollUntil(async () => (await rawRequest(serve.url, `/v2/${REPO}/manifests/gone`)).status === 404, 5000, 'serve drops the tag');
    // serve started the grace period when it loaded the new publish: no later than now.
    const loaded = Date.now();

    // Within grace: still a redirect, into the old master, whose file has the right bytes.
    const r1 = await rawRequest(serve.url, url);
    expect(Date.now() - swapped, 'still within grace when asked').toBeLessThan(GRACE_MS);
    expect(r1.status, r1.text).toBe(307);
    const location = new URL(String(r1.headers.location), serve.url);
    expect(location.pathname).toContain(`/master/${REPO.replaceAll('/', '~')}/${before.web}/`);
    const file = await rawRequest(location.origin, location.pathname + location.search);
    expect(file.status).toBe(200);
    expect(sha(file.body)).toBe(blob);

    // Past grace: unknown.
    await new Promise((r) => setTimeout(r, Math.max(0, loaded + GRACE_MS + 500 - Date.now())));
    const r2 = await rawRequest(serve.url, url);
    expect(r2.status, r2.text).toBe(404);
    expect(r2.json().errors[0].code).toBe('BLOB_UNKNOWN');
    // A blob of the current publish is unaffected.
    expect((await rawRequest(serve.url, `/v2/${REPO}/blobs/${keep.manifests[0]!.layers[0]!}`)).status).toBe(307);
  });
});
