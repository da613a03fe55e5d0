// Crash target 2: `derrick gc` SIGKILLed while it deletes expired masters and the store objects
// nothing names any more. Publishes run with a long grace (old masters stay); gc runs with
// `grace: 0s` on the same root, so every round leaves it masters and blobs to delete. Kills land
// at random instants and at the first removal under a master directory or the store.
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateImage } from '../gen-image.js';
import { layout } from '../../shared/layout.js';
import { runChild } from '../soak/children.js';
import { CLI } from '../soak/publisher.js';
import { RunLength, runKilled, type KillAt } from './kill.js';
import { killPlan, type CrashTarget } from './target.js';

const REPOS = ['crash/gc-a', 'crash/gc-b', 'crash/gc-c'];

export async function gcTarget(dir: string, o: { kills: number; layers?: number[] }): Promise<CrashTarget> {
  const images = path.join(dir, 'images');
  const root = path.join(dir, 'var');
  const publishConfig = path.join(dir, 'publish.yaml');
  const configFile = path.join(dir, 'gc.yaml');
  await fs.mkdir(dir, { recursive: true });
  const repos = REPOS.flatMap((n) => [`  - name: ${n}`, '    from: oci:./images']);
  await fs.writeFile(publishConfig, ['root: ./var', 'keep: 0', 'grace: 1h', 'repos:', ...repos, ''].join('\n'));
  await fs.writeFile(configFile, ['root: ./var', 'keep: 0', 'grace: 0s', 'repos:', ...repos, ''].join('\n'));
  let n = 0;
  const layers = o.layers ?? [400_000, 100_000];
  /** Points `live` at new content and publishes it: the previous master and its blobs become garbage. */
  const publishNew = async () => {
    await generateImage({ layoutDir: images, tag: 'live', seed: `gc-live-${n++}`, layers });
    const r = await runChild(process.execPath, [CLI, 'publish', '-c', publishConfig], 120_000);
    if (r.code !== 0) throw new Error(`publish for gc failed:\n${r.output}`);
  };
  const gc = () => runChild(process.execPath, [CLI, 'gc', '-c', configFile], 120_000);
  await generateImage({ layoutDir: images, tag: 'base', layers: [200_000] });
  await publishNew();
  await publishNew();
  const t0 = Date.now();
  const first = await gc();
  if (first.code !== 0) throw new Error(`gc failed:\n${first.output}`);
  const length = new RunLength(Date.now() - t0);

  const l = layout(root);
  const moments: Record<string, KillAt> = {
    'master-removal': { dir: l.masterDir(REPOS[0]!), match: () => true },
    'blob-removal': { dir: l.storeBlobsDir, match: () => true },
  };
  const nextKill = killPlan(Math.ceil(o.kills * 1.5), moments, length);
  return {
    name: 'gc',
    root,
    configFile,
    repos: () => REPOS,
    async round() {
      // The master this replaces stays (publish's grace is long) for gc to delete, with its blobs.
      await publishNew();
      const { at, moment } = nextKill();
      // gc's own work comes after node's start-up: random kills are spread over the whole run.
      const r = await runKilled(CLI, ['gc', '-c', configFile], at);
      if (!r.killed) length.finished(r.ms);
      return { killed: r.killed, moment, failure: !r.killed && r.code !== 0 ? `gc exited ${r.code}:\n${r.output}` : undefined };
    },
    async recover() {
      const r = await gc();
      return r.code === 0 ? undefined : `gc exited ${r.code}:\n${r.output}`;
    },
    stop: async () => undefined,
  };
}
