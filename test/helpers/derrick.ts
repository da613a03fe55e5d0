// Runs the built derrick CLI as a real child process.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.js';
import { run, startProcess, waitForHttp, type RunningProcess, type RunResult } from './proc.js';

export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli.js');

export function derrick(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [CLI, ...args], { timeoutMs: 120_000, ...opts });
}

export interface ServeProcess {
  url: string;
  host: string;
  proc: RunningProcess;
  stop(): Promise<void>;
}

/** `tls`: the config has serve.tls, so the server speaks HTTPS (readiness is its "listening" line). */
export async function startServe(configFile: string, env: Record<string, string | undefined> = {}, opts: { tls?: boolean } = {}): Promise<ServeProcess> {
  const port = await freePort();
  const proc = startProcess(process.execPath, [CLI, 'serve', '-c', configFile, '--listen', `127.0.0.1:${port}`], { env });
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  // 30 s: on the shared 2-core machine under a load of 20+, a start took more than 15 s.
  if (opts.tls) await proc.waitForOutput(`listening on ${url}`, 30_000);
  else await waitForHttp(`${url}/v2/`, 30_000, { proc });
  return { url, host: `127.0.0.1:${port}`, proc, stop: () => proc.stop() };
}
