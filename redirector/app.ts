// The Hono app: the Registry v2 pull API answered from the in-memory index. Routes stay thin;
// names and digests are checked against the spec's grammars before any lookup.
import { Hono, type Context } from 'hono';
import { errors, RegistryError } from '../shared/errors.js';
import { blobRelPath, TAGS_LIST_REL_PATH } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { isDigestSyntax, isValidName } from '../shared/oci.js';
import type { Authenticator } from './auth.js';
import { errorResponse } from './errors.js';
import type { IndexedRepo, RepoIndex } from './index.js';
import { craneManifestPath, manifestResponse, parseAccept, validateReference } from './manifests.js';
import type { Metrics } from './metrics.js';
import { paginate } from './pagination.js';
import { referrersResponse } from './referrers.js';
import { fileUrl, type UrlOptions } from './urls.js';

export interface AppOptions {
  index: RepoIndex;
  urls: UrlOptions;
  manifests: 'inline' | 'redirect';
  redirectStatus: 302 | 307;
  /** When false, every /v2 request needs credentials. */
  anonymous: boolean;
  auth: Authenticator;
  metrics: Metrics;
  log: Logger;
  /** The embedded file server, mounted at urls.filesPrefix when blobs are embedded. */
  fileServer?: (c: Context) => Promise<Response>;
}

const API_VERSION = { 'Docker-Distribution-API-Version': 'registry/2.0' };

type Route = 'base' | 'catalog' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload' | 'unknown';

interface Parsed {
  route: Route;
  name?: string;
  ref?: string;
}

const MANIFEST_RE = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const BLOB_RE = /^\/v2\/(.+)\/blobs\/([^/]+)$/;
const UPLOAD_RE = /^\/v2\/(.+)\/blobs\/uploads(?:\/.*)?$/;
const TAGS_RE = /^\/v2\/(.+)\/tags\/list$/;
const REFERRERS_RE = /^\/v2\/(.+)\/referrers\/([^/]+)$/;

/** Classifies the raw request path (not decoded, not normalised: traversal stays visible). */
export function parseV2Path(path: string): Parsed {
  if (path === '/v2/' || path === '/v2') return { route: 'base' };
  if (path === '/v2/_catalog') return { route: 'catalog' };
  let m = UPLOAD_RE.exec(path);
  if (m) return { route: 'upload', name: m[1] };
  if ((m = MANIFEST_RE.exec(path))) return { route: 'manifest', name: m[1], ref: m[2] };
  if ((m = BLOB_RE.exec(path))) return { route: 'blob', name: m[1], ref: m[2] };
  if ((m = TAGS_RE.exec(path))) return { route: 'tags', name: m[1] };
  if ((m = REFERRERS_RE.exec(path))) return { route: 'referrers', name: m[1], ref: m[2] };
  return { route: 'unknown' };
}

function rawTarget(c: Context): { path: string; query: string } {
  const raw: string = (c.env as { incoming?: { url?: string } } | undefined)?.incoming?.url ?? c.req.url.replace(/^https?:\/\/[^/]+/, '');
  const q = raw.indexOf('?');
  return q < 0 ? { path: raw, query: '' } : { path: raw.slice(0, q), query: raw.slice(q + 1) };
}

function withHeaders(res: Response, extra: Record<string, string>): Response {
  for (const [k, v] of Object.entries(extra)) res.headers.set(k, v);
  return res;
}

export function createApp(o: AppOptions): Hono {
  const app = new Hono();
  const { index, metrics, log } = o;

  const requireAuth = (c: Context, repo?: IndexedRepo) => {
    if (o.anonymous && !repo?.protected) return;
    if (!o.auth.check(c.req.header('authorization'))) {
      throw errors.unauthorized(o.auth.realm, repo ? [{ Type: 'repository', Name: repo.name, Action: 'pull' }] : undefined);
    }
  };

  const lookup = (c: Context, name: string): IndexedRepo => {
    if (!isValidName(name)) throw errors.nameInvalid(name);
    const repo = index.get(name);
    // An unauthenticated caller learns nothing about a protected repo beyond "authenticate".
    if (!repo) {
      if (!o.anonymous) requireAuth(c);
      throw errors.nameUnknown(name);
    }
    requireAuth(c, repo);
    return repo;
  };

  const redirect = (kind: 'blob' | 'manifest' | 'tags', location: string, extra: Record<string, string> = {}) => {
    metrics.redirects.inc({ kind });
    return new Response(null, { status: o.redirectStatus, headers: { Location: location, ...extra } });
  };

  const handle = (c: Context, p: Parsed, query: URLSearchParams): Response => {
    const method = c.req.method;
    if (method !== 'GET' && method !== 'HEAD') throw errors.unsupported(method, c.req.path);
    switch (p.route) {
      case 'upload':
        throw errors.unsupported(method, c.req.path);
      case 'unknown':
        throw new RegistryError('NAME_UNKNOWN', 'unknown endpoint', { path: c.req.path }, 404);
      case 'base': {
        requireAuth(c);
        return new Response(method === 'HEAD' ? null : '{}', { status: 200, headers: { 'Content-Type': 'application/json', 'Content-Length': '2' } });
      }
      case 'catalog': {
        if (!o.anonymous) requireAuth(c);
        const authed = !!o.auth.check(c.req.header('authorization'));
        const visible = index.names().filter((n) => authed || !index.get(n)!.protected);
        const page = paginate(visible, query.get('n') ?? undefined, query.get('last') ?? undefined, '/v2/_catalog');
        return json(method, { repositories: page.items }, page.link);
      }
      case 'manifest': {
        const repo = lookup(c, p.name!);
        const kind = validateReference(repo.name, p.ref!);
        if (repo.kind === 'crane') {
          const accept = parseAccept(c.req.header('accept')?.split(',') ?? []) ?? new Set<string>();
          return redirect('manifest', repo.current.url + craneManifestPath(repo.crane!, p.ref!, accept));
        }
        const { response, redirected } = manifestResponse({
          method,
          repo,
          ref: p.ref!,
          kind,
          accept: parseAccept(c.req.raw.headers.get('accept')?.split(',') ?? []),
          ifNoneMatch: c.req.header('if-none-match'),
          mode: o.manifests,
          redirectStatus: o.redirectStatus,
          urls: o.urls,
        });
        if (redirected) metrics.redirects.inc({ kind: 'manifest' });
        return response;
      }
      case 'blob': {
        if (!isValidName(p.name!)) throw errors.nameInvalid(p.name!);
        if (!isDigestSyntax(p.ref!)) throw errors.digestInvalid(p.ref!, 'invalid digest');
        const repo = lookup(c, p.name!);
        const digest = p.ref!;
        if (repo.kind === 'crane') return redirect('blob', repo.current.url + blobRelPath(digest));
        const version = versionWithBlob(repo, digest);
        if (!version) throw errors.blobUnknown(repo.name, digest);
        const manifest = version.manifests.get(digest);
        // A manifest fetched through the blobs endpoint is served from its manifests/ path.
        const rel = manifest ? `manifests/${manifestSubdir(manifest.mediaType)}/${digest}` : blobRelPath(digest);
        return redirect('blob', fileUrl(o.urls, version.url, rel), { 'Docker-Content-Digest': digest });
      }
      case 'tags': {
        const repo = lookup(c, p.name!);
        if (repo.kind === 'crane') return redirect('tags', repo.current.url + TAGS_LIST_REL_PATH);
        const page = paginate(repo.sortedTags, query.get('n') ?? undefined, query.get('last') ?? undefined, `/v2/${repo.name}/tags/list`);
        return json(method, { name: repo.name, tags: page.items }, page.link);
      }
      case 'referrers': {
        const repo = lookup(c, p.name!);
        if (!isDigestSyntax(p.ref!)) throw errors.digestInvalid(p.ref!, 'invalid digest');
        return referrersResponse(repo, p.ref!, query.get('artifactType') ?? undefined, method);
      }
    }
  };

  app.all('/v2/*', (c) => v2(c));
  app.all('/v2', (c) => v2(c));

  function v2(c: Context): Response {
    const started = performance.now();
    const { path, query } = rawTarget(c);
    const p = parseV2Path(path);
    let res: Response;
    try {
      res = handle(c, p, new URLSearchParams(query));
    } catch (err) {
      if (!(err instanceof RegistryError)) {
        log.error({ err: String((err as Error).stack ?? err), path }, 'internal error');
        err = new RegistryError('UNAVAILABLE', 'internal error', undefined, 500);
      }
      res = errorResponse(c.req.method, err as RegistryError);
    }
    withHeaders(res, API_VERSION);
    metrics.requests.inc({ route: p.route, method: c.req.method, status: res.status });
    if (log.isLevelEnabled('info')) {
      log.info({ method: c.req.method, path, status: res.status, ms: +(performance.now() - started).toFixed(2) }, 'request');
    }
    return res;
  }

  if (o.fileServer) {
    const prefix = o.urls.filesPrefix;
    app.on(['GET', 'HEAD'], `${prefix}/*`, o.fileServer);
  }
  app.get('/metrics', async () => {
    metrics.repos.set(index.size());
    metrics.tags.set(index.tagCount());
    return new Response(await metrics.registry.metrics(), { headers: { 'Content-Type': metrics.registry.contentType } });
  });
  app.get('/healthz', () => new Response('ok\n'));
  app.notFound((c) => errorResponse(c.req.method, new RegistryError('NAME_UNKNOWN', 'not found', { path: c.req.path }, 404)));
  return app;
}

function json(method: string, value: unknown, link?: string): Response {
  const body = JSON.stringify(value);
  const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
  if (link) headers.Link = link;
  return new Response(method === 'HEAD' ? null : body, { status: 200, headers });
}

function versionWithBlob(repo: IndexedRepo, digest: string) {
  if (repo.current.blobs.has(digest) || repo.current.manifests.has(digest)) return repo.current;
  const now = Date.now();
  return repo.previous.find((p) => p.until > now && (p.version.blobs.has(digest) || p.version.manifests.has(digest)))?.version;
}

import { manifestDir as manifestSubdir } from '../shared/layout.js';
