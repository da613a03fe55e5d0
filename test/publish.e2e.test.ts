// End to end: a real docker-registry seeded by skopeo, and an OCI layout, published by the real
// CLI (`node dist/cli.js publish`). Each step asserts the invariants on disk with checkTree.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { blobRelPath, layout, manifestRelPath } from '../shared/layout.js';
import { MediaType, digestHex, parseManifest } from '../shared/oci.js';
import { requireTool } from './helpers/proc.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { fetchManifest, seedRegistry } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { derrick } from './helpers/derrick.js';
import { checkStore, checkTree, masters, storeListing, type TreeState } from './helpers/tree.js';

const hasTools = requireTool('docker-registry', 'publish e2e tests are skipped') && requireTool('skopeo', 'publish e2e tests are skipped');

const REPO = 'team/app';
const LAYOUT_REPO = 'local/layout';
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe.skipIf(!hasTools)('derrick publish against a real registry', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let cfgFile: string;
  let root: string;
  let srcLayout: string;
  let localLayout: string;
  /** tag -> digest the registry serves for it. */
  const upstream: Record<string, string> = {};
  let localImg: GeneratedImage;
  /** Extra repos, extra keys of team/app, and top-level settings, for later steps. */
  let extra = '';
  let repoExtra: string[] = [];
  let settings = '';

  const writeConfig = async () => {
    await fs.writeFile(
      cfgFile,
      [
        'root: ./var',
        settings,
        'repos:',
        `  - name: ${REPO}`,
        `    from: docker://${reg.host}/${REPO}`,
        '    tls-verify: false',
        ...repoExtra.map((x) => `    ${x}`),
        `  - name: ${LAYOUT_REPO}`,
        '    from: oci:./layout-src',
        extra,
      ].join('\n') + '\n',
    );
  };
  const publish = (...args: string[]) => derrick(['publish', '-c', cfgFile, ...args]);

  /** Registry-served manifest bytes for a digest (Accept: every manifest type). */
  const served = async (digest: string) => (await fetchManifest(reg.host, REPO, digest)).body;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-e2e');
    reg = await startRegistry();
    srcLayout = path.join(tmp.dir, 'gen');
    localLayout = path.join(tmp.dir, 'layout-src');
    root = path.join(tmp.dir, 'var');
    cfgFile = path.join(tmp.dir, 'derrick.yaml');
    await generateImage({ layoutDir: srcLayout, tag: 'oci', layers: [2048, 70_000] });
    await generateImage({ layoutDir: srcLayout, tag: 'docker', format: 'docker', layers: [3000, 5000] });
    await generateImage({ layoutDir: srcLayout, tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'], layers: [4096] });
    await generateImage({ layoutDir: srcLayout, tag: 'dlist', format: 'docker', platforms: ['linux/amd64', 'linux/arm/v7'], layers: [1500] });
    for (const tag of ['oci', 'docker', 'multi', 'dlist']) upstream[tag] = await seedRegistry(reg.host, REPO, srcLayout, tag);
    localImg = await generateImage({ layoutDir: localLayout, tag: 'v1', layers: [10_000, 20_000] });
    await generateImage({ layoutDir: localLayout, tag: 'idx', platforms: ['linux/amd64', 'linux/s390x'], layers: [777] });
    await writeConfig();
  });
  afterAll(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  let first: TreeState;
  /** An object in the store that nothing references. */
  let stray = '';

  it('publishes OCI, Docker schema2, OCI index and manifest list tags from a registry', async () => {
    const r = await publish();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${REPO}: published \\S+, 4 tags`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^${LAYOUT_REPO}: published`, 'm'));

    first = await checkTree(root, REPO);
    expect(first.web).toBe(first.app);
    const d = first.file.derrick!;
    expect(d.tags).toEqual(upstream);
    // Each tag's manifest sits in the directory crane expects for its type.
    const types = Object.fromEntries(Object.entries(d.tags).map(([t, dg]) => [t, d.manifests[dg]!.mediaType]));
    expect(types).toEqual({
      oci: MediaType.ociManifest,
      docker: MediaType.dockerManifest,
      multi: MediaType.ociIndex,
      dlist: MediaType.dockerManifestList,
    });
    // Index children are published too: 4 tops + 2 + 2 children.
    expect(Object.keys(d.manifests)).toHaveLength(8);
    expect(first.file.schema2_data).toContain('docker');
    expect(first.file.schema2_data).toContain(upstream.docker);
    expect(first.file.manifest_list_data).toEqual(expect.arrayContaining(['dlist', upstream.dlist]));
    const dlist = parseManifest(await served(upstream.dlist!));
    const amd64 = dlist.manifests.find((m) => m.platform?.architecture === 'amd64')!;
    expect(first.file.manifest_list_amd64_tags).toEqual({ dlist: [amd64.digest, 2] });

    const l = layout(root);
    const dir = l.master(REPO, first.web);
    // Every manifest is byte-identical to what the registry serves for its digest.
    for (const [digest, m] of Object.entries(d.manifests)) {
      const bytes = await fs.readFile(path.join(dir, manifestRelPath(m.mediaType, digest)));
      expect(bytes.equals(await served(digest)), `manifest ${digest}`).toBe(true);
      expect(sha(bytes)).toBe(digest);
    }
    // Every published blob and manifest is a hardlink of the store object: the same inode.
    const links = [
      ...Object.keys(d.blobs).map((dg) => [dg, blobRelPath(dg)] as const),
      ...Object.entries(d.manifests).map(([dg, m]) => [dg, manifestRelPath(m.mediaType, dg)] as const),
    ];
    expect(Object.keys(d.blobs).length).toBeGreaterThanOrEqual(12);
    for (const [digest, rel] of links) {
      const pub = await fs.stat(path.join(dir, rel));
      const obj = await fs.stat(l.storeBlob(digest));
      expect(pub.ino, `${rel} is the store object`).toBe(obj.ino);
      expect(pub.dev).toBe(obj.dev);
    }
    // The blobs are exactly the configs and layers of the served manifests.
    const expected = new Map<string, number>();
    for (const digest of Object.keys(d.manifests)) for (const b of parseManifest(await served(digest)).blobs) expected.set(b.digest, b.size);
    expect(d.blobs).toEqual(Object.fromEntries(expected));
    // Store: exactly manifests + blobs, all verified.
    expect(await storeListing(root)).toEqual(expect.arrayContaining([...Object.keys(d.manifests), ...Object.keys(d.blobs)].map(digestHex)));
    await checkStore(root, { fresh: true });
  });

  it('publishes an OCI layout source byte for byte', async () => {
    const t = await checkTree(root, LAYOUT_REPO);
    const d = t.file.derrick!;
    const index = JSON.parse(await fs.readFile(path.join(localLayout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
    expect(d.tags).toEqual(Object.fromEntries(index.manifests.map((m) => [m.annotations['org.opencontainers.image.ref.name'], m.digest])));
    expect(d.tags.v1).toBe(localImg.digest);
    const dir = layout(root).master(LAYOUT_REPO, t.web);
    for (const [digest, m] of Object.entries(d.manifests)) {
      const pub = await fs.readFile(path.join(dir, manifestRelPath(m.mediaType, digest)));
      expect(pub.equals(await fs.readFile(path.join(localLayout, 'blobs', 'sha256', digestHex(digest))))).toBe(true);
    }
    for (const b of localImg.blobs) expect(d.blobs[b]).toBe((await fs.stat(path.join(localLayout, 'blobs', 'sha256', digestHex(b)))).size);
    expect(Object.keys(d.manifests)).toHaveLength(1 + 1 + 2);
  });

  it('is incremental: a new upstream tag adds only its own manifest, config and layers to the store', async () => {
    const before = new Set(await storeListing(root));
    const mastersBefore = await masters(root, REPO);
    await generateImage({ layoutDir: srcLayout, tag: 'v2', layers: [1234, 56_789] });
    upstream.v2 = await seedRegistry(reg.host, REPO, srcLayout, 'v2');
    const blobGetsBefore = reg.requests().filter((q) => q.method === 'GET' && q.path.includes('/blobs/')).length;

    const r = await publish(REPO);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${REPO}: published \\S+, 5 tags, 3 blobs fetched`, 'm'));
    const t = await checkTree(root, REPO, { previous: { web: first.web, app: first.app } });
    expect(t.web > first.web).toBe(true);
    expect(t.app).toBe(t.web);
    expect(await masters(root, REPO)).toEqual([...mastersBefore, t.web]);
    expect(t.file.derrick!.tags).toEqual(upstream);

    const m = parseManifest(await served(upstream.v2!));
    const newObjects = [upstream.v2!, ...m.blobs.map((b) => b.digest)].map(digestHex).sort();
    const added = (await storeListing(root)).filter((n) => !before.has(n)).sort();
    expect(added).toEqual(newObjects);
    // Only the new blobs crossed the network.
    await reg.waitForRequests('GET', /\/blobs\//, blobGetsBefore + 3);
    const blobGets = reg.requests().filter((q) => q.method === 'GET' && q.path.includes('/blobs/')).slice(blobGetsBefore);
    expect(blobGets.map((q) => q.path.split('/blobs/')[1]).sort()).toEqual(m.blobs.map((b) => b.digest).sort());
    first = t;
  });

  it('reports "unchanged" and creates no master when nothing changed upstream', async () => {
    const before = await masters(root, REPO);
    const storeBefore = await storeListing(root);
    const r = await publish();
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${REPO}: unchanged \\(${first.web}\\)`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^${LAYOUT_REPO}: unchanged`, 'm'));
    expect(await masters(root, REPO)).toEqual(before);
    expect(await storeListing(root)).toEqual(storeBefore);
    const t = await checkTree(root, REPO);
    expect(t.web).toBe(first.web);
  });

  it('--force-fetch re-downloads a corrupted store object and republishes a sound master', async () => {
    const l = layout(root);
    const victim = Object.entries(first.file.derrick!.blobs).sort((a, b) => b[1] - a[1])[0]![0];
    const file = l.storeBlob(victim);
    await fs.chmod(file, 0o644);
    const bytes = await fs.readFile(file);
    for (let i = 0; i < bytes.length; i += 997) bytes[i]! ^= 0xff;
    await fs.writeFile(file, bytes);
    expect(sha(await fs.readFile(file))).not.toBe(victim);

    const r = await publish('--force-fetch', REPO);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(await fs.readFile(file))).toBe(victim);
    expect((await fs.stat(file)).mode & 0o222).toBe(0); // stored read-only again
    await checkStore(root, { fresh: true });
    // The served master must not keep the corrupted inode: it is republished from the repaired store.
    const t = await checkTree(root, REPO);
    const pub = await fs.stat(path.join(l.master(REPO, t.web), blobRelPath(victim)));
    expect(pub.ino).toBe((await fs.stat(file)).ino);
    expect(t.file.derrick!.tags).toEqual(upstream);
    first = t;
  });

  it('--force-fetch re-downloads a corrupted stored manifest (an index and an image manifest) and republishes a sound master', async () => {
    const l = layout(root);
    // The multi-arch tag's index, and one of its children: both read from the store by the walk.
    const index = upstream.multi!;
    const child = first.file.derrick!.manifests[index]!.children![0]!.digest;
    for (const d of [index, child]) {
      const file = l.storeBlob(d);
      await fs.chmod(file, 0o644);
      const bytes = await fs.readFile(file);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x20; // same size, different bytes
      await fs.writeFile(file, bytes);
      expect(sha(await fs.readFile(file))).not.toBe(d);
    }
    const r = await publish('--force-fetch', REPO);
    expect(r.code, r.stderr).toBe(0);
    const t = await checkTree(root, REPO);
    expect(t.web > first.web, 'a new master, off the repaired inodes').toBe(true);
    for (const d of [index, child]) {
      const file = l.storeBlob(d);
      expect(sha(await fs.readFile(file))).toBe(d);
      const m = t.file.derrick!.manifests[d]!;
      const pub = await fs.stat(path.join(l.master(REPO, t.web), manifestRelPath(m.mediaType, d)));
      expect(pub.ino, `${d} is served from the repaired store object`).toBe((await fs.stat(file)).ino);
      expect(await fs.readFile(path.join(l.master(REPO, t.web), manifestRelPath(m.mediaType, d)))).toEqual(await served(d));
    }
    await checkStore(root, { fresh: true });
    expect(t.file.derrick!.tags).toEqual(upstream);
    first = t;
  });

  it('derrick status shows one row per repo', async () => {
    const r = await derrick(['status', '-c', cfgFile]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^REPO\s+TAGS\s+SIGNED\s+PUBLISHED\s+SIZE\s+STATE$/);
    const row = lines.find((x) => x.startsWith(`${REPO} `))!;
    expect(row).toBeDefined();
    const cols = row.split(/\s{2,}/);
    expect(cols[1]).toBe('5');
    expect(cols.at(-1)).toBe('ok');
    expect(lines.some((x) => x.startsWith(`${LAYOUT_REPO} `))).toBe(true);
    const json = (JSON.parse((await derrick(['status', '-c', cfgFile, '--json'])).stdout) as { repos: Array<{ repo: string; tags: number; size: number }> }).repos;
    const total = Object.values(first.file.derrick!.blobs).reduce((a, b) => a + b, 0) + Object.values(first.file.derrick!.manifests).reduce((a, m) => a + m.size, 0);
    expect(json.find((x) => x.repo === REPO)).toMatchObject({ tags: 5, size: total });
  });

  it('gc --dry-run lists only what nothing references, and deletes nothing', async () => {
    const l = layout(root);
    const bytes = Buffer.from(`stray object ${Date.now()}`);
    stray = sha(bytes);
    await fs.writeFile(l.storeBlob(stray), bytes, { mode: 0o444 });
    // An older stray, past the grace period, and a fresh one (a pull-through fill not yet
    // published, say), which gc leaves alone.
    const hourAgo = new Date(Date.now() - 3600_000);
    await fs.utimes(l.storeBlob(stray), hourAgo, hourAgo);
    const fresh = Buffer.from(`fresh object ${Date.now()}`);
    await fs.writeFile(l.storeBlob(sha(fresh)), fresh, { mode: 0o444 });
    const storeBefore = await storeListing(root);
    const mastersBefore = await masters(root, REPO);
    const r = await derrick(['gc', '-c', cfgFile, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    const listed = [...r.stdout.matchAll(/^would delete blob (sha256:[0-9a-f]{64})/gm)].map((m) => m[1]);
    expect(listed).toEqual([stray]);
    expect(r.stdout).toMatch(/^gc: would delete 0 masters and 1 blobs \(.*\); 1 unreferenced blobs younger than grace kept$/m);
    expect(await storeListing(root)).toEqual(storeBefore);
    expect(await masters(root, REPO)).toEqual(mastersBefore);
  });

  it('--no-fetch on a never-synced repo exits 1 naming the repo', async () => {
    extra = ['  - name: never/synced', '    from: docker://127.0.0.1:9/never/synced', '    tls-verify: false'].join('\n');
    await writeConfig();
    const r = await publish('--no-fetch', 'never/synced');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: never\/synced: never synced/m);
    extra = '';
    await writeConfig();
  });

  it('with keep: 0 and grace: 0s, publish and gc delete old masters and unreferenced blobs', async () => {
    const l = layout(root);
    settings = 'keep: 0\ngrace: 0s';
    await writeConfig();
    const old = await masters(root, REPO);
    expect(old.length).toBeGreaterThan(1);
    const cur = await checkTree(root, REPO);
    // What a gc killed while deleting a master leaves: the master under its removal temp name.
    const killedRm = path.join(l.masterDir(REPO), `.tmp-rm.${old[0]}.999999.0123456789ab`);
    await fs.mkdir(path.join(killedRm, 'blobs'), { recursive: true });
    const g1 = await derrick(['gc', '-c', cfgFile]);
    expect(g1.code, g1.stderr).toBe(0);
    expect(existsSync(killedRm), "a killed gc's half-removed master is swept by the next gc").toBe(false);
    const deletedMasters = [...g1.stdout.matchAll(/^deleted master (\S+)/gm)].map((m) => path.basename(m[1]!));
    expect(deletedMasters.filter((m) => old.includes(m)).sort()).toEqual(old.filter((m) => m !== cur.web));
    expect(await masters(root, REPO)).toEqual([cur.web]);
    // The stray object of the dry-run test goes too; nothing the served master names does.
    const deleted1 = [...g1.stdout.matchAll(/^deleted blob (sha256:[0-9a-f]{64})/gm)].map((m) => m[1]!);
    expect(deleted1).toContain(stray);
    for (const dg of deleted1) {
      expect(cur.file.derrick!.blobs[dg]).toBeUndefined();
      expect(cur.file.derrick!.manifests[dg]).toBeUndefined();
    }
    await checkTree(root, REPO);

    // Drop v2 from what is published, then publish twice (a second change: protected).
    const v2Objects = [upstream.v2!, ...parseManifest(await served(upstream.v2!)).blobs.map((b) => b.digest)];
    repoExtra = ['exclude: [v2]'];
    await writeConfig();
    let r = await publish(REPO);
    expect(r.code, r.stderr).toBe(0);
    const a = await checkTree(root, REPO);
    expect(Object.keys(a.file.derrick!.tags)).not.toContain('v2');
    repoExtra = ['exclude: [v2]', 'protected: true'];
    await writeConfig();
    r = await publish(REPO);
    expect(r.code, r.stderr).toBe(0);
    const b = await checkTree(root, REPO, { previous: { web: a.web, app: a.app } });
    expect(b.web > a.web).toBe(true);
    expect(b.file.protected).toBe(true);
    // Publish's own retention already removed the superseded masters (keep 0, grace 0).
    expect(await masters(root, REPO)).toEqual([b.web]);

    const g2 = await derrick(['gc', '-c', cfgFile]);
    expect(g2.code, g2.stderr).toBe(0);
    const deleted = [...g2.stdout.matchAll(/^deleted blob (sha256:[0-9a-f]{64})/gm)].map((m) => m[1]!).sort();
    // Exactly what only the excluded tag used: its manifest, config and layers.
    expect(deleted).toEqual([...v2Objects].sort());
    for (const dg of deleted) await expect(fs.access(l.storeBlob(dg))).rejects.toThrow();
    const t = await checkTree(root, REPO);
    expect(t.web).toBe(b.web);
    await checkStore(root, { fresh: true });
    // Nothing referenced is left to delete.
    const g3 = await derrick(['gc', '-c', cfgFile, '--dry-run']);
    expect(g3.stdout).toMatch(/^gc: would delete 0 masters and 0 blobs/m);
    first = t;
  });

  it('--no-fetch publishes from the store with the registry stopped', async () => {
    // A config change (protected: false again) makes a new master from stored content only.
    repoExtra = ['exclude: [v2]'];
    await writeConfig();
    await reg.stop();
    const r = await publish('--no-fetch');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${REPO}: published`, 'm'));
    const t = await checkTree(root, REPO, { previous: { web: first.web, app: first.app } });
    expect(t.web > first.web).toBe(true);
    expect(t.file.protected).toBe(false);
    expect(t.file.derrick!.tags).toEqual(first.file.derrick!.tags);
    // Without --no-fetch the stopped registry is a failure naming the repo, and the tree stays.
    const f = await publish(REPO);
    expect(f.code).toBe(1);
    expect(f.stderr).toMatch(new RegExp(`^error: ${REPO}: `, 'm'));
    expect((await checkTree(root, REPO)).web).toBe(t.web);
  });
});
