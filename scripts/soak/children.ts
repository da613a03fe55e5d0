// Child processes the soak starts (derrick serve, nginx, docker-registry, publish and gc runs):
// started without a shell, output kept in memory (bounded), stopped by pid, and SIGKILLed by pid
// if the soak itself exits without stopping them.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

export interface Child {
  pid: number;
  proc: ChildProcess;
  /** Last 64 KiB of stdout+stderr, for failure messages. */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive(): boolean;
  /** SIGTERM (or `signal`), SIGKILL after 3 s; resolves once exited. Idempotent. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Map<number, ChildProcess>();
process.on('exit', () => {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

const OUTPUT_LIMIT = 64 * 1024;
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function startChild(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Child {
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], shell: false });
  if (proc.pid === undefined) {
    proc.once('error', () => undefined);
    throw new Error(`cannot start ${cmd}`);
  }
  const pid = proc.pid;
  live.set(pid, proc);
  let out = '';
  const keep = (b: Buffer) => {
    out += b.toString('utf8');
    if (out.length > OUTPUT_LIMIT) out = out.slice(-OUTPUT_LIMIT);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('error', (e) => {
      done = true;
      out += `[spawn error] ${e.message}\n`;
      resolve({ code: null, signal: null });
    });
    proc.once('exit', (code, signal) => {
      done = true;
      live.delete(pid);
      resolve({ code, signal });
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    pid,
    proc,
    output: () => out,
    exited,
    alive: () => !done,
    stop(signal = 'SIGTERM') {
      stopping ??= (async () => {
        if (done) return;
        try {
          process.kill(pid, signal);
        } catch {
          return;
        }
        const gone = await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]);
        if (!gone) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
          await exited;
        }
      })();
      return stopping;
    },
  };
}

/** Runs a command to completion; never rejects on a non-zero exit. SIGKILL after timeoutMs. */
export async function runChild(cmd: string, args: string[], timeoutMs: number, env?: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const c = startChild(cmd, args, { env });
  const timer = setTimeout(() => void c.stop('SIGKILL'), timeoutMs);
  const { code } = await c.exited;
  clearTimeout(timer);
  return { code, output: c.output() };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `url` until any HTTP answer; throws if `child` dies first or after timeoutMs. */
export async function waitForHttp(url: string, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && !child.alive()) throw new Error(`process ${child.pid} exited before ${url} answered:\n${child.output()}`);
    try {
      const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${url}${child ? `:\n${child.output()}` : ''}`);
      await sleep(50);
    }
  }
}
