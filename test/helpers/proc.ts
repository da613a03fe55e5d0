// Real child processes for e2e tests: started without a shell, output captured, stopped by pid.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface StartOptions {
  /** Merged over process.env; a key set to undefined removes it. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Also append stdout+stderr to this file. */
  logFile?: string;
}

export interface RunningProcess {
  pid: number;
  /** SIGTERM, then SIGKILL after 3 s; resolves once the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** Captured stdout and stderr, interleaved in arrival order. */
  output(): string;
  stdout(): string;
  stderr(): string;
  /** True until the process has exited. */
  alive(): boolean;
  /** Exit code (or null when killed by a signal) once exited, else undefined. */
  exitCode(): number | null | undefined;
  /** Resolves when the process exits. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when `pattern` appears in output(); rejects on timeout or exit. */
  waitForOutput(pattern: RegExp | string, timeoutMs?: number): Promise<void>;
}

/** Children still running, killed by pid if this test process exits without stopping them. */
const live = new Map<number, ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of live.keys()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

function mergeEnv(env?: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(env ?? {})) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function startProcess(cmd: string, args: string[], opts: StartOptions = {}): RunningProcess {
  installExitHook();
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: mergeEnv(opts.env),
    stdio: ['ignore', 'pipe', 'pipe'],
    shell: false,
  });
  if (child.pid === undefined) {
    // The spawn failed (e.g. ENOENT); 'error' follows on the next tick. Never hand out a bogus
    // pid: process.kill(-1 or 0) would signal far more than this process.
    child.once('error', () => undefined);
    throw new Error(`cannot start ${cmd}: ${which(cmd) ? 'spawn failed' : 'not found'}`);
  }
  const pid = child.pid;
  const chunks: string[] = [];
  const out: string[] = [];
  const err: string[] = [];
  const log = opts.logFile ? fs.createWriteStream(opts.logFile, { flags: 'a' }) : undefined;
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (s: string) => {
    chunks.push(s);
    out.push(s);
    log?.write(s);
  });
  child.stderr!.on('data', (s: string) => {
    chunks.push(s);
    err.push(s);
    log?.write(s);
  });

  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => {
      // ENOENT etc.: no process ever ran.
      spawnError = e;
      exitInfo ??= { code: null, signal: null };
      chunks.push(`[spawn error] ${e.message}\n`);
      resolve(exitInfo);
    });
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  live.set(pid, child);
  void exited.then(() => live.delete(pid));

  let stopping: Promise<void> | undefined;
  const output = () => chunks.join('');

  const proc: RunningProcess = {
    pid,
    output,
    stdout: () => out.join(''),
    stderr: () => err.join(''),
    alive: () => exitInfo === undefined && spawnError === undefined,
    exitCode: () => exitInfo?.code,
    exited,
    stop() {
      stopping ??= (async () => {
        if (exitInfo === undefined) {
          try {
            process.kill(pid, 'SIGTERM');
          } catch {
            // already gone
          }
          const done = await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]);
          if (!done && exitInfo === undefined) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // already gone
            }
            await exited;
          }
        }
        // Let the pipes drain, but don't hang on grandchildren that inherited them.
        await Promise.race([closed, sleep(1000)]);
        if (log) await new Promise<void>((r) => log.end(() => r()));
      })();
      return stopping;
    },
    async waitForOutput(pattern, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      const test = (s: string) => (typeof pattern === 'string' ? s.includes(pattern) : pattern.test(s));
      while (!test(output())) {
        if (!proc.alive()) throw new Error(`${cmd} exited (${JSON.stringify(exitInfo)}) before printing ${String(pattern)}:\n${output()}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${String(pattern)} from ${cmd}:\n${output()}`);
        await sleep(25);
      }
    },
  };
  return proc;
}

export interface WaitForHttpOptions {
  /** Fail fast if this process dies while we wait. */
  proc?: RunningProcess;
  headers?: Record<string, string>;
  /** Which statuses count as "up"; default: any HTTP response. */
  ok?: (status: number) => boolean;
}

/** Polls `url` with GET until it answers; returns the status. */
export async function waitForHttp(url: string, timeoutMs = 10_000, opts: WaitForHttpOptions = {}): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no attempt';
  while (Date.now() < deadline) {
    if (opts.proc && !opts.proc.alive()) {
      throw new Error(`process ${opts.proc.pid} exited before ${url} answered:\n${opts.proc.output()}`);
    }
    try {
      const res = await fetch(url, { headers: opts.headers, signal: AbortSignal.timeout(2000), redirect: 'manual' });
      await res.arrayBuffer().catch(() => undefined);
      if (!opts.ok || opts.ok(res.status)) return res.status;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = String((err as Error & { cause?: unknown }).cause ?? err);
    }
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${url} (${last})${opts.proc ? `\n${opts.proc.output()}` : ''}`);
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to stdin, which is then closed. */
  input?: string | Uint8Array;
  /** SIGKILL after this long (default 120 s). */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit code; null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion without a shell. Never rejects on a non-zero exit. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: mergeEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
      shell: false,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }, opts.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => undefined);
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Absolute path of an executable on PATH (also /usr/sbin and /sbin), or undefined. */
export function which(name: string): string | undefined {
  const isExec = (p: string) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (name.includes('/')) return isExec(name) ? path.resolve(name) : undefined;
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const extra of ['/usr/local/sbin', '/usr/sbin', '/sbin']) if (!dirs.includes(extra)) dirs.push(extra);
  for (const d of dirs) {
    const p = path.join(d, name);
    if (isExec(p)) return p;
  }
  return undefined;
}

const warned = new Set<string>();

/**
 * True if `name` is installed. If it is missing: in CI (CI=true) throws, so a missing tool fails
 * the run; elsewhere prints a `[skip]` warning and returns false, for `describe.skipIf(!has)`.
 */
export function requireTool(name: string, why = 'tests that need it are skipped'): boolean {
  if (which(name)) return true;
  if (process.env.CI === 'true') {
    throw new Error(`required tool "${name}" is not installed (CI=true, so it may not be skipped)`);
  }
  if (!warned.has(name)) {
    warned.add(name);
    console.warn(`[skip] ${name} not installed: ${why}`);
  }
  return false;
}
