// A complete nginx.conf around one server block, with every path nginx writes (pid, logs, temp
// dirs) inside `dir`, so an unprivileged nginx can run beside the project: used by the e2e tests'
// nginx helper and by the benchmarks.
import { execFileSync } from 'node:child_process';
import path from 'node:path';

export const NGINX_BIN = '/usr/sbin/nginx';

const tempPathCache = new Map<string, string[]>();

/** *_temp_path directives for the modules this nginx was built with (an unknown one is a config error). */
function tempPaths(bin: string): string[] {
  const cached = tempPathCache.get(bin);
  if (cached) return cached;
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
  tempPathCache.set(bin, dirs);
  return dirs;
}

/** nginx.conf for `nginx -c <dir>/nginx.conf -p <dir>/`; `dir/tmp` must exist. */
export function nginxMainConf(dir: string, serverBlock: string, opts: { bin?: string; httpExtra?: string; accessLog?: boolean } = {}): string {
  const bin = opts.bin ?? NGINX_BIN;
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
    opts.accessLog === false ? '  access_log off;' : `  access_log ${path.join(dir, 'access.log')};`,
    ...temp,
    opts.httpExtra ?? '',
    serverBlock,
    '}',
    '',
  ].join('\n');
}
