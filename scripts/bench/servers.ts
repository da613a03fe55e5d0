// The servers and tools the bench rows start: docker-registry (plain, or as a proxy), nginx around
// a server block, and commands run to completion. Every child is tracked and stopped by its pid
// (SIGTERM, then SIGKILL), also when the bench exits early; every server binds 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { NGINX_BIN, nginxMainConf } from '../nginx-main-conf.js';
import { freePort } from './util.js';

export const REGISTRY_BIN = process.env.DOCKER_REGISTRY_BIN ?? '/usr/bin/docker-registry';
export { NGINX_BIN };

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const hasExited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;

/** Children to kill if this process exits without stopping them. */
const live = new Set<ChildProcess>();
export const killAll = () => {
  for (const c of live) if (!hasExited(c)) c.kill('SIGKILL');
};
process.on('exit', killAll);

export function track(c: ChildProcess): ChildProcess {
  live.add(c);
  c.once('exit', () => live.delete(c));
  return c;
}

/** SIGTERM, SIGKILL after 3 s; resolves once exited. Safe to call twice. */
export async function stopTracked(c: ChildProcess | undefined): Promise<void> {
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

/** Stops every child still tracked (a row's finally). */
export async function stopAll(): Promise<void> {
  for (const c of [...live]) await stopTracked(c);
}

/** Runs a command to completion (async, so servers' pipes keep draining); rejects on failure or after `timeoutMs`. */
export function exec(cmd: string, args: string[], timeoutMs = 300_000, env?: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env }));
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

export async function waitForHttp(url: string, child: ChildProcess, timeoutMs = 20_000, ok: (status: number) => boolean = () => true): Promise<number> {
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

export interface RunningRegistry {
  url: string;
  host: string;
  child: ChildProcess;
  /** Access log lines so far (only with `accessLog`). */
  accessLog(): string[];
}

/** A docker-registry on 127.0.0.1:<free port> with storage under `dir`; `remoteurl` makes it a proxy. */
export async function startRegistry(dir: string, opts: { remoteurl?: string; accessLog?: boolean } = {}): Promise<RunningRegistry> {
  await fs.mkdir(path.join(dir, 'data'), { recursive: true });
  const port = await freePort();
  const lines = [
    'version: 0.1',
    'log:',
    '  level: error',
    '  accesslog:',
    `    disabled: ${!opts.accessLog}`,
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
  if (opts.remoteurl) lines.push('proxy:', `  remoteurl: ${opts.remoteurl}`);
  const config = path.join(dir, 'config.yml');
  await fs.writeFile(config, lines.join('\n') + '\n');
  const child = track(spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', opts.accessLog ? 'pipe' : 'ignore', 'ignore'] }));
  const log: string[] = [];
  let partial = '';
  child.stdout?.on('data', (b: Buffer) => {
    const parts = (partial + b.toString()).split('\n');
    partial = parts.pop()!;
    log.push(...parts);
  });
  const host = `127.0.0.1:${port}`;
  await waitForHttp(`http://${host}/v2/`, child);
  return { url: `http://${host}`, host, child, accessLog: () => [...log] };
}

/** nginx with `serverBlock` (which must listen on 127.0.0.1) in `dir`; waits for `probeUrl`. */
export async function startNginx(dir: string, serverBlock: string, probeUrl: string): Promise<ChildProcess> {
  await fs.mkdir(path.join(dir, 'tmp'), { recursive: true });
  const conf = path.join(dir, 'nginx.conf');
  await fs.writeFile(conf, nginxMainConf(dir, serverBlock, { accessLog: false }));
  const child = track(spawn(NGINX_BIN, ['-c', conf, '-p', dir + '/', '-e', path.join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'ignore'] }));
  await waitForHttp(probeUrl, child);
  return child;
}

/** The shaping proxy (shaping-proxy.ts) as its own process in front of `targetHost`; rates in MB/s. */
export async function startShaper(targetHost: string, shape: { rateMBs: number; perConnMBs?: number; latencyMs: number }): Promise<{ host: string; url: string; child: ChildProcess }> {
  const script = path.join(path.dirname(new URL(import.meta.url).pathname), 'shaping-proxy.js');
  const args = [script, '--target', targetHost, '--rate', String(shape.rateMBs), '--per-conn', String(shape.perConnMBs ?? 0), '--latency', String(shape.latencyMs)];
  const child = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] }));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /listening (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`shaping proxy exited ${code}: ${out}`)));
  });
  return { host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, child };
}
