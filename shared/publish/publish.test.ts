// publishRepo on a real filesystem, with the symlink swap made to fail on demand: a deterministic
// stand-in for a kill between the web and the app swap (the crash test hits it by chance).
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import fsSync from 'node:fs';
import { REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME, TAGS_LIST_REL_PATH, layout, masterName, type Layout } from '../layout.js';
import { MediaType, sha256Digest } from '../oci.js';
import { assertNoDebris, checkStore, checkTree, masters } from '../../test/helpers/tree.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { serializeRedirectFile } from '../redirect-file.js';
import { decodeRedirectIndex, indexTags } from '../redirect-index.js';
import { buildRedirectFile, nextMasterName, publishRepo } from './publish.js';
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

const dg = (c: string) => `sha256:${c.repeat(64)}`;

describe('buildRedirectFile', () => {
  const l = layout('/srv/derrick');
  const [D1, D2, L1, L2, L3, O1] = ['1', '2', '3', '4', '5', '6'].map(dg) as [string, string, string, string, string, string];
  const amd64 = { os: 'linux', architecture: 'amd64' };
  const arm64 = { os: 'linux', architecture: 'arm64' };
  const state: RepoState = {
    name: 'a/b', source: 's', lastSync: '', etags: {}, manifestBlobs: {}, referrers: {},
    blobs: { [dg('b')]: 10 },
    manifests: {
      [D1]: { mediaType: MediaType.dockerManifest, size: 1 },
      [D2]: { mediaType: MediaType.dockerManifest, size: 2 },
      // A list whose amd64 child is a schema 2 manifest: crane's amd64 fallback names it.
      [L1]: { mediaType: MediaType.dockerManifestList, size: 3, children: [{ digest: D2, platform: arm64 }, { digest: D1, platform: amd64 }] },
      // Its amd64 child is an OCI manifest: no fallback.
      [L2]: { mediaType: MediaType.dockerManifestList, size: 4, children: [{ digest: O1, platform: amd64 }] },
      // Its amd64 child was never fetched: no fallback either.
      [L3]: { mediaType: MediaType.dockerManifestList, size: 5, children: [{ digest: dg('f'), platform: amd64 }, { digest: D1, platform: arm64 }] },
      [O1]: { mediaType: MediaType.ociManifest, size: 6 },
    },
    tags: { d: D1, l: L1, l2: L2, l3: L3, o: O1 },
  };
  const M = '20260101T000000.000Z-000';

  it("lists schema 2 manifests and lists by digest then tag, and the amd64 fallback of each list's tag", () => {
    const now = new Date('2026-01-01T00:00:00.5Z');
    const file = buildRedirectFile(state, l, M, true, 'https://cdn.example/pub//', now);
    expect(file).toEqual({
      type: 'pulp-docker-redirect',
      version: 4,
      repository: 'a~b',
      'repo-registry-id': 'a/b',
      url: `https://cdn.example/pub/master/a~b/${M}/`,
      protected: true,
      schema2_data: [D1, D2, 'd'],
      manifest_list_data: [L1, L2, L3, 'l', 'l2', 'l3'],
      manifest_list_amd64_tags: { l: [D1, 2] },
      derrick: { version: 1, master: M, published: '2026-01-01T00:00:00.500Z', tags: state.tags, manifests: state.manifests, blobs: state.blobs, referrers: {} },
    });
    expect(() => serializeRedirectFile(file)).not.toThrow();
    // Without a published URL the URL is relative to the published dir.
    expect(buildRedirectFile(state, l, M, false, undefined, now)).toMatchObject({ url: `master/a~b/${M}/`, protected: false });
    expect(buildRedirectFile(state, l, M, false, 'https://cdn.example/pub', now).url).toBe(`https://cdn.example/pub/master/a~b/${M}/`);
  });
});

describe('nextMasterName', () => {
  let tmp: TmpDir;
  let l: Layout;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-master-name');
    l = layout(tmp.dir);
  });
  afterEach(async () => {
    await tmp.cleanup();
  });
  const now = new Date('2026-05-05T05:05:05.005Z');
  const existing = async (...names: string[]) => {
    for (const n of names) await fs.mkdir(path.join(l.masterDir('r'), n), { recursive: true });
  };

  it("is now's name when no later master exists; temp and foreign names do not count", async () => {
    expect(await nextMasterName(l, 'r', now)).toBe(masterName(now));
    await existing(masterName(new Date(now.getTime() - 1), 7), '.tmp-29990101T000000.000Z-000.1.0123456789ab', 'zzz');
    expect(await nextMasterName(l, 'r', now)).toBe(masterName(now));
  });

  it('follows the last master: next sequence in the same millisecond or after a clock step back, next millisecond after -999', async () => {
    // Many names, so the directory's listing order is unlikely to put the last one last.
    await existing(...[0, 3, 1, 2, 9, 5, 12, 7, 11, 4, 8, 10, 6].map((i) => masterName(now, i)));
    expect(await nextMasterName(l, 'r', now)).toBe(masterName(now, 13));
    const later = new Date(now.getTime() + 5000);
    await existing(masterName(later, 0));
    expect(await nextMasterName(l, 'r', now)).toBe(masterName(later, 1));
    await existing(masterName(later, 999));
    expect(await nextMasterName(l, 'r', now)).toBe(masterName(new Date(later.getTime() + 1)));
  });
});

describe('publishRepo, more', () => {
  let tmp: TmpDir;
  let l: Layout;
  let store: Store;
  let clock = Date.parse('2026-04-01T00:00:00Z');
  const now = () => new Date((clock += 1000));
  beforeEach(async () => {
    tmp = await tmpDir('derrick-publish-more');
    l = layout(path.join(tmp.dir, 'root'));
    store = await openStore(l);
    swapControl.failAppSwap = false;
    swapControl.failWebSwap = false;
    swapControl.webSwapped = false;
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  it('writes a read-only tags/list and redirect file, a path per digest and per tag, all as the redirect file says', async () => {
    const state = await stateFor(store, { v2: 'b', v1: 'a' });
    const at = now();
    const r = await publishRepo({ layout: l, state, protected: false, publishedUrl: 'https://cdn.example', now: () => at });
    expect(r).toEqual({ outcome: 'published', master: masterName(at), linked: 2 * 4, copied: 0 });
    const dir = l.master(REPO, r.master);
    const tagsList = path.join(dir, TAGS_LIST_REL_PATH);
    expect(await fs.readFile(tagsList, 'utf8')).toBe(JSON.stringify({ name: REPO, tags: ['v1', 'v2'] }) + '\n');
    const redirect = path.join(dir, REDIRECT_FILE_NAME);
    expect(await fs.readFile(redirect, 'utf8')).toBe(serializeRedirectFile(buildRedirectFile(state, l, r.master, false, 'https://cdn.example', at)));
    // Its index, made from those very bytes.
    const index = path.join(dir, REDIRECT_INDEX_NAME);
    const decoded = decodeRedirectIndex(await fs.readFile(index), await fs.readFile(redirect));
    expect([decoded.name, decoded.master, indexTags(decoded).map(([t]) => t)]).toEqual([REPO, r.master, ['v1', 'v2']]);
    for (const f of [tagsList, redirect, index]) expect((await fs.stat(f)).mode & 0o777).toBe(0o444);
    expect(await fs.readlink(l.web(REPO))).toBe(`../master/acme~web/${r.master}`);
    expect(await fs.readlink(l.app(REPO))).toBe(`../master/acme~web/${r.master}/${REDIRECT_FILE_NAME}`);
    const v1 = state.tags.v1!;
    expect((await fs.stat(path.join(dir, 'manifests/oci/v1'))).ino).toBe((await fs.stat(l.storeBlob(v1))).ino);
    expect((await fs.stat(path.join(dir, 'manifests/oci', v1))).ino).toBe((await fs.stat(l.storeBlob(v1))).ino);
    await checkTree(l.root, REPO);
  });

  it('copies the objects when the published tree is on another filesystem than the store', async () => {
    const shm = fsSync.mkdtempSync('/dev/shm/derrick-publish-');
    try {
      await fs.symlink(shm, l.publishedDir);
      const r = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now });
      expect(r).toMatchObject({ outcome: 'published', linked: 0, copied: 4 });
      await checkTree(l.root, REPO);
    } finally {
      fsSync.rmSync(shm, { recursive: true, force: true });
    }
  });

  it('a dry run names the master it would build and changes nothing, not even a swap left behind', async () => {
    const at = now();
    const dry = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, dryRun: true, now: () => at });
    expect(dry).toEqual({ outcome: 'published', master: masterName(at), linked: 0, copied: 0 });
    expect(await fs.readdir(l.publishedDir).catch(() => [])).toEqual([]);
    const m1 = (await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now })).master;
    // A crash between the swaps, then dry runs: with new content and with the same.
    swapControl.failAppSwap = true;
    swapControl.webSwapped = false;
    await expect(publishRepo({ layout: l, state: await stateFor(store, { v1: 'b' }), protected: false, now })).rejects.toThrow(/simulated crash/);
    swapControl.failAppSwap = false;
    const before = await checkTree(l.root, REPO, { previous: { web: m1, app: m1 } });
    expect(before.app).toBe(m1);
    const dryNew = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'c' }), protected: false, dryRun: true, now });
    expect(dryNew.outcome).toBe('published');
    const drySame = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'b' }), protected: false, dryRun: true, now });
    expect(drySame).toEqual({ outcome: 'unchanged', master: before.web, linked: 0, copied: 0 });
    expect(await checkTree(l.root, REPO, { previous: { web: m1, app: m1 } })).toMatchObject({ web: before.web, app: m1 });
    expect(await masters(l.root, REPO)).toEqual([m1, before.web]);
  });

  it('publishes again when a tag is added or moved, or when the served master has no readable redirect file', async () => {
    const m1 = (await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now })).master;
    const added = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a', v2: 'b' }), protected: false, now });
    expect(added.outcome).toBe('published');
    const moved = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a', v2: 'c' }), protected: false, now });
    expect(moved.outcome).toBe('published');
    const dropped = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now });
    expect(dropped.outcome).toBe('published');
    expect(await masters(l.root, REPO)).toEqual([m1, added.master, moved.master, dropped.master]);
    // The served master's redirect file is gone (damage): the next run rebuilds rather than trusts it.
    const served = path.join(l.master(REPO, dropped.master), REDIRECT_FILE_NAME);
    await fs.rm(served);
    const rebuilt = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now });
    expect(rebuilt.outcome).toBe('published');
    await checkTree(l.root, REPO);
  });

  it('an unchanged publish touches nothing: the same links, no new master', async () => {
    const m1 = (await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now })).master;
    const inodes = async () => [(await fs.lstat(l.web(REPO))).ino, (await fs.lstat(l.app(REPO))).ino];
    const before = await inodes();
    expect(await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now })).toMatchObject({ outcome: 'unchanged', master: m1 });
    expect(await inodes()).toEqual(before);
    expect(await masters(l.root, REPO)).toEqual([m1]);
  });

  it('app is never moved to a served master that has no redirect file, even when app is behind web', async () => {
    const m1 = (await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false, now })).master;
    swapControl.failAppSwap = true;
    await expect(publishRepo({ layout: l, state: await stateFor(store, { v1: 'b' }), protected: false, now })).rejects.toThrow(/simulated crash/);
    swapControl.failAppSwap = false;
    const { web } = await checkTree(l.root, REPO, { previous: { web: m1, app: m1 } });
    await fs.rm(path.join(l.master(REPO, web), REDIRECT_FILE_NAME)); // damage
    // A build that fails (an object missing from the store) must leave app where it was.
    const state = await stateFor(store, { v1: 'c' });
    await store.remove(Object.keys(state.blobs)[0]!);
    await expect(publishRepo({ layout: l, state, protected: false, now })).rejects.toThrow(/ENOENT/);
    expect(await fs.readlink(l.app(REPO))).toBe(`../master/acme~web/${m1}/${REDIRECT_FILE_NAME}`);
    expect(await fs.readdir(l.masterDir(REPO))).toEqual(expect.not.arrayContaining([expect.stringMatching(/^\.tmp-/)]));
  });

  it('names the master by the wall clock when no clock is passed', async () => {
    const before = masterName(new Date());
    const r = await publishRepo({ layout: l, state: await stateFor(store, { v1: 'a' }), protected: false });
    expect(r.master >= before && r.master <= masterName(new Date(), 999)).toBe(true);
  });

  it('a repo with no tags still gets a complete master: blobs/, manifests/, tags/list and the redirect file', async () => {
    const r = await publishRepo({ layout: l, state: await stateFor(store, {}), protected: false, now });
    expect(r).toMatchObject({ outcome: 'published', linked: 0 });
    expect((await fs.readdir(l.master(REPO, r.master))).sort()).toEqual(['blobs', 'manifests', REDIRECT_INDEX_NAME, REDIRECT_FILE_NAME, 'tags']);
    expect(await fs.readFile(path.join(l.master(REPO, r.master), TAGS_LIST_REL_PATH), 'utf8')).toBe(`{"name":"${REPO}","tags":[]}\n`);
  });
});
