// publishRepo on a real filesystem, with the symlink swap made to fail on demand: a deterministic
// stand-in for a kill between the web and the app swap (the crash test hits it by chance).
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { layout, type Layout } from '../layout.js';
import { MediaType, sha256Digest } from '../oci.js';
import { assertNoDebris, checkStore, checkTree, masters } from '../../test/helpers/tree.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { publishRepo } from './publish.js';
import type { RepoState } from './repo-state.js';
import { openStore, type Store } from './store.js';

// failAppSwap: the app swap that follows this run's web swap dies (a kill between the two renames);
// an app swap before any web swap (finishing an earlier interrupted run) goes through.
const swapControl = vi.hoisted(() => ({ failAppSwap: false, failWebSwap: false, webSwapped: false }));
vi.mock('./swap.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('./swap.js')>();
  return {
    ...real,
    swapSymlink: async (link: string, target: string) => {
      const isApp = link.endsWith('.json');
      if (isApp && swapControl.failAppSwap && swapControl.webSwapped) throw new Error('simulated crash before the app swap');
      if (!isApp && swapControl.failWebSwap) throw new Error('simulated crash before the web swap');
      await real.swapSymlink(link, target);
      if (!isApp) swapControl.webSwapped = true;
    },
  };
});

const REPO = 'acme/web';

/** Puts a one-layer OCI image for each tag into the store; returns the repo state naming them. */
async function stateFor(store: Store, tags: Record<string, string>): Promise<RepoState> {
  const state: RepoState = { name: REPO, source: 'test', lastSync: new Date().toISOString(), etags: {}, tags: {}, manifests: {}, blobs: {}, referrers: {}, manifestBlobs: {} };
  for (const [tag, content] of Object.entries(tags)) {
    const layer = Buffer.from(`layer of ${content}`);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] } }));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length },
        layers: [{ mediaType: MediaType.ociLayer, digest: sha256Digest(layer), size: layer.length }],
      }),
    );
    for (const b of [layer, config, manifest]) await store.putBytes(sha256Digest(b), b);
    state.tags[tag] = sha256Digest(manifest);
    state.manifests[sha256Digest(manifest)] = { mediaType: MediaType.ociManifest, size: manifest.length };
    state.blobs[sha256Digest(config)] = config.length;
    state.blobs[sha256Digest(layer)] = layer.length;
  }
  return state;
}

describe('publishRepo', () => {
  let tmp: TmpDir;
  let l: Layout;
  let store: Store;
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const now = () => new Date((clock += 1000));

  beforeEach(async () => {
    tmp = await tmpDir('derrick-publish-unit');
    l = layout(path.join(tmp.dir, 'root'));
    store = await openStore(l);
    swapControl.failAppSwap = false;
    swapControl.failWebSwap = false;
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  const publish = async (tags: Record<string, string>, extra: { protected?: boolean; republish?: boolean } = {}) => {
    const state = await stateFor(store, tags);
    swapControl.webSwapped = false;
    return publishRepo({ layout: l, state, protected: extra.protected ?? false, republish: extra.republish, now });
  };

  it('publishes a complete master, swaps web then app, and reports unchanged content as unchanged', async () => {
    const r1 = await publish({ v1: 'a' });
    expect(r1).toMatchObject({ outcome: 'published', linked: 3 + 1, copied: 0 }); // 2 blobs, manifest, tag path
    const t1 = await checkTree(l.root, REPO);
    expect(t1).toMatchObject({ web: r1.master, app: r1.master });
    const r2 = await publish({ v1: 'a' });
    expect(r2).toEqual({ outcome: 'unchanged', master: r1.master, linked: 0, copied: 0 });
    expect(await masters(l.root, REPO)).toEqual([r1.master]);
    // protected is part of what is published.
    const r3 = await publish({ v1: 'a' }, { protected: true });
    expect(r3.outcome).toBe('published');
    expect((await checkTree(l.root, REPO)).file.protected).toBe(true);
    await assertNoDebris(l.root);
  });

  it('republish builds a new master for unchanged tags (after a --force-fetch repair)', async () => {
    const r1 = await publish({ v1: 'a' });
    const r2 = await publish({ v1: 'a' }, { republish: true });
    expect(r2.outcome).toBe('published');
    expect(r2.master > r1.master).toBe(true);
    await checkTree(l.root, REPO, { previous: { web: r1.master, app: r1.master } });
  });

  it('a crash between the swaps leaves web new and app previous; the next publish never leaves app two behind', async () => {
    const m1 = (await publish({ v1: 'a' })).master;
    swapControl.failAppSwap = true;
    await expect(publish({ v1: 'b' })).rejects.toThrow(/simulated crash/);
    const t2 = await checkTree(l.root, REPO, { previous: { web: m1, app: m1 } });
    expect(t2.app).toBe(m1);
    expect(t2.web > m1).toBe(true);

    // Another change, and another crash at the same point: app must have caught up with the web
    // master of the interrupted run (the previous publish), not stay at m1 two publishes back.
    await expect(publish({ v1: 'c' })).rejects.toThrow(/simulated crash/);
    const t3 = await checkTree(l.root, REPO, { previous: { web: t2.web, app: t2.app } });
    expect(t3.web > t2.web).toBe(true);
    expect(t3.app).toBe(t2.web);

    // The next run with the same content completes the swap.
    swapControl.failAppSwap = false;
    const r4 = await publish({ v1: 'c' });
    expect(r4).toMatchObject({ outcome: 'unchanged', master: t3.web });
    const t4 = await checkTree(l.root, REPO);
    expect(t4).toMatchObject({ web: t3.web, app: t3.web });
    await assertNoDebris(l.root);
  });

  it('a crash before the web swap leaves the previous publish served and an unserved complete master', async () => {
    const m1 = (await publish({ v1: 'a' })).master;
    swapControl.failWebSwap = true;
    await expect(publish({ v1: 'b' })).rejects.toThrow(/simulated crash/);
    const t = await checkTree(l.root, REPO, { previous: { web: m1, app: m1 } });
    expect(t).toMatchObject({ web: m1, app: m1 });
    expect((await masters(l.root, REPO)).length).toBe(2);
    swapControl.failWebSwap = false;
    const r = await publish({ v1: 'b' });
    expect(r.outcome).toBe('published');
    await checkTree(l.root, REPO, { previous: { web: m1, app: m1 } });
  });

  it('a build that cannot link an object leaves the served publish and no temp master', async () => {
    const m1 = (await publish({ v1: 'a' })).master;
    const state = await stateFor(store, { v1: 'x' });
    const [layer] = Object.keys(state.blobs).filter((d) => state.blobs[d]! < 100);
    await store.remove(layer!);
    await expect(publishRepo({ layout: l, state, protected: false, now })).rejects.toThrow(/ENOENT/);
    expect(await checkTree(l.root, REPO)).toMatchObject({ web: m1, app: m1 });
    expect(await masters(l.root, REPO)).toEqual([m1]);
    await assertNoDebris(l.root);
    await checkStore(l.root);
  });

  it('names masters in time order, unique within one millisecond', async () => {
    const frozen = () => new Date('2026-02-02T00:00:00.000Z');
    const names: string[] = [];
    for (const c of ['a', 'b', 'c']) names.push((await publishRepo({ layout: l, state: await stateFor(store, { v1: c }), protected: false, now: frozen })).master);
    expect(new Set(names).size).toBe(3);
    expect([...names].sort()).toEqual(names);
    expect(await fs.readdir(l.masterDir(REPO))).toEqual(expect.arrayContaining(names));
  });
});
