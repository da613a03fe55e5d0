// Pull-through benchmark: `skopeo copy` of a >= 100 MB image to a fresh oci: directory, timed
//   (a) directly from the upstream docker-registry (the baseline),
//   (b) through `derrick serve` cold: an image it has never seen, streamed from the upstream while stored,
//   (c) through derrick warm: after the commit, redirects to the published tree served by the
//       embedded file server, and (when nginx is installed) by nginx,
//   (d) through a docker-registry in proxy mode (proxy.remoteurl), cold and warm.
// derrick runs as one long-lived process, as it does in production: it pulls a warm-up image
// first, and each cold round pulls a different, never-seen image of the same size. Each proxy
// round starts a fresh registry. Every figure is a median of `rounds` runs, each interleaved with
// a direct pull of the same image.
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
import { NGINX_BIN, nginxMainConf } from '../nginx-main-conf.js';
import { freePort, hasCommand, median, startNode } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');
const REGISTRY_BIN = process.env.DOCKER_REGISTRY_BIN ?? '/usr/bin/docker-registry';
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
  /** Its derrick.yaml (root ./var beside it). */
  config: string;
}

/** `derrick serve` with one pull-through route (`hub`) to the upstream, its root in `dir/var`. */
async function startDerrick(dir: string, upstreamUrl: string, blobs = 'embedded'): Promise<RunningDerrick> {
  await fs.mkdir(dir, { recursive: true });
  const config = path.join(dir, `derrick-${blobs === 'embedded' ? 'embedded' : 'external'}.yaml`);
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
      '',
    ].join('\n'),
  );
  const port = await freePort();
  // startNode's data listeners keep draining the pipes after it resolves.
  const child = track(await startNode([CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`], /listening/, { ...process.env, DERRICK_LOG_LEVEL: 'warn' }));
  return { host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, child, config };
}

/** nginx serving the published tree of `config` with the server block `derrick nginx-conf` prints. */
async function startNginxFor(config: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const { stdout } = await exec(process.execPath, [CLI, 'nginx-conf', '-c', config, '--listen', `127.0.0.1:${port}`]);
  const ngx = path.join(path.dirname(config), 'nginx');
  await fs.mkdir(path.join(ngx, 'tmp'), { recursive: true });
  const conf = path.join(ngx, 'nginx.conf');
  await fs.writeFile(conf, nginxMainConf(ngx, stdout, { accessLog: false }));
  const child = track(spawn(NGINX_BIN, ['-c', conf, '-p', ngx + '/', '-e', path.join(ngx, 'error.log')], { stdio: ['ignore', 'ignore', 'ignore'] }));
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, child);
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

    const derrickDir = path.join(dir, 'derrick');
    const d = await startDerrick(derrickDir, upstream.url);
    await timedPull(d.host, `hub/${repos[0]}`, scratch);

    const direct: number[] = [];
    const cold: number[] = [];
    const proxyCold: number[] = [];
    const proxyWarm: number[] = [];
    for (let i = 1; i <= rounds; i++) {
      const repo = repos[i]!;
      direct.push(await timedPull(upstream.host, repo, scratch));
      cold.push(await timedPull(d.host, `hub/${repo}`, scratch));
      // A fresh proxy-mode registry each round.
      const p = await startRegistry(path.join(dir, `proxy-${i}`), upstream.url);
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
      direct.push(await timedPull(upstream.host, last, scratch));
    }

    // The same published tree behind nginx, the blob server operators run in production.
    let warmNginxMs: number | undefined;
    if (hasCommand(NGINX_BIN)) {
      await stopTracked(d.child);
      const ngx = await startNginxFor(d.config);
      const dn = await startDerrick(derrickDir, upstream.url, `${ngx.url}/published`);
      await timedPull(dn.host, `hub/${last}`, scratch);
      const warmNginx: number[] = [];
      for (let i = 0; i < rounds; i++) {
        warmNginx.push(await timedPull(dn.host, `hub/${last}`, scratch));
        direct.push(await timedPull(upstream.host, last, scratch));
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
    for (const c of [...live]) await stopTracked(c);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export function formatPullThrough(r: PullThroughBench): string {
  const fmt = (n: number) => n.toFixed(0);
  const ratio = (ms: number) => (ms / r.directMs).toFixed(2);
  return [
    `pull-through (skopeo copy of a ${formatBytes(r.imageBytes)} image to a fresh oci: dir, median of ${r.rounds})`,
    `  direct from the upstream (baseline):   ${fmt(r.directMs)} ms`,
    `  derrick cold (long-running server):    ${fmt(r.coldMs)} ms  ratio ${r.coldRatio.toFixed(2)}x (goal <= 1.05x)  ${r.coldRatio <= 1.05 ? 'OK' : 'MISSED'}`,
    `  derrick warm, embedded blob server:    ${fmt(r.warmMs)} ms  ratio ${ratio(r.warmMs)}x`,
    r.warmNginxMs === undefined ? '  derrick warm, nginx blob server:       skipped (no nginx)' : `  derrick warm, nginx blob server:       ${fmt(r.warmNginxMs)} ms  ratio ${ratio(r.warmNginxMs)}x`,
    `  derrick warm, best of the two:                   ratio ${r.warmRatio.toFixed(2)}x (goal <= 0.9x)  ${r.warmRatio <= 0.9 ? 'OK' : 'MISSED'}`,
    `  docker-registry proxy, cold:           ${fmt(r.proxyMs)} ms  ratio ${r.proxyRatio.toFixed(2)}x`,
    `  docker-registry proxy, warm:           ${fmt(r.proxyWarmMs)} ms  ratio ${ratio(r.proxyWarmMs)}x`,
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const r = await benchPullThrough();
  console.log(formatPullThrough(r));
}
