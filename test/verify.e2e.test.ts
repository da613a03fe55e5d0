// `derrick verify` with the real CLI on real published trees (OCI layout sources, real publishes),
// each damaged on purpose in one way: what it reports (exit 1, one line per item naming repo, path
// and problem), and that --repair leaves a tree that checkTree and a deep verify both accept.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIRECT_INDEX_NAME, TAGS_LIST_REL_PATH, blobRelPath, layout, manifestRelPath, repoKey, type Layout } from '../shared/layout.js';
import { acquireLock } from '../shared/publish/lock.js';
import { verifyRepo } from '../publisher/verify.js';
import { derrick } from './helpers/derrick.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { assertNoDebris, checkStore, checkTree, hashFile, masters, type TreeState } from './helpers/tree.js';

const REPO = 'demo/app';
const OTHER = 'other';

interface Fixture {
  tree: PublishedTree;
  cfg: string;
  root: string;
  l: Layout;
  /** After two publishes: web and app at the second master; the first is kept. */
  state: TreeState;
  /** The master before it. */
  earlier: string;
}

let tmp: TmpDir;
let n = 0;

/** A fresh tree: REPO published twice (v1, v2, then v3 too) and OTHER once. */
async function fixture(): Promise<Fixture> {
  const dir = path.join(tmp.dir, `t${n++}`);
  await fs.mkdir(dir);
  const tree = await makePublishedTree(dir, [
    { name: REPO, images: [{ tag: 'v1', layers: [200_000, 50_000] }, { tag: 'v2', layers: [120_000], format: 'docker' }] },
    { name: OTHER, images: [{ tag: 'x', layers: [30_000] }] },
  ]);
  await tree.addImage(REPO, { tag: 'v3', layers: [80_000] });
  await tree.publish();
  const root = tree.config.root;
  const state = await checkTree(root, REPO);
  const all = await masters(root, REPO);
  expect(all).toHaveLength(2);
  return { tree, cfg: tree.configFile, root, l: layout(root), state, earlier: all[0]! };
}

const verify = (f: Fixture, ...args: string[]) => derrick(['verify', '-c', f.cfg, ...args]);
const rel = (f: Fixture, p: string) => path.relative(f.root, p);
const lines = (out: string) => out.trim().split('\n').filter(Boolean);

/** The damage lines of a report (everything but the summary and repair lines). */
function damageLines(out: string): string[] {
  return lines(out).filter((l) => !l.startsWith('verify') && !/: (published|unchanged|repaired|removed) /.test(l));
}

/** Repairs, then proves the tree whole: exit 0, checkTree (hashes), a deep verify, a sound store, no debris. */
async function repairAndCheck(f: Fixture, extra: string[] = [], done?: Awaited<ReturnType<typeof verify>>): Promise<TreeState> {
  const r = done ?? (await verify(f, '--repair', ...extra));
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`^${REPO}: repaired \\d+ damaged items; served from `, 'm'));
  const after = await checkTree(f.root, REPO);
  expect(after.app).toBe(after.web);
  expect(after.web > f.state.web, 'a new master').toBe(true);
  expect(Object.keys(after.file.derrick!.tags).sort()).toEqual(['v1', 'v2', 'v3']);
  // The same check, deep, in-process (one CLI run fewer per case).
  for (const repo of [REPO, OTHER]) expect((await verifyRepo(f.l, repo, { deep: true })).damage, repo).toEqual([]);
  await checkStore(f.root, { fresh: true });
  await assertNoDebris(f.root);
  return after;
}

beforeAll(async () => {
  tmp = await tmpDir('derrick-verify');
});
afterAll(async () => {
  await tmp?.cleanup();
});

describe('derrick verify (real CLI, real published trees)', { timeout: 120_000 }, () => {
  it('an intact tree: exit 0 and one summary line, plain and --deep', async () => {
    const f = await fixture();
    for (const args of [[], ['--deep', REPO, OTHER]]) {
      const r = await verify(f, ...args);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(lines(r.stdout)).toHaveLength(1);
      expect(r.stdout).toMatch(/^verify: \d published repos?, \d+ masters, \d+ files (checked|hashed): intact$/m);
    }
    const one = await verify(f, OTHER);
    expect(one.stdout).toMatch(/^verify: 1 published repos, 1 masters, /);
  });

  it('a truncated blob: exit 1 naming repo, path and sizes (in every master that links it); --repair fetches it again', async () => {
    const f = await fixture();
    const [digest, size] = Object.entries(f.state.file.derrick!.blobs).sort((a, b) => b[1] - a[1])[0]!;
    const blob = path.join(f.l.master(REPO, f.state.web), blobRelPath(digest));
    await fs.truncate(blob, 1000);
    const r = await verify(f);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    // The published file is a hardlink into the store: the earlier master holds the same inode.
    expect(damageLines(r.stdout).sort()).toEqual(
      [f.state.web, f.earlier].map((m) => `${REPO}: ${rel(f, path.join(f.l.master(REPO, m), blobRelPath(digest)))}: 1000 bytes, expected ${size}`).sort(),
    );
    expect(r.stdout).toMatch(/^verify: 2 published repos, 3 masters, \d+ files checked: 2 damaged items in 1 repos$/m);
    const after = await repairAndCheck(f);
    expect(await hashFile(path.join(f.l.master(REPO, after.web), blobRelPath(digest)), true)).toBe(digest);
    // The damaged earlier master can't be mended (masters are immutable): it is gone.
    expect(await masters(f.root, REPO)).not.toContain(f.earlier);
  });

  it('a deleted manifest: exit 1 "missing"; --repair republishes from the intact store without fetching a blob', async () => {
    const f = await fixture();
    const [digest, m] = Object.entries(f.state.file.derrick!.manifests)[0]!;
    const p = path.join(f.l.master(REPO, f.state.web), manifestRelPath(m.mediaType, digest));
    await fs.rm(p);
    const r = await verify(f);
    expect(r.code).toBe(1);
    expect(damageLines(r.stdout)).toEqual([`${REPO}: ${rel(f, p)}: missing`]);
    const repaired = await verify(f, '--repair');
    expect(repaired.code, repaired.stdout + repaired.stderr).toBe(0);
    expect(repaired.stdout).toMatch(new RegExp(`^${REPO}: published \\S+, 3 tags, 0 blobs fetched`, 'm'));
    await repairAndCheck(f, [], repaired);
  });

  it('a dangling web symlink: exit 1 "dangling"; --repair swaps in a new complete master', async () => {
    const f = await fixture();
    const target = `../master/${repoKey(REPO)}/20990101T000000.000Z-000`;
    await fs.rm(f.l.web(REPO));
    await fs.symlink(target, f.l.web(REPO));
    const r = await verify(f);
    expect(r.code).toBe(1);
    expect(damageLines(r.stdout)).toEqual([
      `${REPO}: ${rel(f, f.l.web(REPO))}: dangling: points at ${target}, and master 20990101T000000.000Z-000 does not exist`,
    ]);
    await repairAndCheck(f);
  });

  it('app newer than web: exit 1 naming both masters; --repair puts app back behind (then level with) web', async () => {
    const f = await fixture();
    await fs.rm(f.l.web(REPO));
    await fs.symlink(`../master/${repoKey(REPO)}/${f.earlier}`, f.l.web(REPO));
    const r = await verify(f);
    expect(r.code).toBe(1);
    expect(damageLines(r.stdout)).toEqual([
      `${REPO}: ${rel(f, f.l.app(REPO))}: points at ${f.state.web}, newer than web's ${f.earlier} (app must never be ahead of web)`,
    ]);
    await repairAndCheck(f);
  });

  it('a master without tags/list: exit 1; --repair', async () => {
    const f = await fixture();
    const p = path.join(f.l.master(REPO, f.state.web), TAGS_LIST_REL_PATH);
    await fs.rm(p);
    const r = await verify(f);
    expect(r.code).toBe(1);
    expect(damageLines(r.stdout)).toEqual([`${REPO}: ${rel(f, p)}: missing`]);
    await repairAndCheck(f);
  });

  it('a damaged redirect.idx: exit 1 naming it (serve would parse the JSON instead); --repair', async () => {
    const f = await fixture();
    const p = path.join(f.l.master(REPO, f.state.web), REDIRECT_INDEX_NAME);
    const idx = await fs.readFile(p);
    idx[idx.length - 2]! ^= 1;
    await fs.writeFile(p, idx);
    const r = await verify(f);
    expect(r.code).toBe(1);
    expect(damageLines(r.stdout)).toEqual([`${REPO}: ${rel(f, p)}: damaged (its CRC-32 does not match); serve reads redirect.json instead`]);
    const after = await repairAndCheck(f);
    await fs.access(path.join(f.l.master(REPO, after.web), REDIRECT_INDEX_NAME));
  });

  it('a blob corrupted in place (same size): only --deep finds it; --repair --deep replaces it', async () => {
    const f = await fixture();
    const [digest] = Object.entries(f.state.file.derrick!.blobs).sort((a, b) => b[1] - a[1])[0]!;
    const blob = path.join(f.l.master(REPO, f.state.web), blobRelPath(digest));
    const bytes = await fs.readFile(blob);
    bytes[100]! ^= 0xff;
    await fs.writeFile(blob, bytes);
    const plain = await verify(f);
    expect(plain.code, plain.stdout).toBe(0);
    const deep = await verify(f, '--deep');
    expect(deep.code).toBe(1);
    const actual = await hashFile(blob, true);
    expect(damageLines(deep.stdout)).toContain(`${REPO}: ${rel(f, blob)}: hashes to ${actual}, expected ${digest}`);
    await repairAndCheck(f, ['--deep']);
  });

  it('--repair when the source lost the blob too: exit 1 naming repo and digest; the damaged publish is still served as it was', async () => {
    const f = await fixture();
    const [digest] = Object.entries(f.state.file.derrick!.blobs).sort((a, b) => b[1] - a[1])[0]!;
    await fs.truncate(path.join(f.l.master(REPO, f.state.web), blobRelPath(digest)), 10);
    // makePublishedTree's OCI layout for the repo: the source loses the blob as well.
    await fs.rm(path.join(path.dirname(f.cfg), 'images', REPO.replaceAll('/', '_'), 'blobs', 'sha256', digest.slice('sha256:'.length)));
    const r = await verify(f, '--repair');
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: ${REPO}: .*${digest}`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^still damaged: ${REPO}: .*blobs/${digest}: 10 bytes, expected`, 'm'));
    const now = await fs.readlink(f.l.web(REPO));
    expect(now.endsWith(f.state.web)).toBe(true);
  });

  it('usage errors exit 2 naming the repo or option; a busy repo exits 75 naming it', async () => {
    const f = await fixture();
    const unknown = await verify(f, 'no/such');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/no repo named no\/such in .*derrick\.yaml repos:/);
    const badOpt = await verify(f, '--depp');
    expect(badOpt.code).toBe(2);
    expect(badOpt.stderr).toMatch(/--depp/);
    const badWait = await verify(f, '--wait', 'soon');
    expect(badWait.code).toBe(2);

    const lock = await acquireLock(f.l.repoLock(REPO), `repo ${REPO}`);
    try {
      const busy = await verify(f);
      expect(busy.code, busy.stdout + busy.stderr).toBe(75);
      expect(busy.stderr).toMatch(new RegExp(`^error: repo ${REPO} is busy \\(locked by pid ${process.pid}\\)`, 'm'));
      // The other repo was still checked.
      expect(busy.stdout).toMatch(/^verify: 1 published repos, 1 masters, .*intact; 1 busy$/m);
    } finally {
      await lock.release();
    }
  });
});
