// `derrick nginx-conf`: an nginx server block that serves <root>/published at `${prefix}/` with
// the same URL layout, headers, error bodies and signed-URL check as the embedded file server
// (files.ts), optionally proxying /v2/ to `derrick serve`.
//
// Layout of the generated config (nginx 1.22):
//   server {
//     secure_link ...;                         (server level, so @derrick403 can tell "expired")
//     error_page 403/404 = @derrick403/404;    (registry JSON errors)
//     location ^~ <prefix>/ {                  alias <root>/published/; types {}; ...
//       <leaf regex locations>                 web/, app/, anything not under master/: no-cache
//       location ^~ <prefix>/master/ {         immutable; signed
//         <leaf regex locations>
//       }
//     }
//     location /v2/ { proxy_pass ... }         (with proxy)
//     location / { return 404; }
//   }
//
// nginx details this relies on (checked by test/nginx.e2e.test.ts against a real nginx):
//  - `if`/`return` (rewrite module) and `add_header` are NOT inherited by nested locations, so
//    every leaf repeats its guard, signature check and headers.
//  - nested regex locations inherit the prefix location's `alias`; `try_files $uri =404` then
//    maps through it and turns directories (which nginx would 301 or 403) into 404.
//  - `add_header X $var` with an empty value adds nothing, so one regex with an optional named
//    digest capture serves both manifests by digest (with Docker-Content-Digest) and by tag.
//  - `max_ranges 1`: several ranges get the whole file (200), as on the embedded server.
import path from 'node:path';
import type { Config } from '../shared/config.js';
import { MANIFEST_DIR } from '../shared/layout.js';
import { DIGEST_NAME_PATTERN, IMMUTABLE_CACHE_CONTROL, JSON_TYPE, MUTABLE_CACHE_CONTROL, OCTET_STREAM } from './files.js';

export interface NginxConfOptions {
  /** nginx `listen` argument: a port or host:port (default 80). */
  listen?: string;
  /** host:port of `derrick serve`: also proxy /v2/ to it. */
  proxy?: string;
  /** URL prefix of the published tree (default '/published', as `derrick serve` uses). */
  prefix?: string;
  /** Where signing['secret-env'] is looked up (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** server_name (default `_`). */
  serverName?: string;
  /** Serve HTTPS with serve.tls's certificate and key (`listen ... ssl`, default port 443). */
  tls?: boolean;
}

/** The TLS lines of the server block: the certificate and key that `derrick serve` uses too. */
function tlsDirectives(config: Config): string[] {
  const t = config.serve.tls;
  if (!t) throw new Error(`--tls needs serve.tls (cert and key) in ${config.file ?? 'derrick.yaml'}`);
  return [
    `ssl_certificate ${quote(t.cert, 'serve.tls.cert')};`,
    `ssl_certificate_key ${quote(t.key, 'serve.tls.key')};`,
    'ssl_protocols TLSv1.2 TLSv1.3;',
    'ssl_session_cache shared:derrick_tls:10m;',
    '# nginx re-reads both files on reload (nginx -s reload), as derrick serve does on SIGHUP.',
  ];
}

export const DEFAULT_NGINX_PREFIX = '/published';

/** A double-quoted nginx string. `$` cannot be escaped in nginx, so values with one are refused. */
function quote(value: string, what: string): string {
  return `"${escapeQuoted(value, what)}"`;
}

/** The inside of a double-quoted nginx string. */
function escapeQuoted(value: string, what: string): string {
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new Error(`${what} contains a control character; nginx cannot express it`);
  if (value.includes('$')) throw new Error(`${what} contains "$", which nginx would read as a variable`);
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
}

/** Registry-style JSON error body as a single-quoted nginx string (no `'`, `\` or `$` inside). */
function errorBody(code: string, message: string): string {
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  if (/['\\$]/.test(body)) throw new Error(`cannot quote error body ${body}`);
  return `'${body}'`;
}

/** Prefix as a PCRE literal. */
function reLiteral(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

interface Area {
  immutable: boolean;
  signed: boolean;
}

export function nginxConf(config: Config, opts: NginxConfOptions = {}): string {
  const prefix = (opts.prefix ?? DEFAULT_NGINX_PREFIX).replace(/\/+$/, '');
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(prefix)) throw new Error(`prefix "${opts.prefix}" must be a path like /published`);
  const listen = opts.listen ?? (opts.tls ? '443' : '80');
  if (!/^(\S+:)?\d{1,5}$/.test(listen) || /[;{}"'$\s]/.test(listen)) throw new Error(`listen "${listen}" must be PORT or HOST:PORT`);
  if (opts.proxy !== undefined && !/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$/.test(opts.proxy)) {
    throw new Error(`proxy "${opts.proxy}" must be HOST:PORT`);
  }
  const serverName = opts.serverName ?? '_';
  if (!/^[A-Za-z0-9._*-]+$/.test(serverName)) throw new Error(`server name "${serverName}" is not valid`);
  const publishedDir = path.join(path.resolve(config.root), 'published');

  const signing = config.serve.signing;
  let secret: string | undefined;
  if (signing) {
    const env = opts.env ?? process.env;
    secret = env[signing['secret-env']];
    if (secret === undefined || secret === '') {
      throw new Error(`serve.signing.secret-env: environment variable ${signing['secret-env']} is not set; nginx needs the secret in its config`);
    }
  }

  const out: string[] = [];
  const w = (indent: number, line: string) => out.push(line === '' ? '' : '    '.repeat(indent) + line);
  const masterPrefix = `${prefix}/master/`;
  // Refused on both servers: encoded or raw backslash, encoded slash, empty segments, and any
  // segment starting with '.' or '%2e' ('.', '..', .tmp-*, dot-files) in the raw request path.
  const guard = '"^[^?]*(%2f|%5c|\\x5c|//|/\\.|/%2e)"';

  const leafBody = (indent: number, area: Area, contentType: string | null, digestHeader: boolean) => {
    w(indent, `if ($request_uri ~* ${guard}) { return 404; }`);
    if (area.signed) {
      w(indent, 'if ($secure_link = "") { return 403; }');
      w(indent, 'if ($secure_link = "0") { return 403; }');
    }
    if (contentType) w(indent, `default_type ${contentType};`);
    w(indent, `add_header Cache-Control ${quote(area.immutable ? IMMUTABLE_CACHE_CONTROL : MUTABLE_CACHE_CONTROL, 'Cache-Control')};`);
    if (digestHeader) w(indent, 'add_header Docker-Content-Digest $derrick_digest;');
    w(indent, 'try_files $uri =404;');
  };

  const leaves = (indent: number, area: Area) => {
    const digestOrName = `(?:(?<derrick_digest>${DIGEST_NAME_PATTERN})|[^/]+)$`;
    w(indent, '# dot-files and temp names (.tmp-*) are never served');
    w(indent, 'location ~ "/\\." { return 404; }');
    w(indent, `location ~ "/blobs/${digestOrName}" {`);
    leafBody(indent + 1, area, OCTET_STREAM, true);
    w(indent, '}');
    for (const [mediaType, dir] of Object.entries(MANIFEST_DIR)) {
      w(indent, `location ~ "/manifests/${reLiteral(dir)}/${digestOrName}" {`);
      leafBody(indent + 1, area, mediaType, true);
      w(indent, '}');
    }
    w(indent, `location ~ "(/tags/list|\\.json)$" {`);
    leafBody(indent + 1, area, JSON_TYPE, false);
    w(indent, '}');
  };

  w(0, `# Generated by derrick nginx-conf from ${config.file ?? 'derrick.yaml'}.`);
  w(0, `# Serves ${publishedDir} at ${prefix}/ like the embedded file server of \`derrick serve\`.`);
  if (secret !== undefined) w(0, '# Contains the URL signing secret: keep this file private (mode 0600).');
  w(0, 'server {');
  w(1, `listen ${listen}${opts.tls ? ' ssl' : ''};`);
  if (opts.tls) for (const line of tlsDirectives(config)) w(1, line);
  w(1, `server_name ${serverName};`);
  w(1, 'server_tokens off;');
  w(1, 'charset off;');
  w(1, '');
  if (secret !== undefined) {
    w(1, `# Signed URLs (nginx secure_link, as shared/signing.ts): ?md5=<base64url md5>&expires=<unix s>`);
    w(1, 'secure_link $arg_md5,$arg_expires;');
    w(1, `secure_link_md5 "$secure_link_expires$uri ${escapeQuoted(secret, 'the signing secret')}";`);
    w(1, '');
  }
  w(1, 'error_page 403 = @derrick403;');
  w(1, 'error_page 404 = @derrick404;');
  w(1, '');
  w(1, `location ^~ ${prefix}/ {`);
  w(2, `alias ${quote(publishedDir + '/', 'published directory')};`);
  w(2, 'sendfile on;');
  w(2, 'tcp_nopush on;');
  w(2, 'disable_symlinks off;  # web/<key> and app/<key>.json are symlinks into master/');
  w(2, 'autoindex off;');
  w(2, 'etag on;');
  w(2, 'max_ranges 1;');
  w(2, 'types { }');
  w(2, `default_type ${OCTET_STREAM};`);
  leafBody(2, { immutable: false, signed: false }, null, false);
  w(2, '');
  leaves(2, { immutable: false, signed: false });
  w(2, '');
  w(2, `location ^~ ${masterPrefix} {`);
  w(3, 'etag on;');
  leafBody(3, { immutable: true, signed: secret !== undefined }, null, false);
  w(3, '');
  leaves(3, { immutable: true, signed: secret !== undefined });
  w(2, '}');
  w(1, '}');
  w(1, '');
  if (opts.proxy) {
    w(1, '# The Registry v2 API: derrick serve.');
    w(1, 'location /v2/ {');
    // With serve.tls, derrick serve speaks only HTTPS (nginx does not verify its certificate).
    w(2, `proxy_pass ${config.serve.tls ? 'https' : 'http'}://${opts.proxy};`);
    w(2, 'proxy_http_version 1.1;');
    w(2, 'proxy_set_header Connection "";');
    w(2, 'proxy_set_header Host $http_host;');
    w(2, 'proxy_set_header X-Real-IP $remote_addr;');
    w(2, 'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;');
    w(2, 'proxy_set_header X-Forwarded-Proto $scheme;');
    w(2, 'proxy_set_header X-Forwarded-Host $http_host;');
    w(2, 'proxy_buffering off;');
    w(2, 'proxy_request_buffering off;');
    w(2, 'proxy_intercept_errors off;');
    w(1, '}');
    w(1, '');
  }
  w(1, 'location / {');
  w(2, 'return 404;');
  w(1, '}');
  w(1, '');
  // Registry-style JSON errors, as files.ts sends them.
  w(1, 'location @derrick404 {');
  w(2, 'types { }');
  w(2, `default_type ${JSON_TYPE};`);
  w(2, `add_header Cache-Control ${quote(MUTABLE_CACHE_CONTROL, 'Cache-Control')} always;`);
  w(2, `if ($uri ~ "/blobs/[^/]*$") { return 404 ${errorBody('BLOB_UNKNOWN', 'blob unknown to registry')}; }`);
  w(2, `if ($uri ~ "/manifests/") { return 404 ${errorBody('MANIFEST_UNKNOWN', 'manifest unknown')}; }`);
  w(2, `return 404 ${errorBody('NAME_UNKNOWN', 'not found')};`);
  w(1, '}');
  w(1, 'location @derrick403 {');
  w(2, 'types { }');
  w(2, `default_type ${JSON_TYPE};`);
  w(2, `add_header Cache-Control ${quote(MUTABLE_CACHE_CONTROL, 'Cache-Control')} always;`);
  if (secret !== undefined) {
    w(2, `if ($uri !~ "^${reLiteral(masterPrefix)}") { return 403 ${errorBody('DENIED', 'access denied')}; }`);
    w(2, `if ($secure_link = "0") { return 403 ${errorBody('DENIED', 'signed URL expired')}; }`);
    w(2, `if ($arg_md5 = "") { return 403 ${errorBody('DENIED', 'signed URL required')}; }`);
    w(2, `if ($secure_link = "") { return 403 ${errorBody('DENIED', 'invalid signature')}; }`);
  }
  w(2, `return 403 ${errorBody('DENIED', 'access denied')};`);
  w(1, '}');
  w(0, '}');
  return out.join('\n') + '\n';
}
