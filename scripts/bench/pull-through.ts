// Pull-through rows: `skopeo copy` of a >= 100 MB image to a fresh oci: directory, timed
//   (a) directly from the upstream docker-registry (the baseline),
//   (b) through `derrick serve` cold: an image it has never seen, streamed from the upstream while stored,
//   (c) through derrick warm: after the commit, redirects to the published tree served by the
//       embedded file server, and (when nginx is installed) by nginx,
//   (d) through a docker-registry in proxy mode (proxy.remoteurl), cold and warm;
// once on plain loopback and once with the upstream behind the shaping proxy (100 MB/s shared,
// 20 ms per request), which the direct pull, derrick and the proxy registry all go through.
// derrick runs as one long-lived process, as it does in production: it pulls a warm-up image
// first, and each cold round pulls a different, never-seen image of the same size. Each proxy
// round starts a fresh registry. Every figure is a median of `rounds` runs, each interleaved with
// a direct pull of the same image.
//
//   node dist/scripts/bench/pull-through.js [--quick]     (after npm run build)
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ACCEPT_ALL_MANIFESTS } from '../../shared/oci.js';
import { formatBytes } from '../../shared/units.js';
import { generateImage } from '../gen-image.js';
import { exec, killAll, NGINX_BIN, startNginx, startRegistry, startShaper, stopAll, stopTracked, track, waitForHttp } from './servers.js';
import { row, type BenchContext, type Row } from './table.js';
import { derrickArgv, freePort, hasCommand, median, startNode } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');
const REPO = 'bench/big';
const TAG = 'latest';

export interface PullThroughBench {
  /** derrick serve, nothing cached. */
  coldMs: number;
  /** derrick serve after the commit (redirects to the published tree, embedded file server). */
  warmMs: number;
  /** The same with nginx serving the published tree (undefined without nginx). */
  warmNginxMs?: number;
  /** Straight from the upstream registry. */
  directMs: number;
  /** docker-registry in proxy mode, nothing cached. */
  proxyMs: number;
  /** docker-registry in proxy mode, second pull. */
  proxyWarmMs: number;
  /** coldMs / directMs (goal <= 1.05). */
  coldRatio: number;
  /** The better warm figure (embedded or nginx) / directMs (goal <= 0.9). */
  warmRatio: number;
  /** proxyMs / directMs. */
  proxyRatio: number;
  imageBytes: number;
  rounds: number;
}

export interface RunningDerrick {
  host: string;
  url: string;
  child: ChildProcess;
  /** Its derrick.yaml (root ./var beside it). */
  config: string;
}

/** `derrick serve` with one pull-through route (`hub`) to the upstream, its root in `dir/var`. */
export async function startDerrick(dir: string, upstreamUrl: string, blobs = 'embedded', routeExtra: string[] = []): Promise<RunningDerrick> {
  await fs.mkdir(dir, { recursive: true });
  const config = path.join(dir, `derrick-${blobs === 'embedded' ? 'embedded' : 'external'}${routeExtra.length ? '-' + routeExtra.join('-').replace(/[^a-z0-9-]/gi, '') : ''}.yaml`);
  await fs.writeFile(
    config,
    [
      'root: ./var',
      'serve:',
      `  blobs: ${blobs}`,
      'upstreams:',
      '  - prefix: hub',
      `    url: ${upstreamUrl}`,
      '    tls-verify: false',
      '    tag-ttl: 1h',
      '    policy: IfNotPresent',
      ...routeExtra.map((l) => `    ${l}`),
      '',
    ].join('\n'),
  );
  const port = await freePort();
  // startNode's data listeners keep draining the pipes after it resolves.
  const child = track(await startNode(derrickArgv(CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`), /listening/, { ...process.env, DERRICK_LOG_LEVEL: 'warn' }));
  return { host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, child, config };
}

/** nginx serving the published tree of `config` with the server block `derrick nginx-conf` prints. */
async function startNginxFor(config: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const { stdout } = await exec(process.execPath, derrickArgv(CLI, 'nginx-conf', '-c', config, '--listen', `127.0.0.1:${port}`));
  const url = `http://127.0.0.1:${port}`;
  const child = await startNginx(path.join(path.dirname(config), 'nginx'), stdout, `${url}/`);
  return { url, child };
}

/** Wall time of `skopeo copy docker://<host>/<repo>:<tag> oci:<fresh dir>:<tag>`; the copy is deleted after. */
async function timedPull(host: string, repo: string, scratch: string): Promise<number> {
  const out = await fs.mkdtemp(path.join(scratch, 'pull-'));
  try {
    const t0 = performance.now();
    await exec('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${host}/${repo}:${TAG}`, `oci:${out}:${TAG}`]);
    return performance.now() - t0;
  } finally {
    await fs.rm(out, { recursive: true, force: true });
  }
}

/** Waits until a blob GET for the cache repo is answered with a redirect (the commit happened). */
async function waitForCommit(d: RunningDerrick, repo: string, digest: string, timeoutMs = 60_000): Promise<void> {
  await waitForHttp(`${d.url}/v2/${repo}/blobs/${digest}`, d.child, timeoutMs, (s) => s === 307 || s === 302);
}

export async function benchPullThrough(opts: { rounds?: number; layerBytes?: number; layers?: number; gzip?: boolean; shape?: { rateMBs: number; perConnMBs?: number; latencyMs: number }; routeExtra?: string[] } = {}): Promise<PullThroughBench> {
  const rounds = opts.rounds ?? 3;
  const layers = opts.layers ?? 4;
  const layerBytes = opts.layerBytes ?? 26 * 1024 * 1024;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-pull-through-'));
  const scratch = path.join(dir, 'pulls');
  await fs.mkdir(scratch);
  // Ctrl-C or a kill: stop the servers and remove the temp dir rather than leave them behind.
  const onSignal = (sig: NodeJS.Signals) => {
    killAll();
    void fs.rm(dir, { recursive: true, force: true }).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const upstream = await startRegistry(path.join(dir, 'upstream'));
    // Image 0 warms derrick up; images 1..rounds are each pulled cold once. Same size, different bytes.
    const repos: string[] = [];
    let lastLayer = '';
    let imageBytes = 0;
    for (let i = 0; i <= rounds; i++) {
      const layoutDir = path.join(dir, `layout-${i}`);
      // gzip (level 1) by default: skopeo would compress uncompressed layers on the push anyway.
      const img = await generateImage({ layoutDir, tag: TAG, seed: `bench-pull-through-${i}`, layers: Array(layers).fill(layerBytes), gzip: opts.gzip ?? true });
      if (img.totalBytes < 100 * 1e6 && !opts.layerBytes) throw new Error(`image is only ${img.totalBytes} bytes`);
      imageBytes = img.totalBytes;
      const repo = `${REPO}${i}`;
      await exec('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layoutDir}:${TAG}`, `docker://${upstream.host}/${repo}:${TAG}`]);
      await fs.rm(layoutDir, { recursive: true, force: true });
      repos.push(repo);
      // The layer digests as the upstream has them (a push may rewrite them).
      const served = await fetch(`${upstream.url}/v2/${repo}/manifests/${TAG}`, { headers: { Accept: ACCEPT_ALL_MANIFESTS } });
      if (served.status !== 200) throw new Error(`upstream manifest: HTTP ${served.status}`);
      lastLayer = ((await served.json()) as { layers: Array<{ digest: string }> }).layers.at(-1)!.digest;
      // Warm the upstream's page cache (and skopeo's binary) before anything is timed.
      await timedPull(upstream.host, repo, scratch);
    }

    // The far upstream: the registry itself (loopback), or the shaping proxy in front of it.
    const far = opts.shape ? await startShaper(upstream.host, opts.shape) : upstream;
    const derrickDir = path.join(dir, 'derrick');
    const d = await startDerrick(derrickDir, far.url, 'embedded', opts.routeExtra);
    await timedPull(d.host, `hub/${repos[0]}`, scratch);

    const direct: number[] = [];
    const cold: number[] = [];
    const proxyCold: number[] = [];
    const proxyWarm: number[] = [];
    for (let i = 1; i <= rounds; i++) {
      const repo = repos[i]!;
      direct.push(await timedPull(far.host, repo, scratch));
      cold.push(await timedPull(d.host, `hub/${repo}`, scratch));
      // A fresh proxy-mode registry each round.
      const p = await startRegistry(path.join(dir, `proxy-${i}`), { remoteurl: far.url });
      try {
        proxyCold.push(await timedPull(p.host, repo, scratch));
        proxyWarm.push(await timedPull(p.host, repo, scratch));
      } finally {
        await stopTracked(p.child);
        await fs.rm(path.join(dir, `proxy-${i}`), { recursive: true, force: true });
      }
    }

    // Warm: the last image, once its cache repo is committed.
    const last = repos[rounds]!;
    await waitForCommit(d, `hub/${last}`, lastLayer);
    const warm: number[] = [];
    for (let i = 0; i < rounds; i++) {
      warm.push(await timedPull(d.host, `hub/${last}`, scratch));
      direct.push(await timedPull(far.host, last, scratch));
    }

    // The same published tree behind nginx, the blob server operators run in production.
    let warmNginxMs: number | undefined;
    if (hasCommand(NGINX_BIN)) {
      await stopTracked(d.child);
      const ngx = await startNginxFor(d.config);
      const dn = await startDerrick(derrickDir, far.url, `${ngx.url}/published`);
      await timedPull(dn.host, `hub/${last}`, scratch);
      const warmNginx: number[] = [];
      for (let i = 0; i < rounds; i++) {
        warmNginx.push(await timedPull(dn.host, `hub/${last}`, scratch));
        direct.push(await timedPull(far.host, last, scratch));
      }
      warmNginxMs = median(warmNginx);
    }

    const directMs = median(direct);
    const coldMs = median(cold);
    const warmMs = median(warm);
    const proxyMs = median(proxyCold);
    const proxyWarmMs = median(proxyWarm);
    return {
      coldMs,
      warmMs,
      warmNginxMs,
      directMs,
      proxyMs,
      proxyWarmMs,
      coldRatio: coldMs / directMs,
      warmRatio: Math.min(warmMs, warmNginxMs ?? Infinity) / directMs,
      proxyRatio: proxyMs / directMs,
      imageBytes,
      rounds,
    };
  } finally {
    // Every server this run started (the upstream, derricks, proxies, nginx), by their ChildProcess.
    await stopAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function rows(group: string, r: PullThroughBench, goals: { cold: number; warm: number }): Row[] {
  const direct = { what: 'direct skopeo pull', figure: r.directMs };
  const img = `${formatBytes(r.imageBytes)}, median of ${r.rounds}`;
  return [
    row({ group, what: `derrick cold (${img})`, figure: r.coldMs, unit: 'ms', baseline: direct, goal: { op: '<=', value: goals.cold }, raw: r }),
    row({ group, what: 'derrick warm, embedded blob server', figure: r.warmMs, unit: 'ms', baseline: direct, ...(r.warmNginxMs === undefined ? { goal: { op: '<=', value: goals.warm } } : {}) }),
    ...(r.warmNginxMs === undefined ? [] : [row({ group, what: 'derrick warm, nginx blob server', figure: r.warmNginxMs, unit: 'ms', baseline: direct, goal: { op: '<=', value: goals.warm } })]),
    row({ group, what: 'docker-registry proxy, cold', figure: r.proxyMs, unit: 'ms', baseline: direct }),
    row({ group, what: 'docker-registry proxy, warm', figure: r.proxyWarmMs, unit: 'ms', baseline: direct }),
  ];
}

/** The link of the shaped rows: 100 MB/s shared by all connections, 20 ms before each request. */
export const SHAPED = { rateMBs: 100, latencyMs: 20 };

export async function run(ctx: BenchContext): Promise<Row[]> {
  const rounds = ctx.quick ? 1 : 3;
  ctx.log(`pull-through: loopback, ${rounds} rounds`);
  const loop = await benchPullThrough({ rounds });
  ctx.log(`pull-through: behind the shaping proxy (${SHAPED.rateMBs} MB/s shared, ${SHAPED.latencyMs} ms), ${rounds} rounds`);
  const shaped = await benchPullThrough({ rounds, shape: SHAPED });
  return [
    ...rows('pull-through loopback', loop, { cold: 1.05, warm: 0.9 }),
    ...rows(`pull-through ${SHAPED.rateMBs} MB/s ${SHAPED.latencyMs} ms`, shaped, { cold: 1.0, warm: 0.5 }),
  ];
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const { formatTable } = await import('./table.js');
  console.log(formatTable(await run({ quick: process.argv.includes('--quick'), log: (m) => console.error(m) })));
}
