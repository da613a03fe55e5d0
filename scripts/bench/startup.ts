// Start-up benchmark: `derrick --help` from spawn to exit, and `derrick serve` on the demo tree
// from spawn to its first correct answer, each next to bare `node -e ''` spawned in the same
// run (interleaved, so the machine's other load hits all three alike).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateImage } from '../gen-image.js';
import { derrickArgv, freePort, median } from './util.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../../cli.js');

export interface Timing {
  medianMs: number;
  maxMs: number;
}

export interface StartupBench {
  runs: number;
  node: Timing;
  help: Timing;
  serve: Timing;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function timeToExit(args: string[]): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, args, { stdio: 'ignore' });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`${args.join(' ')} exited ${code}`))));
  });
}

/** One GET; undefined while nothing listens yet. */
function tryGet(port: number, p: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode));
    });
    req.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(undefined) : reject(err)));
  });
}

/** Spawn -> the first 200 for the demo tag's manifest (a real answer from the index). */
async function timeToFirstAnswer(config: string): Promise<number> {
  const port = await freePort();
  const started = performance.now();
  const child = spawn(process.execPath, derrickArgv(CLI, 'serve', '-c', config, '--listen', `127.0.0.1:${port}`), { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    const deadline = started + 30_000;
    while (performance.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`derrick serve exited ${child.exitCode} before answering`);
      const status = await tryGet(port, '/v2/demo/hello/manifests/latest');
      if (status === 200) return performance.now() - started;
      if (status !== undefined) throw new Error(`derrick serve answered ${status} to the demo manifest`);
      await sleep(2);
    }
    throw new Error('derrick serve did not answer within 30 s');
  } finally {
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(killer);
  }
}

const timing = (xs: number[]): Timing => ({ medianMs: median(xs), maxMs: Math.max(...xs) });

export async function benchStartup(runs = 10): Promise<StartupBench> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-startup-'));
  try {
    // The demo tree (what `npm start` publishes): three tags, one of them an index.
    const images = path.join(dir, 'images', 'hello');
    await generateImage({ layoutDir: images, tag: 'latest', layers: [4 << 20, 64 << 10] });
    await generateImage({ layoutDir: images, tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'], layers: [1 << 20] });
    await generateImage({ layoutDir: images, tag: 'docker', format: 'docker', layers: [512 << 10] });
    const config = path.join(dir, 'derrick.yaml');
    await fs.writeFile(config, `root: ./var\nrepos:\n  - name: demo/hello\n    from: oci:${images}\nserve:\n  blobs: embedded\n`);
    const pub = spawnSync(process.execPath, derrickArgv(CLI, 'publish', '-c', config), { encoding: 'utf8' });
    if (pub.status !== 0) throw new Error(`publish failed: ${pub.stderr}`);

    const node: number[] = [];
    const help: number[] = [];
    const serve: number[] = [];
    // One warm-up of each (page cache, compile cache), then interleaved counted runs.
    for (let i = -1; i < runs; i++) {
      const n = await timeToExit(['-e', '']);
      const h = await timeToExit(derrickArgv(CLI, '--help'));
      const s = await timeToFirstAnswer(config);
      if (i < 0) continue;
      node.push(n);
      help.push(h);
      serve.push(s);
    }
    return { runs, node: timing(node), help: timing(help), serve: timing(serve) };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export function formatStartup(s: StartupBench): string {
  const ms = (t: Timing) => `${t.medianMs.toFixed(0)} ms (max ${t.maxMs.toFixed(0)})`;
  const goal = (t: Timing, limit: number) => `goal <= ${limit} ms  ${t.medianMs <= limit ? 'OK' : 'MISSED'}`;
  return [
    `startup (spawn to exit / to first answer, median of ${s.runs} interleaved runs)`,
    `  node -e '' (baseline):                ${ms(s.node)}`,
    `  derrick --help:                       ${ms(s.help)}  ${(s.help.medianMs / s.node.medianMs).toFixed(2)}x node  ${goal(s.help, 300)}`,
    `  derrick serve, demo tree, 1st answer: ${ms(s.serve)}  ${(s.serve.medianMs / s.node.medianMs).toFixed(2)}x node  ${goal(s.serve, 400)}`,
  ].join('\n');
}
