// A real nginx on 127.0.0.1:<free port>, with every file it writes inside a temp dir.
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, waitForPort } from './ports.js';
import { startProcess, type RunningProcess } from './proc.js';
import { tmpDir } from './tmp.js';
import { NGINX_BIN, nginxMainConf } from '../../scripts/nginx-main-conf.js';

export { NGINX_BIN };

export const PORT_PLACEHOLDER = '__PORT__';

export interface Nginx {
  port: number;
  /** http://127.0.0.1:PORT */
  url: string;
  pid: number;
  /** Temp dir with nginx.conf, logs, pid file and temp paths. */
  dir: string;
  confFile: string;
  proc: RunningProcess;
  errorLog(): string;
  accessLog(): string;
  stop(): Promise<void>;
}

export interface NginxOptions {
  bin?: string;
  /** Extra directives for the http {} block, before the server block. */
  httpExtra?: string;
}

/**
 * Starts `nginx -c <conf> -p <dir>` with `serverBlock` (which must contain `__PORT__`, replaced by
 * a free port) inside `http {}`; resolves once the port accepts connections.
 */
export async function startNginx(serverBlock: string, opts: NginxOptions = {}): Promise<Nginx> {
  if (!serverBlock.includes(PORT_PLACEHOLDER)) throw new Error(`serverBlock must contain ${PORT_PLACEHOLDER}`);
  const bin = opts.bin ?? NGINX_BIN;
  const tmp = await tmpDir('derrick-nginx');
  const dir = tmp.dir;
  await fs.mkdir(path.join(dir, 'tmp'), { recursive: true });
  const confFile = path.join(dir, 'nginx.conf');
  const errorFile = path.join(dir, 'error.log');
  const read = (f: string) => () => {
    try {
      // Synchronous so callers can use it in expect() directly.
      return readFileSync(f, 'utf8');
    } catch {
      return '';
    }
  };

  let proc: RunningProcess | undefined;
  let port = 0;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3 && !proc; attempt++) {
    port = await freePort();
    await fs.writeFile(confFile, nginxMainConf(dir, serverBlock.replaceAll(PORT_PLACEHOLDER, String(port)), { bin, httpExtra: opts.httpExtra }));
    // -e: the error log used before the config is read (else the built-in /var/log/nginx/error.log).
    const p = startProcess(bin, ['-c', confFile, '-p', dir + '/', '-e', errorFile], { cwd: dir });
    try {
      await waitForPort(port, 10_000, '127.0.0.1', () => p.alive());
      proc = p;
    } catch (err) {
      lastError = new Error(`${String(err)}\n${p.output()}\n${read(errorFile)()}`);
      await p.stop();
    }
  }
  if (!proc) {
    await tmp.cleanup();
    throw new Error(`nginx did not start: ${String(lastError)}`);
  }
  const running = proc;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    pid: running.pid,
    dir,
    confFile,
    proc: running,
    errorLog: read(errorFile),
    accessLog: read(path.join(dir, 'access.log')),
    async stop() {
      await running.stop();
      await tmp.cleanup();
    },
  };
}
