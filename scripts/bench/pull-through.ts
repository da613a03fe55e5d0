// Pull-through benchmark: `skopeo copy` of a >= 100 MB image, timed
//   (a) directly from the upstream docker-registry (the baseline),
//   (b) through `derrick serve` cold (nothing cached: streamed from the upstream while stored),
//   (c) through derrick warm (after the commit: redirects to the published tree),
//   (d) through a second docker-registry in proxy mode (proxy.remoteurl), cold.
// Every copy goes to a fresh oci: directory. Cold runs use a fresh derrick root / proxy storage
// each time; every figure is a median of `rounds` runs, interleaved with the baseline.
//
//   node dist/scripts/bench/pull-through.js      (after npm run build)
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ACCEPT_ALL_MANIFESTS } from '../../shared/oci.js';
import { formatBytes } from '../../shared/units.js';
import { generateImage } from '../gen-image.js';
import { freePort, median, startNode } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');
const REGISTRY_BIN = process.env.DOCKER_REGISTRY_BIN ?? '/usr/bin/docker-registry';
const REPO = 'bench/big';
const TAG = 'latest';

export interface PullThroughBench {
  /** derrick serve, nothing cached. */
  coldMs: number;
  /** derrick serve after the commit (redirects to the published tree). */
  warmMs: number;
  /** Straight from the upstream registry. */
  directMs: number;
  /** docker-registry in proxy mode, nothing cached. */
  proxyMs: number;
  /** docker-registry in proxy mode, second pull. */
  proxyWarmMs: number;
  /** coldMs / directMs (goal <= 1.05). */
  coldRatio: number;
  /** warmMs / directMs (goal <= 0.9). */
  warmRatio: number;
  /** proxyMs / directMs. */
  proxyRatio: number;
  imageBytes: number;
  rounds: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const hasExited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;

/** Children to kill if this process exits without stopping them. */
const live = new Set<ChildProcess>();
const killAll = () => {
  for (const c of live) if (!hasExited(c)) c.kill('SIGKILL');
};
process.on('exit', killAll);

function track(c: ChildProcess): ChildProcess {
  live.add(c);
  c.once('exit', () => live.delete(c));
  return c;
}

/** SIGTERM, SIGKILL after 3 s; resolves once exited. Safe to call twice (util's stop() is not, for a child killed by a signal). */
async function stopTracked(c: ChildProcess | undefined): Promise<void> {
  if (!c) return;
  if (!hasExited(c)) {
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => {
      if (!hasExited(c)) c.kill('SIGKILL');
    }, 3000);
    await exited;
    clearTimeout(timer);
  }
  live.delete(c);
}

/** Runs a command to completion (async, so the servers' pipes keep draining); rejects on failure. */
function exec(cmd: string, args: string[], timeoutMs = 300_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}):\n${stderr || stdout}`));
    });
  });
}

async function waitForHttp(url: string, child: ChildProcess, timeoutMs = 20_000, ok: (status: number) => boolean = () => true): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before ${url} answered`);
    try {
      const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(2000), method: 'HEAD' });
      if (ok(res.status)) return res.status;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = String(err);
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${url} (${last})`);
}

interface RunningRegistry {
  url: string;
  host: string;
  child: ChildProcess;
}

/** A docker-registry on 127.0.0.1:<free port> with storage under `dir`; `remoteurl` makes it a proxy. */
async function startRegistry(dir: string, remoteurl?: string): Promise<RunningRegistry> {
  await fs.mkdir(path.join(dir, 'data'), { recursive: true });
  const port = await freePort();
  const lines = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${JSON.stringify(path.join(dir, 'data'))}`,
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  secret: derrick-bench-secret',
  ];
  if (remoteurl) lines.push('proxy:', `  remoteurl: ${remoteurl}`);
  const config = path.join(dir, 'config.yml');
  await fs.writeFile(config, lines.join('\n') + '\n');
  const child = track(spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'ignore', 'ignore'] }));
  const host = `127.0.0.1:${port}`;
  await waitForHttp(`http://${host}/v2/`, child);
  return { url: `http://${host}`, host, child };
}

interface RunningDerrick {
  host: string;
  url: string;
  child: ChildProcess;
}

async function startDerrick(dir: string, upstreamUrl: string): Promise<RunningDerrick> {
  await fs.mkdir(dir, { recursive: true });
  const config = path.join(dir, 'derrick.yaml');
  await fs.writeFile(
    config,
    [
      'root: ./var',
      'upstreams:',
      '  - prefix: hub',
      `    url: ${upstreamUrl}`,
      '    tls-verify: false',
      '    tag-ttl: 1h',
      '    policy: IfNotPresent',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  // startNode's data listeners keep draining the pipes after it resolves.
  const child = track(await startNode([CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`], /listening/, { ...process.env, DERRICK_LOG_LEVEL: 'warn' }));
  return { host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, child };
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

export async function benchPullThrough(opts: { rounds?: number; layerBytes?: number; layers?: number; gzip?: boolean } = {}): Promise<PullThroughBench> {
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
    const layoutDir = path.join(dir, 'layout');
    // gzip (level 1) by default: skopeo would compress uncompressed layers on the push anyway.
    const img = await generateImage({ layoutDir, tag: TAG, seed: 'bench-pull-through', layers: Array(layers).fill(layerBytes), gzip: opts.gzip ?? true });
    if (img.totalBytes < 100 * 1e6 && !opts.layerBytes) throw new Error(`image is only ${img.totalBytes} bytes`);

    const upstream = await startRegistry(path.join(dir, 'upstream'));
    await exec('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layoutDir}:${TAG}`, `docker://${upstream.host}/${REPO}:${TAG}`]);
    // The layer digests as the upstream has them (a push may rewrite them).
    const served = await fetch(`${upstream.url}/v2/${REPO}/manifests/${TAG}`, { headers: { Accept: ACCEPT_ALL_MANIFESTS } });
    if (served.status !== 200) throw new Error(`upstream manifest: HTTP ${served.status}`);
    const lastLayer = ((await served.json()) as { layers: Array<{ digest: string }> }).layers.at(-1)!.digest;
    // Warm the upstream's page cache and skopeo's binary before anything is timed.
    await timedPull(upstream.host, REPO, scratch);

    const direct: number[] = [];
    const cold: number[] = [];
    const proxyCold: number[] = [];
    const proxyWarm: number[] = [];
    let lastDerrick: RunningDerrick | undefined;
    for (let i = 0; i < rounds; i++) {
      direct.push(await timedPull(upstream.host, REPO, scratch));

      // A fresh derrick root each round: a real cold pull.
      if (lastDerrick) await stopTracked(lastDerrick.child);
      const d = await startDerrick(path.join(dir, `derrick-${i}`), upstream.url);
      lastDerrick = d;
      cold.push(await timedPull(d.host, `hub/${REPO}`, scratch));

      // A fresh proxy-mode registry each round.
      const p = await startRegistry(path.join(dir, `proxy-${i}`), upstream.url);
      try {
        proxyCold.push(await timedPull(p.host, REPO, scratch));
        proxyWarm.push(await timedPull(p.host, REPO, scratch));
      } finally {
        await stopTracked(p.child);
        await fs.rm(path.join(dir, `proxy-${i}`), { recursive: true, force: true });
      }
      if (i < rounds - 1) {
        await stopTracked(d.child);
        await fs.rm(path.join(dir, `derrick-${i}`), { recursive: true, force: true });
      }
    }

    // Warm: the last cold derrick, once its cache repo is committed.
    const d = lastDerrick!;
    await waitForCommit(d, `hub/${REPO}`, lastLayer);
    const warm: number[] = [];
    for (let i = 0; i < rounds; i++) {
      warm.push(await timedPull(d.host, `hub/${REPO}`, scratch));
      direct.push(await timedPull(upstream.host, REPO, scratch));
    }

    const directMs = median(direct);
    const coldMs = median(cold);
    const warmMs = median(warm);
    const proxyMs = median(proxyCold);
    const proxyWarmMs = median(proxyWarm);
    return {
      coldMs,
      warmMs,
      directMs,
      proxyMs,
      proxyWarmMs,
      coldRatio: coldMs / directMs,
      warmRatio: warmMs / directMs,
      proxyRatio: proxyMs / directMs,
      imageBytes: img.totalBytes,
      rounds,
    };
  } finally {
    // Every server this run started (the upstream, derricks, proxies), by their ChildProcess.
    for (const c of [...live]) await stopTracked(c);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export function formatPullThrough(r: PullThroughBench): string {
  const fmt = (n: number) => n.toFixed(0);
  return [
    `pull-through (skopeo copy of a ${formatBytes(r.imageBytes)} image to a fresh oci: dir, median of ${r.rounds})`,
    `  direct from the upstream (baseline): ${fmt(r.directMs)} ms`,
    `  derrick cold:                        ${fmt(r.coldMs)} ms  ratio ${r.coldRatio.toFixed(2)}x (goal <= 1.05x)  ${r.coldRatio <= 1.05 ? 'OK' : 'MISSED'}`,
    `  derrick warm (redirects):            ${fmt(r.warmMs)} ms  ratio ${r.warmRatio.toFixed(2)}x (goal <= 0.9x)  ${r.warmRatio <= 0.9 ? 'OK' : 'MISSED'}`,
    `  docker-registry proxy, cold:         ${fmt(r.proxyMs)} ms  ratio ${r.proxyRatio.toFixed(2)}x`,
    `  docker-registry proxy, warm:         ${fmt(r.proxyWarmMs)} ms  ratio ${(r.proxyWarmMs / r.directMs).toFixed(2)}x`,
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const r = await benchPullThrough();
  console.log(formatPullThrough(r));
}
