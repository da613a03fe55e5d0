// Crash target 1: `derrick publish` from a real docker-registry, SIGKILLed at random instants over
// a run, near its end, and at the moments a master appears under its real name, web/<repo> is
// swapped and app/<repo>.json is swapped. Each round points a tag at new content upstream, so
// every run has something to fetch and publish.
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateImage } from '../gen-image.js';
import { MASTER_NAME_RE, layout, repoKey } from '../../shared/layout.js';
import { runChild } from '../soak/children.js';
import { CLI } from '../soak/publisher.js';
import { pushImage, startUpstream } from '../soak/upstream.js';
import { RunLength, runKilled, type KillAt } from './kill.js';
import { killPlan, type CrashTarget } from './target.js';

const REPO = 'crash/big';
const MiB = 1024 * 1024;

export interface PublisherTargetOptions {
  /** Bytes of the two base layers pushed first (a run re-checks them every time). */
  baseLayers?: number[];
  /** Bytes of the new layers pushed each round. */
  roundLayers?: number[];
  kills: number;
}

export async function publisherTarget(dir: string, o: PublisherTargetOptions): Promise<CrashTarget> {
  const up = await startUpstream(path.join(dir, 'upstream'));
  const gen = path.join(dir, 'gen');
  const root = path.join(dir, 'var');
  const configFile = path.join(dir, 'derrick.yaml');
  const host = new URL(up.url).host;
  let n = 0;
  const push = async (tag: string, layers: number[]) => {
    const img = await generateImage({ layoutDir: gen, tag, seed: `${tag}-${n++}`, layers });
    await pushImage(up.url, REPO, gen, img, tag);
  };
  const base = o.baseLayers ?? [6 * MiB, 4 * MiB];
  await push('base-a', base);
  await push('base-b', base.map((b) => b + 1024));
  await fs.writeFile(configFile, ['root: ./var', 'repos:', `  - name: ${REPO}`, `    from: docker://${host}/${REPO}`, '    tls-verify: false', ''].join('\n'));
  const roundLayers = o.roundLayers ?? [2 * MiB, 512 * 1024];
  const publish = () => runChild(process.execPath, [CLI, 'publish', '-c', configFile], 300_000);

  const first = await publish();
  if (first.code !== 0) throw new Error(`first publish failed:\n${first.output}`);
  await push('live', roundLayers);
  const t0 = Date.now();
  const full = await publish();
  if (full.code !== 0) throw new Error(`publish failed:\n${full.output}`);
  const length = new RunLength(Date.now() - t0);

  const l = layout(root);
  const moments: Record<string, KillAt> = {
    'web-swap': { dir: l.webDir, match: (name) => name === repoKey(REPO) },
    'app-swap': { dir: l.appDir, match: (name) => name === `${repoKey(REPO)}.json` },
    master: { dir: l.masterDir(REPO), match: (name) => MASTER_NAME_RE.test(name) },
  };
  // The web swap twice as often: kills there must land between the swaps some of the time.
  const nextKill = killPlan(Math.ceil(o.kills * 1.3), moments, length, ['web-swap', 'app-swap', 'web-swap', 'master']);
  return {
    name: 'publisher',
    root,
    configFile,
    repos: () => [REPO],
    async round() {
      const { at, moment } = nextKill();
      await push('live', roundLayers);
      const r = await runKilled(CLI, ['publish', '-c', configFile], at);
      if (!r.killed) length.finished(r.ms);
      return { killed: r.killed, moment, failure: !r.killed && r.code !== 0 ? `publish exited ${r.code}:\n${r.output}` : undefined };
    },
    async recover() {
      const r = await publish();
      return r.code === 0 ? undefined : `publish exited ${r.code}:\n${r.output}`;
    },
    stop: () => up.stop(),
  };
}
