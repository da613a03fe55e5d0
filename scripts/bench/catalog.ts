// Catalog-scale bench (issue 10): a real `derrick serve` process over a cached 10,000 x 50 tree.
//   start -> first answer, and RSS then; RSS after 2,000 GETs over random repos; p99 of the first
//   request to a repo not yet loaded, pooled over 3 serve processes of 2,000 GETs; reload p99 (a new master swapped web then app, polled until
//   served); crane-data with 10,000 crane v4 files: start and RSS, first ever (no name cache) and
//   as a restart (the name cache the first start wrote is present, as in production).
// Alone: node dist/scripts/bench/catalog.js [--repos N] [--tags T] [--cli path/to/cli.js] [--crane-only]
// (--cli measures another build, e.g. the commit before, as the baseline).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { layout } from '../../shared/layout.js';
import { craneTree, derrickTree, repoName } from './catalog-cache.js';
import { swapRepo, writeSyntheticRepo } from './catalog-tree.js';
import { derrickArgv, freePort, percentile, startNode, stop } from './util.js';

const DEFAULT_CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../cli.js');

export interface CatalogBench {
  repos: number;
  tags: number;
  startMs: number;
  startCpuMs: number;
  startRssMb: number;
  afterGetsRssMb: number;
  gets: number;
  /** serve's CPU for the GETs, per request (median of the passes): what latency is made of, whatever else the machine runs. */
  getsCpuUs: number;
  coldP50Ms: number;
  coldP99Ms: number;
  coldCount: number;
  /** serve processes the GETs ran in (gets each; cold and warm figures pool them). */
  passes: number;
  warmP50Ms: number;
  /** The same client and GETs (as many passes) against a bare node:http server: what the machine alone puts at the p99. */
  floorP99Ms: number;
  reloadP50Ms: number;
  reloadP99Ms: number;
  reloads: number;
  /** crane-data restarts (name cache present): the median of CRANE_RESTARTS, and its CPU and RSS. */
  craneStartMs: number;
  craneCpuMs: number;
  craneRssMb: number;
  craneRestartsMs: number[];
  /** crane-data's first start ever: no name cache in the root yet. */
  craneFirstStartMs: number;
  craneFirstCpuMs: number;
  craneFirstRssMb: number;
}

const CRANE_RESTARTS = 3;

/** CPU (user + system) the process used so far, in ms: what start costs, whatever else the machine runs. */
const cpuMs = async (pid: number) => {
  const f = (await fs.readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
};
const rssMb = async (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(await fs.readFile(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

function get(agent: http.Agent | false, port: number, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent, headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
  });
}

/** Spawns serve and polls `probe` until it answers `want`: ms from spawn to that answer. */
async function startServe(cli: string, config: string, probe: string, want: number): Promise<{ child: ChildProcess; port: number; ms: number }> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, derrickArgv(cli, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`), { stdio: 'ignore' });
  const deadline = Date.now() + 600_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}`);
    const status = await get(false, port, probe).catch(() => 0);
    if (status === want) return { child, port, ms: performance.now() - t0 };
    if (Date.now() > deadline) throw new Error(`serve never answered ${probe}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A small deterministic PRNG, so runs (and builds) see the same request sequence. */
function rng(seed: number) {
  return () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000);
}

/** Serve processes whose cold requests are pooled: one process's tail says as much of the machine as of serve. */
const PASSES = 3;

/** `gets` GETs of a random repo's random tag: each a cold repo's first request or a warm one. */
async function getPass(
  agent: http.Agent, s: { child: ChildProcess; port: number }, first: number, gets: number, pick: () => number, tag: () => number,
): Promise<{ cold: number[]; warm: number[]; cpuUs: number }> {
  const seen = new Set<number>([first]);
  const cpuBefore = await cpuMs(s.child.pid!);
  const cold: number[] = [];
  const warm: number[] = [];
  for (let i = 0; i < gets; i++) {
    const r = pick();
    const t0 = performance.now();
    const status = await get(agent, s.port, `/v2/${repoName(r)}/manifests/t${tag()}`);
    const ms = performance.now() - t0;
    if (status !== 200) throw new Error(`GET ${repoName(r)}: ${status}`);
    (seen.has(r) ? warm : cold).push(ms);
    seen.add(r);
  }
  return { cold, warm, cpuUs: ((await cpuMs(s.child.pid!)) - cpuBefore) * 1000 / gets };
}

/** Reload: a new master for a served repo, swapped the way the publisher swaps (web, then app), polled until served. */
async function reloadRows(agent: http.Agent, port: number, treeDir: string, reloads: number, tags: number, pick: () => number) {
  const root = path.join(treeDir, 'var');
  const lat: number[] = [];
  for (let i = 0; i < reloads; i++) {
    const name = repoName(pick());
    await get(agent, port, `/v2/${name}/manifests/t0`);
    const tag = `t${tags + 1}`;
    const seed = `reload-${Date.now()}-${i}`;
    const next = await writeSyntheticRepo(root, name, { tags: tags + 2, seed, swap: false });
    await swapRepo(root, name, next.master);
    const swappedAt = (await fs.lstat(layout(root).app(name))).mtimeMs;
    const deadline = Date.now() + 30_000;
    for (;;) {
      // A new tag name would not prove the swap (t51 may not exist before): check the digest.
      const digest = await new Promise<string>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: `/v2/${name}/manifests/${tag}`, agent, headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(String(res.headers['docker-content-digest'])));
        }).on('error', reject);
      });
      if (digest === next.tags[tag]) break;
      if (Date.now() > deadline) throw new Error(`${name}:${tag} was never served`);
    }
    lat.push(Date.now() - swappedAt);
  }
  return { reloadP50Ms: percentile(lat, 50), reloadP99Ms: percentile(lat, 99) };
}

export async function benchCatalog(o: { repos?: number; tags?: number; cli?: string; gets?: number; reloads?: number } = {}): Promise<CatalogBench> {
  const repos = o.repos ?? 10_000;
  const tags = o.tags ?? 50;
  const cli = o.cli ?? DEFAULT_CLI;
  const gets = o.gets ?? 2000;
  const reloads = o.reloads ?? 30;
  const treeDir = await derrickTree(repos, tags);
  const craneDir = await craneTree(repos, tags);
  const config = path.join(treeDir, 'derrick.yaml');
  await fs.writeFile(config, 'root: ./var\ngrace: 10m\n');
  const rand = rng(42);
  const pick = () => Math.floor(rand() * repos);

  const out: Partial<CatalogBench> = { repos, tags, gets, reloads, passes: PASSES };
  const cold: number[] = [];
  const warm: number[] = [];
  const cpuUs: number[] = [];
  for (let pass = 0; pass < PASSES; pass++) {
    const first = pick();
    const s = await startServe(cli, config, `/v2/${repoName(first)}/manifests/t0`, 200);
    try {
      if (pass === 0) {
        out.startMs = s.ms;
        out.startCpuMs = await cpuMs(s.child.pid!);
        out.startRssMb = await rssMb(s.child.pid!);
      }
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const p = await getPass(agent, s, first, gets, pick, () => Math.floor(rand() * tags));
        cold.push(...p.cold);
        warm.push(...p.warm);
        cpuUs.push(p.cpuUs);
        if (pass === 0) {
          out.afterGetsRssMb = await rssMb(s.child.pid!);
          Object.assign(out, await reloadRows(agent, s.port, treeDir, reloads, tags, pick));
        }
      } finally {
        agent.destroy();
      }
    } finally {
      await stop(s.child);
    }
  }
  out.coldP50Ms = percentile(cold, 50);
  out.coldP99Ms = percentile(cold, 99);
  out.coldCount = cold.length;
  out.warmP50Ms = warm.length ? percentile(warm, 50) : NaN;
  out.getsCpuUs = percentile(cpuUs, 50);

  out.floorP99Ms = await clientFloorP99(gets);
  Object.assign(out, await benchCrane(cli, path.join(craneDir, 'data'), () => repoName(pick())));
  return out as CatalogBench;
}

/**
 * The measuring floor: the bench's client, one keep-alive connection, `gets` GETs against
 * raw-redirect.js (a bare node:http server). Scheduling on the machine and the client's own GC
 * land on the p99 of any server; this says how much of the cold-repo p99 they are.
 */
async function clientFloorP99(gets: number): Promise<number> {
  const ms: number[] = [];
  for (let pass = 0; pass < PASSES; pass++) {
    const port = await freePort();
    const raw = await startNode([path.join(path.dirname(fileURLToPath(import.meta.url)), 'raw-redirect.js'), String(port)], /listening/);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < gets; i++) {
        const t0 = performance.now();
        if ((await get(agent, port, `/v2/${repoName(i)}/manifests/t0`)) !== 302) throw new Error('raw-redirect did not answer 302');
        ms.push(performance.now() - t0);
      }
    } finally {
      agent.destroy();
      await stop(raw);
    }
  }
  return percentile(ms, 99);
}

type CraneRows = Pick<CatalogBench, 'craneStartMs' | 'craneCpuMs' | 'craneRssMb' | 'craneRestartsMs' | 'craneFirstStartMs' | 'craneFirstCpuMs' | 'craneFirstRssMb'>;

/**
 * serve with `crane-data: dataDir` in a root of its own: the first start ever, then restarts with
 * the name cache that first start wrote (the restart is what production sees after the first).
 */
export async function benchCrane(cli: string, dataDir: string, name: () => string): Promise<CraneRows> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-crane-'));
  const config = path.join(root, 'derrick.yaml');
  await fs.writeFile(config, `root: ./var\nserve:\n  crane-data: ${JSON.stringify(dataDir)}\n`);
  const start = async (first: boolean) => {
    const c = await startServe(cli, config, `/v2/${name()}/manifests/t0`, 307);
    try {
      const r = { ms: c.ms, cpu: await cpuMs(c.child.pid!), rss: await rssMb(c.child.pid!) };
      // The name cache is written once the scan is over (_catalog waits for the scan). A build
      // without the cache leaves none: then the wait ends after 2 s.
      if (first) {
        await get(false, c.port, '/v2/_catalog');
        const cacheDir = layout(path.join(root, 'var')).craneNamesDir;
        for (let i = 0; i < 100 && !(await fs.readdir(cacheDir).catch(() => [])).some((n) => n.endsWith('.json')); i++) await new Promise((w) => setTimeout(w, 20));
      }
      return r;
    } finally {
      await stop(c.child);
    }
  };
  try {
    const f = await start(true);
    const restarts = [];
    for (let i = 0; i < CRANE_RESTARTS; i++) restarts.push(await start(false));
    const mid = [...restarts].sort((a, b) => a.ms - b.ms)[Math.floor(CRANE_RESTARTS / 2)]!;
    return {
      craneFirstStartMs: f.ms, craneFirstCpuMs: f.cpu, craneFirstRssMb: f.rss,
      craneStartMs: mid.ms, craneCpuMs: mid.cpu, craneRssMb: mid.rss, craneRestartsMs: restarts.map((r) => r.ms),
    };
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

const fmt = (n: number) => n.toFixed(n >= 100 ? 0 : 1);
const ok = (good: boolean) => (good ? 'OK' : 'MISSED');

export function formatCatalog(b: CatalogBench, label = ''): string {
  return [
    `catalog (${b.repos} repos x ${b.tags} tags, one derrick serve process${label})`,
    `  start -> first answer:            ${fmt(b.startMs)} ms (goal <= 500)  ${ok(b.startMs <= 500)}; serve's CPU until then ${fmt(b.startCpuMs)} ms`,
    `  RSS at first answer:              ${fmt(b.startRssMb)} MB (goal <= 90)  ${ok(b.startRssMb <= 90)}`,
    `  RSS after ${b.gets} GETs (random repos): ${fmt(b.afterGetsRssMb)} MB (goal <= 120)  ${ok(b.afterGetsRssMb <= 120)}`,
    `  first request to a cold repo:     p50 ${fmt(b.coldP50Ms)} ms, p99 ${fmt(b.coldP99Ms)} ms over ${b.coldCount} in ${b.passes} processes (goal <= 5)  ${ok(b.coldP99Ms <= 5)}; a warm one p50 ${fmt(b.warmP50Ms)} ms; the same client against bare node:http p99 ${fmt(b.floorP99Ms)} ms; serve's CPU ${fmt(b.getsCpuUs)} us per GET`,
    `  reload, app swap -> served:       p50 ${fmt(b.reloadP50Ms)} ms, p99 ${fmt(b.reloadP99Ms)} ms over ${b.reloads} (goal p99 <= 50)  ${ok(b.reloadP99Ms <= 50)}`,
    `  crane-data, ${b.repos} v4 files:      restart ${fmt(b.craneStartMs)} ms (median of ${b.craneRestartsMs.length}; goal <= 500)  ${ok(b.craneStartMs <= 500)} (CPU ${fmt(b.craneCpuMs)} ms), RSS ${fmt(b.craneRssMb)} MB (goal <= 90)  ${ok(b.craneRssMb <= 90)}`,
    `                                    first start (no name cache) ${fmt(b.craneFirstStartMs)} ms (CPU ${fmt(b.craneFirstCpuMs)} ms), RSS ${fmt(b.craneFirstRssMb)} MB`,
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (k: string) => {
    const i = process.argv.indexOf(k);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const cli = arg('--cli');
  if (process.argv.includes('--crane-only')) {
    // The crane-data rows alone (a few seconds): compare builds with --cli, alternating runs.
    const repos = Number(arg('--repos') ?? 10_000);
    const rand = rng(Date.now() & 0xffff);
    const c = await benchCrane(cli ?? DEFAULT_CLI, path.join(await craneTree(repos, Number(arg('--tags') ?? 50)), 'data'), () => repoName(Math.floor(rand() * repos)));
    console.log(JSON.stringify({ cli: cli ?? DEFAULT_CLI, ...c }));
    process.exit(0);
  }
  const b = await benchCatalog({ repos: arg('--repos') ? Number(arg('--repos')) : undefined, tags: arg('--tags') ? Number(arg('--tags')) : undefined, cli });
  console.log(formatCatalog(b, cli ? `, ${cli}` : ''));
  if (arg('--json')) await fs.writeFile(arg('--json')!, JSON.stringify(b, null, 1));
}
