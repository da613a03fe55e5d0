// Runs rsync and reports what it did; every failure is a PushError naming the target and the step.
import { spawn } from 'node:child_process';

export class PushError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PushError';
  }
}

export interface RsyncResult {
  stdout: string;
  /** "Total bytes sent" of --stats, when it was asked for. */
  bytesSent: number;
}

export interface RsyncOptions {
  /** Exit codes that count as success (besides 0). */
  okCodes?: number[];
  /** What this step is, for the error message. */
  what: string;
}

/** The last lines rsync wrote to stderr: enough to say why, short enough for a summary line. */
function why(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('rsync error:'));
  const pick = lines.length ? lines.slice(-2) : stderr.trim().split('\n').slice(-1);
  return pick.join('; ').slice(0, 400);
}

export function rsync(args: string[], opts: RsyncOptions): Promise<RsyncResult & { code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn('rsync', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new PushError(`${opts.what}: cannot run rsync (${(e as NodeJS.ErrnoException).code ?? e.message})`)));
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      const c = code ?? 128;
      if (c !== 0 && !(opts.okCodes ?? []).includes(c)) {
        return reject(new PushError(`${opts.what}: rsync ${signal ? `killed by ${signal}` : `exited ${c}`}: ${why(stderr)}`));
      }
      const m = /Total bytes sent:\s*([\d,.']+)/.exec(stdout);
      resolve({ code: c, stdout, bytesSent: m ? Number(m[1]!.replace(/\D/g, '')) : 0 });
    });
  });
}
