// Many repos in one run (issue 10): 50 repos published concurrently by the real CLI, from one
// shared OCI layout, from layouts of their own and from a real docker-registry. Every master is
// complete and made of hardlinks; a run where nothing changed writes nothing; a moved, new or
// deleted tag and a tags/exclude or protected change are each noticed by the next run; a repo
// locked by another process gives 75 naming it while the others publish, or is waited for.
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage } from '../scripts/gen-image.js';
import { blobRelPath, layout, manifestRelPath } from '../shared/layout.js';
import { derrick, CLI } from './helpers/derrick.js';
import { readIndexJson } from './helpers/layout.js';
import { requireTool, startProcess, type RunningProcess } from './helpers/proc.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { seedRegistry } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { assertNoDebris, checkStore, checkTree, masters, type TreeState } from './helpers/tree.js';

const hasTools = requireTool('docker-registry', 'publish-many tests are skipped') && requireTool('skopeo', 'publish-many tests are skipped');

const SHARED = Array.from({ length: 40 }, (_, i) => `many/r${String(i).padStart(2, '0')}`);
const OWN = Array.from({ length: 6 }, (_, i) => `own/r${i}`);
const REG = Array.from({ length: 4 }, (_, i) => `reg/r${i}`);
const ALL = [...SHARED, ...OWN, ...REG];
const LOCK_JS = pathToFileURL(path.resolve(path.dirname(CLI), 'shared/publish/lock.js')).href;
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe.skipIf(!hasTools)('publishing 50 repos at once', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let root: string;
  let cfgFile: string;
  let gen: string;
  /** Extra config lines per repo. */
  const extra: Record<string, string[]> = {};
  const trees = new Map<string, TreeState>();
  /** Config and layers of the image that REG[2] and REG[3] both hold. */
  let twinBlobs: string[] = [];
  const procs: RunningProcess[] = [];

  const ownLayout = (name: string) => path.join(tmp.dir, 'own', name.replace('/', '-'));
  const writeConfig = () => {
    const lines = ['root: ./var', 'keep: 1', 'grace: 1h', 'repo-concurrency: 8', 'repos:'];
    for (const name of ALL) {
      lines.push(`  - name: ${name}`);
      if (SHARED.includes(name)) lines.push(`    from: oci:./shared`);
      else if (OWN.includes(name)) lines.push(`    from: oci:${ownLayout(name)}`);
      else lines.push(`    from: docker://${reg.host}/${name}`, '    tls-verify: false');
      for (const x of extra[name] ?? []) lines.push(`    ${x}`);
    }
    return fs.writeFile(cfgFile, lines.join('\n') + '\n');
  };
  const publish = (...args: string[]) => derrick(['publish', '-c', cfgFile, ...args], { timeoutMs: 300_000 });
  /** The repo of each summary line, in print order, and what it says. */
  const summary = (stdout: string) =>
    stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => /^(\S+): (published|unchanged|busy)/.exec(l))
      .map((m) => (m ? [m[1]!, m[2]!] : ['?', '?']));

  beforeAll(async () => {
    tmp = await tmpDir('derrick-many');
    reg = await startRegistry();
    root = path.join(tmp.dir, 'var');
    cfgFile = path.join(tmp.dir, 'derrick.yaml');
    gen = path.join(tmp.dir, 'gen');
    for (const tag of ['v1', 'v2', 'v3']) await generateImage({ layoutDir: path.join(tmp.dir, 'shared'), tag, layers: [1500, 3000] });
    for (const name of OWN) {
      await generateImage({ layoutDir: ownLayout(name), tag: 'v1', seed: `${name}-v1`, layers: [2000] });
      await generateImage({ layoutDir: ownLayout(name), tag: 'v2', seed: `${name}-v2`, layers: [2500] });
    }
    for (const name of REG) {
      // The last two are one image in two repositories: downloaded once by a run.
      const seed = name === REG[3] ? REG[2]! : name;
      twinBlobs = (await generateImage({ layoutDir: path.join(gen, name), tag: 'v1', seed, layers: [200_000, 100_000] })).blobs;
      await seedRegistry(reg.host, name, path.join(gen, name), 'v1');
    }
    await writeConfig();
  }, 180_000);
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('publishes every repo, each master complete and made of the store objects, lines in config order', { timeout: 300_000 }, async () => {
    const r = await publish();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const lines = summary(r.stdout);
    expect(lines).toEqual(ALL.map((n) => [n, 'published']));
    const l = layout(root);
    for (const name of ALL) {
      const t = await checkTree(root, name);
      expect(t.app).toBe(t.web);
      trees.set(name, t);
      const d = t.file.derrick!;
      const dir = l.master(name, t.web);
      const files = [
        ...Object.keys(d.blobs).map((dg) => [dg, blobRelPath(dg)] as const),
        ...Object.entries(d.manifests).map(([dg, m]) => [dg, manifestRelPath(m.mediaType, dg)] as const),
      ];
      for (const [dg, rel] of files) {
        expect((await fs.stat(path.join(dir, rel))).ino, `${name} ${rel} is a hardlink of the store object`).toBe((await fs.stat(l.storeBlob(dg))).ino);
      }
    }
    expect(Object.keys(trees.get(SHARED[0]!)!.file.derrick!.tags)).toEqual(['v1', 'v2', 'v3']);
    expect(Object.keys(trees.get(REG[0]!)!.file.derrick!.tags)).toEqual(['v1']);
    // Repos syncing at once share a blob download: one GET per blob for the twin repos.
    expect(trees.get(REG[3]!)!.file.derrick!.tags).toEqual(trees.get(REG[2]!)!.file.derrick!.tags);
    expect(twinBlobs.map((dg) => reg.blobGets(dg))).toEqual(twinBlobs.map(() => 1));
    await checkStore(root);
    await assertNoDebris(root);
  });

  it('a run where nothing changed writes no master and no state file, and asks a registry only for tags and HEADs', { timeout: 300_000 }, async () => {
    const l = layout(root);
    const stat = async (p: string) => (await fs.lstat(p, { bigint: true })).mtimeNs;
    const snapshot = async () => {
      const out: Record<string, unknown> = {};
      for (const name of ALL) {
        out[name] = { masters: await masters(root, name), state: await stat(l.repoState(name)), web: await stat(l.web(name)), app: await stat(l.app(name)) };
      }
      return { repos: out, states: (await fs.readdir(l.repoStateDir)).sort(), storeDir: await stat(l.storeBlobsDir) };
    };
    const before = await snapshot();
    const requestsBefore = reg.requests().length;
    const r = await publish();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(summary(r.stdout)).toEqual(ALL.map((n) => [n, 'unchanged']));
    for (const name of ALL) expect(r.stdout).toContain(`${name}: unchanged (${trees.get(name)!.web})`);
    expect(await snapshot()).toEqual(before);
    // Per registry repo: one tag list and one HEAD per tag; no manifest or blob GET.
    const asked = reg.requests().slice(requestsBefore).map((q) => `${q.method} ${q.path.replace(/\?.*$/, '')}`).filter((q) => q !== 'GET /v2/');
    expect(asked.sort()).toEqual(REG.flatMap((n) => [`GET /v2/${n}/tags/list`, `HEAD /v2/${n}/manifests/v1`]).sort());
    // --no-fetch: the same, without asking anyone.
    const n = reg.requests().length;
    const nf = await publish('--no-fetch');
    expect(nf.code, nf.stdout + nf.stderr).toBe(0);
    expect(summary(nf.stdout)).toEqual(ALL.map((x) => [x, 'unchanged']));
    expect(reg.requests().length).toBe(n);
    expect(await snapshot()).toEqual(before);
  });

  it('notices a moved, a new and a deleted tag, and a tags/exclude or protected change; nothing else moves', { timeout: 300_000 }, async () => {
    const [moved, added, deleted] = OWN;
    const movedTo = await generateImage({ layoutDir: ownLayout(moved!), tag: 'v1', seed: 'moved', layers: [2100] });
    const addedImg = await generateImage({ layoutDir: ownLayout(added!), tag: 'v9', seed: 'added', layers: [2200] });
    const idxFile = path.join(ownLayout(deleted!), 'index.json');
    const idx = await readIndexJson(ownLayout(deleted!));
    idx.manifests = idx.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] !== 'v2');
    await fs.writeFile(idxFile, JSON.stringify(idx));
    // A tag moved in the registry.
    await generateImage({ layoutDir: path.join(gen, REG[0]!), tag: 'v1', seed: 'reg-moved', layers: [4100] });
    const regMoved = await seedRegistry(reg.host, REG[0]!, path.join(gen, REG[0]!), 'v1');
    // Config changes on repos of the shared layout.
    extra[SHARED[0]!] = ['exclude: [v3]'];
    extra[SHARED[1]!] = ['tags: ["v1"]'];
    extra[SHARED[2]!] = ['protected: true'];
    await writeConfig();

    const changed = new Set([moved!, added!, deleted!, REG[0]!, SHARED[0]!, SHARED[1]!, SHARED[2]!]);
    const r = await publish();
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(summary(r.stdout)).toEqual(ALL.map((n) => [n, changed.has(n) ? 'published' : 'unchanged']));
    const tagsOf = async (name: string) => {
      const t = await checkTree(root, name, { previous: trees.get(name)! });
      if (changed.has(name)) expect(t.web > trees.get(name)!.web, name).toBe(true);
      else expect(t.web).toBe(trees.get(name)!.web);
      trees.set(name, t);
      return t.file.derrick!.tags;
    };
    expect((await tagsOf(moved!)).v1).toBe(movedTo.digest);
    expect((await tagsOf(added!)).v9).toBe(addedImg.digest);
    expect(Object.keys(await tagsOf(deleted!))).toEqual(['v1']);
    expect((await tagsOf(REG[0]!)).v1).toBe(regMoved);
    expect(Object.keys(await tagsOf(SHARED[0]!))).toEqual(['v1', 'v2']);
    expect(Object.keys(await tagsOf(SHARED[1]!))).toEqual(['v1']);
    await tagsOf(SHARED[2]!);
    expect(trees.get(SHARED[2]!)!.file.protected).toBe(true);
    for (const name of ALL.filter((n) => !changed.has(n))) await tagsOf(name);
    // The repo states follow: the deleted tag is gone from what gc keeps.
    const state = JSON.parse(await fs.readFile(layout(root).repoState(deleted!), 'utf8')) as { tags: Record<string, string> };
    expect(Object.keys(state.tags)).toEqual(['v1']);
    await assertNoDebris(root);
  });

  it('a repo locked by another process gives 75 naming it while the others publish; --wait waits for it', { timeout: 300_000 }, async () => {
    const busy = OWN[4]!;
    await generateImage({ layoutDir: ownLayout(busy), tag: 'v1', seed: 'busy-moved', layers: [2300] });
    await generateImage({ layoutDir: ownLayout(OWN[5]!), tag: 'v1', seed: 'other-moved', layers: [2400] });
    // Another process holds the repo lock, through the real lock module.
    const script = `
      const m = await import(${JSON.stringify(LOCK_JS)});
      const lock = await m.acquireLock(process.argv[1], 'holder', 0);
      console.log('got ' + process.pid);
      process.on('SIGTERM', async () => { await lock.release(); process.exit(0); });
      setInterval(() => {}, 1000);
    `;
    const holder = startProcess(process.execPath, ['--input-type=module', '-e', script, layout(root).repoLock(busy)]);
    procs.push(holder);
    await holder.waitForOutput(/^got /m, 20_000);

    const r = await publish();
    expect(r.code, r.stdout + r.stderr).toBe(75);
    expect(r.stdout).toMatch(new RegExp(`^${esc(busy)}: busy: repo ${esc(busy)} is busy \\(locked by pid ${holder.pid}\\)$`, 'm'));
    expect(summary(r.stdout)).toEqual(ALL.map((n) => [n, n === busy ? 'busy' : n === OWN[5] ? 'published' : 'unchanged']));
    expect((await checkTree(root, busy)).web).toBe(trees.get(busy)!.web);

    const waiting = startProcess(process.execPath, [CLI, 'publish', '-c', cfgFile, '--wait', '60s']);
    procs.push(waiting);
    await new Promise((res) => setTimeout(res, 1500));
    expect(waiting.alive(), waiting.output()).toBe(true);
    await holder.stop();
    const done = await waiting.exited;
    expect(done.code, waiting.output()).toBe(0);
    expect(waiting.stdout()).toMatch(new RegExp(`^${esc(busy)}: published`, 'm'));
    expect((await checkTree(root, busy)).web > trees.get(busy)!.web).toBe(true);
    await assertNoDebris(root);
  });
});
