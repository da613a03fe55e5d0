// Redirector rows: blob GET -> redirect req/s and p99 of a real `derrick serve` process against a
// bare node:http server answering the same 302 (goal >= 0.8x) and nginx `return 302` (the
// ceiling); manifest GET by tag, inline, against docker-registry serving the same image
// (goal >= 15x); and the swap-to-served reload latency seen by a client polling during real
// publishes. Load tests are interleaved rounds, medians: the machine's other load hits all alike.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { layout } from '../../shared/layout.js';
import { ACCEPT_ALL_MANIFESTS } from '../../shared/oci.js';
import { generateImage } from '../gen-image.js';
import { exec, NGINX_BIN, REGISTRY_BIN, startNginx, startRegistry, stopAll, track } from './servers.js';
import { row, skipped, missingTool, type BenchContext, type Row } from './table.js';
import { derrickArgv, freePort, hasCommand, loadTest, median, percentile, startNode, type LoadResult } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');
const LOCATION = '/published/master/bench/20260101T000000.000Z-000/blobs/sha256:' + '0'.repeat(64);

function getStatus(agent: http.Agent, port: number, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
  });
}

interface Target {
  name: string;
  url: string;
  headers?: Record<string, string>;
  runs: LoadResult[];
}

const summary = (t: Target) => ({
  rps: median(t.runs.map((r) => r.rps)),
  p99Ms: median(t.runs.map((r) => r.p99Ms)),
  errors: t.runs.reduce((a, r) => a + r.errors, 0),
  runs: t.runs,
});

/** Swap-to-served latency of `reloads` real publishes, polled over one keep-alive connection. */
async function reloadLatency(dir: string, images: string, config: string, port: number, reloads: number): Promise<number[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const appLink = layout(path.join(dir, 'var')).app('bench/app');
  const lat: number[] = [];
  try {
    for (let i = 0; i < reloads; i++) {
      await generateImage({ layoutDir: images, tag: `r${i}`, seed: `r${i}`, layers: [256] });
      const child = track(spawn(process.execPath, derrickArgv(CLI, 'publish', '-c', config), { stdio: 'ignore' }));
      const exited = new Promise((r) => child.on('exit', r));
      let servedAt = 0;
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        if ((await getStatus(agent, port, `/v2/bench/app/manifests/r${i}`)) === 200) {
          servedAt = Date.now();
          break;
        }
      }
      await exited;
      if (!servedAt) throw new Error(`tag r${i} was never served`);
      lat.push(servedAt - (await fs.lstat(appLink)).mtimeMs);
    }
  } finally {
    agent.destroy();
  }
  return lat;
}

export async function run(ctx: BenchContext): Promise<Row[]> {
  const seconds = ctx.quick ? 1 : 2;
  const rounds = ctx.quick ? 3 : 5;
  const reloads = ctx.quick ? 10 : 30;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-serve-'));
  try {
    const images = path.join(dir, 'images');
    const img = await generateImage({ layoutDir: images, tag: 'latest', layers: [1 << 20] });
    const config = path.join(dir, 'derrick.yaml');
    await fs.writeFile(config, `root: ./var\nkeep: 1\ngrace: 1m\nrepos:\n  - name: bench/app\n    from: oci:${images}\n`);
    const pub = spawnSync(process.execPath, derrickArgv(CLI, 'publish', '-c', config), { encoding: 'utf8' });
    if (pub.status !== 0) throw new Error(pub.stderr);

    const port = await freePort();
    track(await startNode(derrickArgv(CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`), /listening/));
    const rawPort = await freePort();
    track(await startNode([path.join(HERE, 'raw-redirect.js'), String(rawPort)], /listening/));
    const accept = { Accept: ACCEPT_ALL_MANIFESTS };
    const targets: Target[] = [
      { name: 'raw', url: `http://127.0.0.1:${rawPort}/`, runs: [] },
      { name: 'blob', url: `http://127.0.0.1:${port}/v2/bench/app/blobs/${img.blobs.at(-1)}`, runs: [] },
      { name: 'manifest', url: `http://127.0.0.1:${port}/v2/bench/app/manifests/latest`, headers: accept, runs: [] },
    ];
    const notes: Row[] = [];
    if (hasCommand(NGINX_BIN)) {
      const ngxPort = await freePort();
      const block = `server {\n  listen 127.0.0.1:${ngxPort};\n  location / { return 302 ${LOCATION}; }\n}\n`;
      await startNginx(path.join(dir, 'nginx'), block, `http://127.0.0.1:${ngxPort}/`);
      targets.push({ name: 'nginx', url: `http://127.0.0.1:${ngxPort}/`, runs: [] });
    } else notes.push(skipped('serve', 'blob GET -> 307 vs nginx return 302', `no ${NGINX_BIN}`));
    const regTool = missingTool([REGISTRY_BIN, 'skopeo']);
    if (!regTool) {
      const reg = await startRegistry(path.join(dir, 'registry'));
      await exec('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${images}:latest`, `docker://${reg.host}/bench/app:latest`]);
      targets.push({ name: 'registry', url: `${reg.url}/v2/bench/app/manifests/latest`, headers: accept, runs: [] });
    } else notes.push(skipped('serve', 'manifest GET by tag vs docker-registry', `no ${regTool}`));

    ctx.log(`serve: ${targets.map((t) => t.name).join(', ')}, ${rounds} interleaved rounds of ${seconds} s`);
    for (const t of targets) await loadTest(t.url, 1, 32, t.headers); // warm-up (JIT, page cache)
    for (let i = 0; i < rounds; i++) for (const t of targets) t.runs.push(await loadTest(t.url, seconds, 32, t.headers));
    const s = Object.fromEntries(targets.map((t) => [t.name, summary(t)]));
    const tool = targets[0]!.runs[0]!.tool;
    const errors = Object.values(s).reduce((a, x) => a + x.errors, 0);

    ctx.log(`serve: reload latency over ${reloads} publishes`);
    const lat = await reloadLatency(dir, images, config, port, reloads);

    const rows: Row[] = [
      row({ group: 'serve', what: 'blob GET -> 307, req/s', figure: s.blob!.rps, unit: 'req/s', baseline: { what: 'raw node:http 302', figure: s.raw!.rps }, goal: { op: '>=', value: 0.8 }, raw: { tool, connections: 32, seconds, rounds, ...s } }),
      row({ group: 'serve', what: 'blob GET -> 307, p99', figure: s.blob!.p99Ms, unit: 'ms', baseline: { what: 'raw node:http 302', figure: s.raw!.p99Ms } }),
    ];
    if (s.nginx) {
      rows.push(
        row({ group: 'serve', what: 'blob GET -> 307 vs nginx (ceiling), req/s', figure: s.blob!.rps, unit: 'req/s', baseline: { what: 'nginx return 302', figure: s.nginx.rps } }),
        row({ group: 'serve', what: 'blob GET -> 307 vs nginx (ceiling), p99', figure: s.blob!.p99Ms, unit: 'ms', baseline: { what: 'nginx return 302', figure: s.nginx.p99Ms } }),
      );
    }
    if (s.registry) {
      rows.push(row({ group: 'serve', what: 'manifest GET by tag (inline), req/s', figure: s.manifest!.rps, unit: 'req/s', baseline: { what: 'docker-registry', figure: s.registry.rps }, goal: { op: '>=', value: 15 } }));
    } else rows.push(row({ group: 'serve', what: 'manifest GET by tag (inline), req/s', figure: s.manifest!.rps, unit: 'req/s', baseline: { what: 'raw node:http 302', figure: s.raw!.rps } }));
    rows.push(
      row({ group: 'serve', what: `reload swap -> served, p50 (${reloads} publishes)`, figure: percentile(lat, 50), unit: 'ms', raw: { latenciesMs: lat } }),
      row({ group: 'serve', what: `reload swap -> served, p99 (${reloads} publishes)`, figure: percentile(lat, 99), unit: 'ms', goal: { op: '<=', value: 50 } }),
      row({ group: 'serve', what: `non-2xx/3xx and socket errors (${tool})`, figure: errors, unit: '', goal: { op: '<=', value: 0 } }),
      ...notes,
    );
    return rows;
  } finally {
    await stopAll();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
