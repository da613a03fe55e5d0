// Redirector benchmark: blob GET -> redirect and manifest GET requests per second for a real
// `derrick serve` process, against a bare node:http server answering the same 302, and the
// swap-to-served reload latency measured by a client polling during real publishes.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { layout } from '../../shared/layout.js';
import { generateImage } from '../gen-image.js';
import { freePort, loadTest, median, percentile, startNode, stop } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');

export interface ServeBench {
  tool: string;
  blobRps: number;
  manifestRps: number;
  rawRps: number;
  blobRatio: number;
  errors: number;
  reloadP50Ms: number;
  reloadP99Ms: number;
  reloads: number;
}

function getStatus(agent: http.Agent, port: number, p: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
  });
}

export async function benchServe(seconds = 3, rounds = 5, reloads = 30): Promise<ServeBench> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-serve-'));
  const children = [];
  try {
    const images = path.join(dir, 'images');
    const img = await generateImage({ layoutDir: images, tag: 'latest', layers: [1 << 20] });
    const config = path.join(dir, 'derrick.yaml');
    await fs.writeFile(config, `root: ./var\nkeep: 1\ngrace: 1m\nrepos:\n  - name: bench/app\n    from: oci:${images}\n`);
    const pub = spawnSync(process.execPath, [CLI, 'publish', '-c', config], { encoding: 'utf8' });
    if (pub.status !== 0) throw new Error(pub.stderr);

    const port = await freePort();
    const serve = await startNode([CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`], /listening/);
    children.push(serve);
    const rawPort = await freePort();
    const raw = await startNode([path.join(HERE, 'raw-redirect.js'), String(rawPort)], /listening/);
    children.push(raw);

    const blobUrl = `http://127.0.0.1:${port}/v2/bench/app/blobs/${img.blobs.at(-1)}`;
    const manifestUrl = `http://127.0.0.1:${port}/v2/bench/app/manifests/latest`;
    // Warm up both servers (JIT) before measuring.
    await loadTest(blobUrl, 1);
    await loadTest(`http://127.0.0.1:${rawPort}/`, 1);
    // Interleaved rounds, medians: the machine's other load hits both sides alike.
    const rawRuns = [];
    const blobRuns = [];
    const manifestRuns = [];
    for (let i = 0; i < rounds; i++) {
      rawRuns.push(await loadTest(`http://127.0.0.1:${rawPort}/`, seconds));
      blobRuns.push(await loadTest(blobUrl, seconds));
      manifestRuns.push(await loadTest(manifestUrl, seconds));
    }
    const med = (runs: Array<{ rps: number; errors: number; tool: string }>) => ({
      rps: median(runs.map((r) => r.rps)),
      errors: runs.reduce((a, r) => a + r.errors, 0),
      tool: runs[0]!.tool,
    });
    const rawR = med(rawRuns);
    const blob = med(blobRuns);
    const manifest = med(manifestRuns);

    // Reload latency: poll the new tag while a real publish runs; measure from the app swap.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const appLink = layout(path.join(dir, 'var')).app('bench/app');
    const lat: number[] = [];
    for (let i = 0; i < reloads; i++) {
      await generateImage({ layoutDir: images, tag: `r${i}`, seed: `r${i}`, layers: [256] });
      const child = spawn(process.execPath, [CLI, 'publish', '-c', config], { stdio: 'ignore' });
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
    agent.destroy();
    return {
      tool: blob.tool,
      blobRps: blob.rps,
      manifestRps: manifest.rps,
      rawRps: rawR.rps,
      blobRatio: blob.rps / rawR.rps,
      errors: blob.errors + manifest.errors + rawR.errors,
      reloadP50Ms: percentile(lat, 50),
      reloadP99Ms: percentile(lat, 99),
      reloads,
    };
  } finally {
    for (const c of children) await stop(c);
    await fs.rm(dir, { recursive: true, force: true });
  }
}
