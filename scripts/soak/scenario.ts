// One soak scenario: a real `derrick serve` (embedded blobs, nginx blobs, or with a pull-through
// route whose docker-registry upstream is killed and restarted), 20 pull loops against it, a
// publisher moving tags and running `derrick publish`, and `derrick gc` now and then.
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { layout } from '../../shared/layout.js';
import { NGINX_BIN, nginxMainConf } from '../nginx-main-conf.js';
import { freePort, runChild, sleep, startChild, waitForHttp, type Child } from './children.js';
import { pullLoop, pullOnce, type PullStats, type PullTarget } from './puller.js';
import { CLI, copyImageSet, gcLoop, makeImageSet, publishLoop, type PublisherStats } from './publisher.js';
import { pushImage, startUpstream, type Upstream } from './upstream.js';

export type SoakMode = 'embedded' | 'nginx' | 'pull-through';

export interface ScenarioResult extends PullStats, PublisherStats {
  mode: SoakMode;
  workers: number;
  upstreamRestarts: number;
}

/** Repos published side by side (each under its own lock), so tags move often enough. */
const REPOS = ['soak/app', 'soak/app-2', 'soak/app-3'];
const TAGS = ['a', 'b', 'c'];
const CACHE_REPO = 'up/soak/base';
const CACHE_TAGS = ['x', 'y'];

function configYaml(blobs: string, upstreamUrl?: string): string {
  const lines = ['root: ./var', 'keep: 2', 'grace: 10s', 'repos:'];
  for (const [i, repo] of REPOS.entries()) lines.push(`  - name: ${repo}`, `    from: oci:./images-${i}`);
  if (upstreamUrl) {
    lines.push('upstreams:', '  - prefix: up', `    url: ${JSON.stringify(upstreamUrl)}`, '    tls-verify: false', '    tag-ttl: 1s', '    policy: IfNotPresent');
  }
  lines.push('serve:', '  listen: 127.0.0.1:0', `  blobs: ${JSON.stringify(blobs)}`);
  return lines.join('\n') + '\n';
}

async function startNginxFor(configFile: string, dir: string, port: number): Promise<Child> {
  const conf = await runChild(process.execPath, [CLI, 'nginx-conf', '-c', configFile, '--listen', `127.0.0.1:${port}`], 60_000);
  if (conf.code !== 0) throw new Error(`derrick nginx-conf exited ${conf.code}: ${conf.output}`);
  await fs.mkdir(path.join(dir, 'tmp'), { recursive: true });
  const file = path.join(dir, 'nginx.conf');
  await fs.writeFile(file, nginxMainConf(dir, conf.output, { accessLog: false }));
  const nginx = startChild(NGINX_BIN, ['-c', file, '-p', dir + '/', '-e', path.join(dir, 'error.log')]);
  await waitForHttp(`http://127.0.0.1:${port}/`, 15_000, nginx);
  return nginx;
}

/** Kills the upstream, keeps it down for a while, starts it again, until `until()`. */
async function flapUpstream(up: Upstream, until: () => boolean, stats: PublisherStats): Promise<void> {
  while (!until()) {
    await sleep(1000 + Math.random() * 1000);
    await up.kill();
    await sleep(800 + Math.random() * 1200);
    try {
      await up.start();
      up.restarts++;
    } catch (err) {
      stats.failed++;
      stats.errors.push(`upstream restart: ${(err as Error).message}`);
    }
  }
}

/** `workers`: serve --workers (1: one process). */
export async function runScenario(mode: SoakMode, dir: string, durationMs: number, loops: number, gcEveryMs: number, workers = 1): Promise<ScenarioResult> {
  const stats: ScenarioResult = { mode, workers, pulls: 0, failed: 0, digestMismatches: 0, stale: 0, errors: [], publishes: 0, gcRuns: 0, upstreamRestarts: 0 };
  const pubStats: PublisherStats = { publishes: 0, gcRuns: 0, failed: 0, errors: [] };
  const children: Child[] = [];
  let upstream: Upstream | undefined;
  try {
    await fs.mkdir(dir, { recursive: true });
    const set = await makeImageSet(path.join(dir, 'images-0'), 4, TAGS);
    const sets = [set];
    for (let i = 1; i < REPOS.length; i++) sets.push(await copyImageSet(set, path.join(dir, `images-${i}`)));
    const targets: PullTarget[] = REPOS.flatMap((repo) => TAGS.map((tag) => ({ repo, tag, allowed: set.digests })));

    let blobs = 'embedded';
    const nginxPort = mode === 'nginx' ? await freePort() : 0;
    if (mode === 'nginx') blobs = `http://127.0.0.1:${nginxPort}/published`;
    if (mode === 'pull-through') {
      upstream = await startUpstream(path.join(dir, 'upstream'));
      for (const [i, tag] of CACHE_TAGS.entries()) {
        const img = set.images[i]!;
        await pushImage(upstream.url, 'soak/base', set.layoutDir, img, tag);
        targets.push({ repo: CACHE_REPO, tag, allowed: new Set([img.digest]) });
      }
    }
    const configFile = path.join(dir, 'derrick.yaml');
    await fs.writeFile(configFile, configYaml(blobs, upstream?.url));

    const first = await runChild(process.execPath, [CLI, 'publish', '-c', configFile], 120_000);
    if (first.code !== 0) throw new Error(`first derrick publish exited ${first.code}: ${first.output}`);
    if (mode === 'nginx') children.push(await startNginxFor(configFile, path.join(dir, 'nginx'), nginxPort));

    const port = await freePort();
    const serve = startChild(process.execPath, [CLI, 'serve', '-c', configFile, '--listen', `127.0.0.1:${port}`, '--workers', String(workers)]);
    children.push(serve);
    const base = `http://127.0.0.1:${port}`;
    await waitForHttp(`${base}/v2/`, 30_000, serve);

    if (mode === 'pull-through') {
      // Cold pulls while the upstream is up, then wait until the cache repo is published: from
      // then on its tags must be served whatever the upstream does.
      for (const t of targets.filter((t) => t.repo === CACHE_REPO)) await pullOnce(base, t);
      const app = layout(path.join(dir, 'var')).app(CACHE_REPO);
      const deadline = Date.now() + 30_000;
      while (!existsSync(app)) {
        if (Date.now() > deadline) throw new Error(`${CACHE_REPO} was not published within 30 s:\n${serve.output()}`);
        await sleep(100);
      }
      // Both tags committed: every blob redirects.
      for (const t of targets.filter((t) => t.repo === CACHE_REPO)) await pullOnce(base, t);
    }

    const end = Date.now() + durationMs;
    const until = () => Date.now() >= end;
    await Promise.all([
      ...Array.from({ length: loops }, () => pullLoop(() => base, () => targets, until, stats)),
      ...REPOS.map((repo, i) => publishLoop(configFile, repo, sets[i]!, until, pubStats)),
      gcLoop(configFile, gcEveryMs, until, pubStats),
      ...(upstream ? [flapUpstream(upstream, until, pubStats)] : []),
    ]);
    if (!serve.alive()) {
      pubStats.failed++;
      pubStats.errors.push(`derrick serve exited during the soak:\n${serve.output().slice(-2000)}`);
    }
  } finally {
    for (const c of children.reverse()) await c.stop();
    await upstream?.stop();
  }
  stats.publishes = pubStats.publishes;
  stats.gcRuns = pubStats.gcRuns;
  stats.failed += pubStats.failed;
  stats.errors.push(...pubStats.errors);
  stats.upstreamRestarts = upstream?.restarts ?? 0;
  return stats;
}
