// `derrick nginx-conf`: an nginx server block that serves <root>/published at `${prefix}/` with
// the same URL layout, headers, error bodies and signed-URL check as the embedded file server
// (files.ts), optionally proxying /v2/ to `derrick serve`.
//
// Layout of the generated config (nginx 1.22):
//   server {
//     secure_link ...;                         (server level, so @derrick403 can tell "expired")
//     error_page 403/404 = @derrick403/404;    (registry JSON errors)
//     location ^~ <prefix>/ {                  alias <root>/published/; types {}; ...; return 404
//       location ^~ <prefix>/app/ { return 404; }      redirect files are internal
//       location ^~ <prefix>/master/ {         immutable; guarded (every repo, by default)
//         <leaf regex locations>
//       }
//       location ^~ <prefix>/web/ {            no-cache; guarded
//         <leaf regex locations>
//       }
//       location ^~ <prefix>/{master,web}/<key>/ { ... }   one pair per public repo (or cache prefix)
//     }
//
// The access rule is access.ts's, made static from the config: a repo the config doesn't name
// as public (protected, removed from the config, or an unknown key) falls into the guarded
// default. Guarded means: with signing, a secure_link signature; without, auth_basic against
// serve.htpasswd (bcrypt, which nginx checks with the system's crypt()); with neither, 401.
// The challenge of a 401 is auth_basic's own (error_page keeps it).
// With signing, master/ needs a signature for every repo, since derrick signs every URL it hands out.
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
import { MANIFEST_DIR, MASTER_META_FILES, repoKey } from '../shared/layout.js';
import { CATALOG_CSP } from '../shared/catalog-page/assets.js';
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
  /**
   * Published repos under an open cache prefix that are not cache repos (nginx-guards.ts): each
   * gets a guarded location of its own, as a protected `repos:` entry there does.
   */
  guardedNames?: readonly string[];
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

/**
 * The static catalog page that `derrick publish --catalog` keeps at <published>/ui (a symlink
 * swapped like web/<key>): public repos only, so open to everyone. Nothing under it is a repo's
 * file; the redirect files stay under app/, which is never served.
 */
function catalogLocations(w: (indent: number, line: string) => void, publishedDir: string): void {
  w(1, '# The static catalog page (derrick publish --catalog): public repos only.');
  w(1, 'location = / { return 302 /ui/; }');
  w(1, 'location ^~ /ui/ {');
  w(2, `alias ${quote(publishedDir + '/ui/', 'published directory')};`);
  w(2, 'disable_symlinks off;  # ui is a symlink into ui.d/');
  w(2, 'index index.html;');
  w(2, 'types { text/html html; text/css css; text/javascript js; application/json json; }');
  w(2, `default_type ${OCTET_STREAM};`);
  w(2, 'charset utf-8;');
  w(2, 'charset_types text/css text/javascript application/json;');
  w(2, 'add_header Cache-Control "no-cache";');
  w(2, 'add_header X-Content-Type-Options nosniff;');
  w(2, `add_header Content-Security-Policy "${CATALOG_CSP}";`);
  w(2, 'location ~ "/\\." { return 404; }');
  w(1, '}');
  w(1, '');
}

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

/** How a request proves access to an area: nothing, a signature, or Basic credentials. */
type Guard = 'open' | 'signature' | 'basic';

interface Area {
  immutable: boolean;
  guard: Guard;
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
    if (area.guard === 'signature') {
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
    w(indent, '# dot-files and temp names (.tmp-*) are never served, nor redirect files');
    w(indent, 'location ~ "/\\." { return 404; }');
    w(indent, `location ~ "^${reLiteral(prefix)}/(master/[^/]+/[^/]+|web/[^/]+)/(${MASTER_META_FILES.map(reLiteral).join('|')})$" { return 404; }`);
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
  w(1, 'error_page 401 = @derrick401;');
  w(1, 'error_page 403 = @derrick403;');
  w(1, 'error_page 404 = @derrick404;');
  w(1, '');
  // The guarded default, and the public exceptions (access.ts: needsProof is false only for a
  // repo known to be public while anonymous pulls are allowed).
  const guarded: Guard = secret !== undefined ? 'signature' : 'basic';
  // Without an htpasswd nobody can authenticate: an empty user file refuses everyone, with the
  // same 401 and challenge as the embedded server.
  const userFile = config.serve.htpasswd ?? '/dev/null';
  const publicKeys = config.serve.anonymous
    ? [...config.repos.filter((r) => !r.protected).map((r) => `${repoKey(r.name)}/`), ...config.upstreams.map((u) => `${repoKey(u.prefix)}~`)]
    : [];
  const protectedKeys = [...config.repos.filter((r) => r.protected).map((r) => r.name), ...(opts.guardedNames ?? [])].map((n) => `${repoKey(n)}/`);
  /** `top`: master/ or web/ itself, where <key> alone (no file under it) is never served. */
  const area = (indent: number, location: string, a: Area, top = false) => {
    w(indent, `location ^~ ${location} {`);
    w(indent + 1, 'etag on;');
    if (top) w(indent + 1, `location ~ "^${reLiteral(location)}[^/]*$" { return 404; }`);
    if (a.guard === 'basic') {
      w(indent + 1, 'auth_basic "derrick";');
      w(indent + 1, `auth_basic_user_file ${quote(userFile, 'serve.htpasswd')};`);
    }
    leafBody(indent + 1, a, null, false);
    w(indent + 1, '');
    leaves(indent + 1, a);
    w(indent, '}');
  };

  w(1, `location ^~ ${prefix}/ {`);
  w(2, `alias ${quote(publishedDir + '/', 'published directory')};`);
  w(2, 'sendfile on;');
  w(2, 'tcp_nopush on;');
  w(2, 'disable_symlinks off;  # web/<key> is a symlink into master/');
  w(2, 'autoindex off;');
  w(2, 'etag on;');
  w(2, 'max_ranges 1;');
  w(2, 'types { }');
  w(2, `default_type ${OCTET_STREAM};`);
  w(2, '# Only master/<key>/ and web/<key>/ are served; the redirect files under app/ are internal.');
  w(2, 'return 404;');
  w(2, '');
  w(2, `location ^~ ${prefix}/app/ { return 404; }`);
  area(2, masterPrefix, { immutable: true, guard: guarded }, true);
  area(2, `${prefix}/web/`, { immutable: false, guard: guarded }, true);
  for (const key of publicKeys) {
    if (!/^[a-z0-9._~-]+[/~]$/.test(key)) throw new Error(`repo key "${key}" cannot be an nginx location`);
    w(2, `# public: ${key}`);
    area(2, `${masterPrefix}${key}`, { immutable: true, guard: secret !== undefined ? 'signature' : 'open' });
    area(2, `${prefix}/web/${key}`, { immutable: false, guard: 'open' });
  }
  // A protected repo whose name falls under a public pull-through prefix is named explicitly, and
  // so is a published non-cache repo found there on disk: the longest prefix location wins.
  for (const key of protectedKeys.filter((k) => publicKeys.some((p) => k.startsWith(p) && k !== p))) {
    area(2, `${masterPrefix}${key}`, { immutable: true, guard: guarded });
    area(2, `${prefix}/web/${key}`, { immutable: false, guard: guarded });
  }
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
  catalogLocations(w, publishedDir);
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
  w(1, 'location @derrick401 {');
  w(2, 'types { }');
  w(2, `default_type ${JSON_TYPE};`);
  w(2, `add_header Cache-Control ${quote(MUTABLE_CACHE_CONTROL, 'Cache-Control')} always;`);
  w(2, `return 401 ${errorBody('UNAUTHORIZED', 'authentication required')};`);
  w(1, '}');
  w(1, 'location @derrick403 {');
  w(2, 'types { }');
  w(2, `default_type ${JSON_TYPE};`);
  w(2, `add_header Cache-Control ${quote(MUTABLE_CACHE_CONTROL, 'Cache-Control')} always;`);
  if (secret !== undefined) {
    w(2, `if ($secure_link = "0") { return 403 ${errorBody('DENIED', 'signed URL expired')}; }`);
    w(2, `if ($arg_md5 = "") { return 403 ${errorBody('DENIED', 'signed URL required')}; }`);
    w(2, `if ($secure_link = "") { return 403 ${errorBody('DENIED', 'invalid signature')}; }`);
  }
  w(2, `return 403 ${errorBody('DENIED', 'access denied')};`);
  w(1, '}');
  w(0, '}');
  return out.join('\n') + '\n';
}
