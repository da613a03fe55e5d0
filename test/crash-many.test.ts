// Crash safety of a concurrent multi-repo run: the real CLI publishing 16 repos, 4 at a time,
// SIGKILLed at random instants over the run. Every round moves a tag that all of them publish,
// so each run has 16 publishes in flight. After every kill, each repo is at its previous publish
// or at a complete new one (or web new and app previous), and the store holds nothing that does
// not hash to its name. The pattern of test/crash.test.ts, over many repos at once.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage } from '../scripts/gen-image.js';
import { layout, repoKey } from '../shared/layout.js';
import { RunLength, runKilled } from '../scripts/crash/kill.js';
import { CLI, derrick } from './helpers/derrick.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { assertNoDebris, checkStore, checkTree, type TreeState } from './helpers/tree.js';

const REPOS = Array.from({ length: 16 }, (_, i) => `crash/m${String(i).padStart(2, '0')}`);
const KILLS = 30;

describe('SIGKILL at random instants during a concurrent multi-repo publish', () => {
  let tmp: TmpDir;
  let root: string;
  let cfgFile: string;
  let images: string;
  let round = 0;
  let live = '';

  /** Points `live` at new content (fresh layers): every repo has something new to publish. */
  const moveLive = async () => {
    live = (await generateImage({ layoutDir: images, tag: 'live', seed: `live-${round++}`, layers: [300_000, 100_000] })).digest;
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-crash-many');
    root = path.join(tmp.dir, 'var');
    cfgFile = path.join(tmp.dir, 'derrick.yaml');
    images = path.join(tmp.dir, 'images');
    await generateImage({ layoutDir: images, tag: 'base', layers: [200_000] });
    await moveLive();
    const repos = REPOS.flatMap((n) => [`  - name: ${n}`, '    from: oci:./images']);
    await fs.writeFile(cfgFile, ['root: ./var', 'keep: 1', 'grace: 1h', 'repo-concurrency: 4', 'repos:', ...repos, ''].join('\n'));
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it('leaves every repo at its previous publish or a complete new one after every kill, and recovers', { timeout: 600_000 }, async () => {
    const first = await derrick(['publish', '-c', cfgFile]);
    expect(first.code, first.stderr).toBe(0);
    const prev = new Map<string, TreeState>();
    for (const n of REPOS) prev.set(n, await checkTree(root, n));

    await moveLive();
    const t0 = Date.now();
    const full = await derrick(['publish', '-c', cfgFile]);
    const length = new RunLength(Date.now() - t0);
    expect(full.code, full.stderr).toBe(0);
    for (const n of REPOS) prev.set(n, await checkTree(root, n, { previous: prev.get(n)! }));

    const seen = { killed: 0, finished: 0, mixed: 0, appBehind: 0 };
    for (let i = 0; i < KILLS; i++) {
      await moveLive();
      const at = length.delay(Math.random() * 1.1);
      const run = await runKilled(CLI, ['publish', '-c', cfgFile], at);
      if (run.killed) seen.killed++;
      else {
        expect(run.code, run.output).toBe(0);
        seen.finished++;
        length.finished(run.ms);
      }
      // Invariants 1-3 per repo, and its transition from where it was (hashes every 5th round).
      let moved = 0;
      for (const n of REPOS) {
        const now = await checkTree(root, n, { previous: prev.get(n)!, noHash: i % 5 !== 0 });
        if (now.web !== prev.get(n)!.web) moved++;
        if (now.app !== now.web) seen.appBehind++;
        prev.set(n, now);
      }
      // A kill in the middle of the pool leaves some repos published and others not.
      if (moved > 0 && moved < REPOS.length) seen.mixed++;
      if (run.killed && moved === 0) length.notReachedBy(at.delayMs);
      await checkStore(root);
    }
    console.log(`crash-many: full run ${length.ms} ms; ${KILLS} runs: ${JSON.stringify(seen)}`);
    expect(seen.killed).toBeGreaterThanOrEqual(KILLS / 2);
    expect(seen.mixed).toBeGreaterThan(0);

    // A normal run completes whatever was interrupted, for every repo.
    const last = await derrick(['publish', '-c', cfgFile]);
    expect(last.code, last.stderr).toBe(0);
    for (const n of REPOS) {
      const t = await checkTree(root, n, { previous: prev.get(n)! });
      expect(t.app).toBe(t.web);
      expect(t.file.derrick!.tags.live).toBe(live);
    }
    await checkStore(root, { fresh: true });
    await assertNoDebris(root);
    const l = layout(root);
    expect((await fs.readdir(l.repoStateDir)).sort()).toEqual(REPOS.map((n) => `${repoKey(n)}.json`).sort());
  });
});
