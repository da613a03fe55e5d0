// A real nginx on 127.0.0.1:<free port>, with every file it writes inside a temp dir.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, waitForPort } from './ports.js';
import { startProcess, type RunningProcess } from './proc.js';
import { tmpDir } from './tmp.js';

export const NGINX_BIN = '/usr/sbin/nginx';
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

let tempPathDirectives: string[] | undefined;
/** *_temp_path directives for the modules this nginx was built with (an unknown one is a config error). */
function tempPaths(bin: string): string[] {
  if (tempPathDirectives) return tempPathDirectives;
  let configure = '';
  try {
    configure = execFileSync(bin, ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    configure = String((err as { stderr?: string }).stderr ?? '');
  }
  const dirs = ['client_body_temp_path'];
  for (const m of ['proxy', 'fastcgi', 'uwsgi', 'scgi']) {
    if (!configure.includes(`--without-http_${m}_module`)) dirs.push(`${m}_temp_path`);
  }
  tempPathDirectives = dirs;
  return dirs;
}

function nginxConf(dir: string, serverBlock: string, bin: string, httpExtra = ''): string {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const temp = tempPaths(bin).map((d) => `  ${d} ${path.join(dir, 'tmp', d.replace('_temp_path', ''))};`);
  return [
    'daemon off;',
    'master_process on;',
    'worker_processes 1;',
    ...(isRoot ? ['user root;'] : []),
    `pid ${path.join(dir, 'nginx.pid')};`,
    `error_log ${path.join(dir, 'error.log')} info;`,
    'events {',
    '  worker_connections 256;',
    '}',
    'http {',
    '  include /etc/nginx/mime.types;',
    '  default_type application/octet-stream;',
    `  access_log ${path.join(dir, 'access.log')};`,
    ...temp,
    httpExtra,
    serverBlock,
    '}',
    '',
  ].join('\n');
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
    await fs.writeFile(confFile, nginxConf(dir, serverBlock.replaceAll(PORT_PLACEHOLDER, String(port)), bin, opts.httpExtra));
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
