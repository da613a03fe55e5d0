// Crash safety: the real CLI publishing a 20+ MB repo from a real registry, SIGKILLed at random
// instants spread over a whole run, and at the moments a master appears under its real name, web/<repo>
// is swapped and app/<repo>.json is swapped. After every kill the tree is a valid publish (the
// previous one, the new one, or web new + app previous; never app ahead of web), every master
// under a real name is complete (derrick verify's check), and the store holds no object that does
// not hash to its name. Each round points a tag at new content, so every run has something new to
// fetch and publish. Kills at the web swap must land between the two swaps some of the time: with
// the swaps in the wrong order (app first) they never do, and the kills at the app swap leave app
// ahead of web.
import { watch, type FSWatcher } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, layoutBlobPath } from '../scripts/gen-image.js';
import { MASTER_NAME_RE, layout, repoKey } from '../shared/layout.js';
import { verifyRepo } from '../publisher/verify.js';
import { derrick } from './helpers/derrick.js';
import { requireTool } from './helpers/proc.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { seedRegistry } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { assertNoDebris, checkStore, checkTree, startDerrick, type TreeState } from './helpers/tree.js';

const hasTools = requireTool('docker-registry', 'crash tests are skipped') && requireTool('skopeo', 'crash tests are skipped');

const REPO = 'crash/big';
const MiB = 1024 * 1024;
const RANDOM_KILLS = 46;
const END_KILLS = 6;
const SWAP_KILLS = 8;
const APP_SWAP_KILLS = 4;
const MASTER_KILLS = 6;

describe.skipIf(!hasTools)('SIGKILL at random instants during publish', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let gen: string;
  let root: string;
  let cfgFile: string;
  let round = 0;
  /** What the registry serves for `live` now. */
  let live = '';

  /**
   * Points the `live` tag upstream at new content (2.5 MB of fresh layers): one more change to
   * fetch and publish, while the tag set, and so the length of a run, stays the same. Pushed with
   * the registry's own upload API (in-process, much faster than a skopeo per round).
   */
  const pushRound = async () => {
    const img = await generateImage({ layoutDir: gen, tag: 'live', seed: `live-${round++}`, layers: [2 * MiB, 512 * 1024] });
    const base = `http://${reg.host}/v2/${REPO}`;
    for (const digest of img.blobs) {
      const start = await fetch(`${base}/blobs/uploads/`, { method: 'POST' });
      await start.arrayBuffer();
      expect(start.status).toBe(202);
      const url = new URL(start.headers.get('location')!, base);
      url.searchParams.set('digest', digest);
      const put = await fetch(url, { method: 'PUT', body: await fs.readFile(layoutBlobPath(gen, digest)), headers: { 'Content-Type': 'application/octet-stream' } });
      await put.arrayBuffer();
      expect(put.status).toBe(201);
    }
    const manifest = await fs.readFile(layoutBlobPath(gen, img.digest));
    const put = await fetch(`${base}/manifests/live`, { method: 'PUT', body: manifest, headers: { 'Content-Type': img.mediaType } });
    await put.arrayBuffer();
    expect(put.status).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(img.digest);
    live = img.digest;
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-crash');
    reg = await startRegistry();
    gen = path.join(tmp.dir, 'gen');
    root = path.join(tmp.dir, 'var');
    cfgFile = path.join(tmp.dir, 'derrick.yaml');
    // 20+ MB to start with: two tags, 4-8 MB layers.
    const a = await generateImage({ layoutDir: gen, tag: 'base-a', layers: [6 * MiB, 4 * MiB] });
    const b = await generateImage({ layoutDir: gen, tag: 'base-b', layers: [8 * MiB, 5 * MiB], format: 'docker' });
    expect(a.totalBytes + b.totalBytes).toBeGreaterThan(20 * MiB);
    await seedRegistry(reg.host, REPO, gen, 'base-a');
    await seedRegistry(reg.host, REPO, gen, 'base-b');
    await fs.writeFile(cfgFile, ['root: ./var', 'repos:', `  - name: ${REPO}`, `    from: docker://${reg.host}/${REPO}`, '    tls-verify: false', ''].join('\n'));
  });
  afterAll(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('leaves a valid tree and a verified store after every kill, and recovers', { timeout: 900_000 }, async () => {
    const first = await derrick(['publish', '-c', cfgFile]);
    expect(first.code, first.stderr).toBe(0);
    let prev: TreeState = await checkTree(root, REPO);

    // One full run with new content, timed.
    await pushRound();
    const t0 = Date.now();
    const full = await derrick(['publish', '-c', cfgFile]);
    const duration = Date.now() - t0;
    expect(full.code, full.stderr).toBe(0);
    prev = await checkTree(root, REPO, { previous: prev });

    // Kill delays: uniform over [0, 1.1 x duration], some packed around the end (the swaps), and
    // some at the instant web/<repo> is renamed (an inotify event on published/web). Delays are
    // kept as fractions of a run; runs that finish on their own refine the estimate of its length.
    type Moment = 'web-swap' | 'app-swap' | 'master';
    const plan: Array<number | Moment> = [
      ...Array.from({ length: RANDOM_KILLS }, () => Math.random() * 1.1),
      ...Array.from({ length: END_KILLS }, () => 0.85 + Math.random() * 0.25),
      ...Array.from({ length: SWAP_KILLS }, () => 'web-swap' as const),
      ...Array.from({ length: APP_SWAP_KILLS }, () => 'app-swap' as const),
      ...Array.from({ length: MASTER_KILLS }, () => 'master' as const),
    ].sort(() => Math.random() - 0.5);
    let estimate = duration;

    const l = layout(root);
    const webName = repoKey(REPO);
    const appName = `${repoKey(REPO)}.json`;
    const seen = { killed: 0, finished: 0, unchanged: 0, webMoved: 0, appBehind: 0, killedBetweenSwaps: 0, webSwapKillsBetween: 0 };
    for (const when of plan) {
      await pushRound();
      const started = Date.now();
      const proc = startDerrick(['publish', '-c', cfgFile]);
      let watcher: FSWatcher | undefined;
      let timer: NodeJS.Timeout | undefined;
      const kill = () => {
        try {
          process.kill(proc.pid, 'SIGKILL');
        } catch {
          // already exited
        }
      };
      // An inotify event names the entry that just changed: the renamed symlink, or a new master.
      if (when === 'web-swap') watcher = watch(l.webDir, (_e, name) => name === webName && kill());
      else if (when === 'app-swap') watcher = watch(l.appDir, (_e, name) => name === appName && kill());
      else if (when === 'master') {
        watcher = watch(l.masterDir(REPO), (_e, name) => typeof name === 'string' && MASTER_NAME_RE.test(name) && kill());
      } else {
        timer = setTimeout(kill, when * estimate);
      }
      const { code, signal } = await proc.exited;
      clearTimeout(timer);
      watcher?.close();
      await proc.stop();
      if (signal === 'SIGKILL') seen.killed++;
      else {
        expect(code, `${proc.output()}`).toBe(0);
        seen.finished++;
        estimate = (estimate + (Date.now() - started)) / 2;
      }

      // Invariants 1-3 (and the transition from the previous state), then invariant 4.
      const now = await checkTree(root, REPO, { previous: prev });
      await checkStore(root);
      // Every master under a real name is complete, served or not (a kill mid-build must leave
      // only a temp name behind); and, again, app is never ahead of web.
      const verdict = await verifyRepo(l, REPO);
      expect(verdict.damage, `after a kill at ${when}: ${proc.output()}`).toEqual([]);
      if (now.web === prev.web && now.app === prev.app) seen.unchanged++;
      if (now.web !== prev.web) seen.webMoved++;
      if (now.app !== now.web) seen.appBehind++;
      if (now.web !== prev.web && now.app === prev.web) {
        seen.killedBetweenSwaps++;
        if (when === 'web-swap') seen.webSwapKillsBetween++;
      }
      prev = now;
    }
    console.log(`crash test: full run ${duration} ms (estimate at the end ${Math.round(estimate)} ms); ${plan.length} runs: ${JSON.stringify(seen)}`);
    expect(seen.killed).toBeGreaterThanOrEqual(50);
    // A kill at the web swap lands before the app swap some of the time (6-8 of 8 with the swaps in
    // the right order). With app swapped first, web's rename is the last step and this stays 0.
    expect(seen.webSwapKillsBetween, 'kills at the web swap that left app one publish behind').toBeGreaterThan(0);

    // A normal run completes whatever was interrupted and publishes every tag.
    const last = await derrick(['publish', '-c', cfgFile]);
    expect(last.code, last.stderr).toBe(0);
    const final = await checkTree(root, REPO, { previous: prev });
    expect(final.app).toBe(final.web);
    expect(Object.keys(final.file.derrick!.tags).sort()).toEqual(['base-a', 'base-b', 'live']);
    expect(final.file.derrick!.tags.live).toBe(live);
    await checkStore(root, { fresh: true });
    await assertNoDebris(root);
    // The repo state beside the store is whole, with no writer's temp file next to it.
    expect(await fs.readdir(l.repoStateDir)).toEqual([`${repoKey(REPO)}.json`]);
    // Nothing half-built is left among the masters either.
    for (const m of await fs.readdir(l.masterDir(REPO))) expect(m.startsWith('.tmp-'), m).toBe(false);
  });
});
