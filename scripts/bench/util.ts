// Small helpers shared by the benchmarks.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { NODE_FLAGS } from '../../shared/node-flags.js';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Wall time of `fn`, in ms. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** node's arguments for running derrick `cli` as its installed bin runs it: with the shebang's flags (shared/node-flags.ts). */
export const derrickArgv = (cli: string, ...args: string[]): string[] => [...NODE_FLAGS, cli, ...args];

/** Starts a node script and resolves once it prints `pattern`. */
export function startNode(args: string[], pattern: RegExp, env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (b: Buffer) => {
      out += b.toString();
      if (pattern.test(out)) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    child.on('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}: ${out}`)));
  });
}

export function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3000).unref();
  });
}

export function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export interface LoadResult {
  rps: number;
  /** 99th percentile latency (wrk --latency); NaN with autocannon's fallback when not reported. */
  p99Ms: number;
  tool: string;
  errors: number;
}

/** wrk's latency with its unit (e.g. "812.00us", "1.23ms", "1.01s") in ms. */
function wrkMs(v: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v ?? '');
  if (!m) return NaN;
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2] as 'us' | 'ms' | 's' | 'm'];
}

/** Requests per second and p99 for GETs of `url` with keep-alive: wrk when installed, else autocannon. */
export async function loadTest(url: string, seconds: number, connections = 32, headers: Record<string, string> = {}): Promise<LoadResult> {
  if (hasCommand('wrk')) {
    const h = Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]);
    const r = spawnSync('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...h, url], { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? NaN);
    const p99Ms = wrkMs(/^\s+99%\s+(\S+)/m.exec(r.stdout)?.[1]);
    const errors = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(r.stdout)?.[1] ?? 0) + Number(/Socket errors:.*?(\d+)/.exec(r.stdout)?.[1] ?? 0);
    return { rps, p99Ms, tool: 'wrk', errors };
  }
  const autocannon = (await import('autocannon')).default;
  const result = await autocannon({ url, connections, duration: seconds, headers, followRedirects: false } as any);
  return { rps: result.requests.average, p99Ms: result.latency.p99, tool: 'autocannon', errors: result.errors };
}
