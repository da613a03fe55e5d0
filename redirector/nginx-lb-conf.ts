// `derrick nginx-conf --upstream-servers a:5000,b:5000`: an nginx load balancer in front of
// `derrick serve` replicas (one per edge, each on its own copy of the published tree; they share
// nothing, so any replica can answer any request).
//
// Health: nginx open source has no active health checks (`health_check` is nginx Plus only).
// It checks passively: a replica that fails `max_fails` requests (connection error, timeout, or
// the statuses in proxy_next_upstream) is left out for `fail_timeout`, and the request is retried
// on the next one. For an active check of /readyz use HAProxy (`option httpchk GET /readyz`, see
// docs/topology.md).
//
// A blob redirect names a master (master/<key>/<ts>/blobs/...). While a push is on its way, a
// replica that got the new publish can hand out a URL that another replica cannot serve yet:
// a 404 under /published/ is retried on the next replica (GET and HEAD only, idempotent).
export interface LbConfOptions {
  /** nginx `listen` argument (default 80). */
  listen?: string;
  serverName?: string;
  /** The replicas speak HTTPS (serve.tls). */
  upstreamTls?: boolean;
}

const HOST_PORT = /^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$/;

export function parseUpstreamServers(list: string): string[] {
  const servers = list.split(',').map((s) => s.trim()).filter(Boolean);
  if (servers.length === 0) throw new Error('--upstream-servers needs at least one HOST:PORT');
  const bad = servers.filter((s) => !HOST_PORT.test(s));
  if (bad.length) throw new Error(`--upstream-servers: "${bad.join('", "')}" is not HOST:PORT`);
  return servers;
}

function proxyLines(scheme: string, nextUpstream: string): string[] {
  return [
    `proxy_pass ${scheme}://derrick_replicas;`,
    'proxy_http_version 1.1;',
    'proxy_set_header Connection "";',
    // Replicas build redirects from Host (or serve.public-url): clients keep talking to the balancer.
    'proxy_set_header Host $http_host;',
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    'proxy_set_header X-Forwarded-Proto $scheme;',
    'proxy_set_header X-Forwarded-Host $http_host;',
    'proxy_buffering off;',
    'proxy_request_buffering off;',
    `proxy_next_upstream ${nextUpstream};`,
    'proxy_next_upstream_tries 3;',
    'proxy_connect_timeout 2s;',
  ];
}

export function nginxLbConf(servers: string[], opts: LbConfOptions = {}): string {
  const scheme = opts.upstreamTls ? 'https' : 'http';
  const out: string[] = [
    '# derrick replicas behind nginx. Passive health checks only: nginx OSS has no active',
    '# health_check; for an active GET /readyz check use HAProxy (option httpchk), see docs/topology.md.',
    'upstream derrick_replicas {',
    ...servers.map((s) => `    server ${s} max_fails=2 fail_timeout=10s;`),
    '    keepalive 32;',
    '}',
    'server {',
    `    listen ${opts.listen ?? '80'};`,
    `    server_name ${opts.serverName ?? '_'};`,
    '    client_max_body_size 0;',
    '    location / {',
    ...proxyLines(scheme, 'error timeout http_502 http_503 http_504').map((l) => `        ${l}`),
    '    }',
    '    # A replica that lacks a just-pushed master answers 404: ask the next one.',
    '    location /published/ {',
    ...proxyLines(scheme, 'error timeout http_404 http_502 http_503 http_504').map((l) => `        ${l}`),
    '    }',
    '}',
    '',
  ];
  return out.join('\n');
}
