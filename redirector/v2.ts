// The Registry v2 pull API as one framework-free function: request facts in, a Reply out.
// Names and digests are checked against the spec's grammars before any lookup, on the raw
// (undecoded, unnormalised) path, so traversal never reaches the index.
import { errors, RegistryError } from '../shared/errors.js';
import { blobRelPath, manifestRelPath, TAGS_LIST_REL_PATH } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { isDigestSyntax, isValidName } from '../shared/oci.js';
import { needsProof, unauthorized, type CredentialCheck } from './access.js';
import { errorReply } from './errors.js';
import type { IndexedRepo, RepoIndex, RepoVersion } from './index.js';
import { craneManifestPath, manifestReply, parseAccept, validateReference } from './manifests.js';
import type { Metrics } from './metrics.js';
import type { PullThrough } from './pull-through/pull-through.js';
import { paginate } from './pagination.js';
import { referrersResponse } from './referrers.js';
import { jsonReply, reply, type Reply } from './reply.js';
import { fileUrl, type UrlOptions } from './urls.js';

export interface V2Options {
  index: RepoIndex;
  urls: UrlOptions;
  manifests: 'inline' | 'redirect';
  redirectStatus: 302 | 307;
  /** When false, every /v2 request needs credentials. */
  anonymous: boolean;
  auth: CredentialCheck & { readonly hasUsers?: boolean };
  metrics: Metrics;
  log: Logger;
  /** Serves <prefix>/<repo> from configured upstreams; absent when there are none. */
  pullThrough?: PullThrough;
}

export interface V2Request {
  method: string;
  /** The request target as sent: path and query, not decoded. */
  target: string;
  header(name: string): string | undefined;
  /** A function: reading a socket's peer address has a cost, and only pull-through needs it. */
  remoteAddress?: () => string | undefined;
}

/**
 * Thrown when an answer needs the disk (a repo not in memory, manifest bytes not cached, a
 * catalog's unknown names): the handler waits for `ready` and runs the route again. Everything
 * in memory stays on the synchronous path.
 */
class Pending {
  constructor(readonly ready: Promise<void>) {}
}

/** What earlier passes of one request loaded, so the next pass finds it even if the LRU dropped it. */
interface Loaded {
  repos: Map<string, IndexedRepo | null>;
  bytes: Map<string, Buffer>;
  catalog?: string[];
}

type Route = 'base' | 'catalog' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload' | 'unknown';

interface Parsed {
  route: Route;
  name?: string;
  ref?: string;
}

const NO_QUERY = new URLSearchParams();
const UPLOAD_RE = /^\/v2\/(.+)\/blobs\/uploads(?:\/.*)?$/;
const BASE: Parsed = { route: 'base' };
const CATALOG: Parsed = { route: 'catalog' };
const UNKNOWN: Parsed = { route: 'unknown' };
/** The second-to-last path segment -> route, for /v2/<name>/<segment>/<last>. */
const BY_SEGMENT: Readonly<Record<string, Route>> = { blobs: 'blob', manifests: 'manifest', tags: 'tags', referrers: 'referrers' };

/**
 * Which endpoint a path is, by its last two segments: /v2/<name>/{blobs,manifests,referrers}/<ref>
 * and /v2/<name>/tags/list; anything under /v2/<name>/blobs/uploads is an upload. Splitting at
 * the last slashes (rather than four anchored regexes) is the hot path's single biggest saving.
 */
export function parseV2Path(path: string): Parsed {
  if (path === '/v2/' || path === '/v2') return BASE;
  if (path === '/v2/_catalog') return CATALOG;
  if (!path.startsWith('/v2/')) return UNKNOWN;
  if (path.includes('/blobs/uploads')) {
    const m = UPLOAD_RE.exec(path);
    if (m) return { route: 'upload', name: m[1] };
  }
  const i = path.lastIndexOf('/');
  const j = path.lastIndexOf('/', i - 1);
  // The name is at least one character between "/v2/" and the segment.
  if (j < 5 || i === path.length - 1) return UNKNOWN;
  const segment = path.slice(j + 1, i);
  if (!Object.hasOwn(BY_SEGMENT, segment)) return UNKNOWN;
  const route = BY_SEGMENT[segment]!;
  const name = path.slice(4, j);
  const last = path.slice(i + 1);
  if (route === 'tags') return last === 'list' ? { route, name } : UNKNOWN;
  return { route, name, ref: last };
}

function versionWithBlob(repo: IndexedRepo, digest: string): RepoVersion | undefined {
  if (repo.current.blobs.has(digest) || repo.current.manifests.has(digest)) return repo.current;
  const now = Date.now();
  return repo.previous.find((p) => p.until > now && (p.version.blobs.has(digest) || p.version.manifests.has(digest)))?.version;
}

export function createV2Handler(o: V2Options): (req: V2Request) => Reply | Promise<Reply> {
  const { index, metrics, log } = o;
  // Counters per label set are looked up once; see HotCounter.
  const counters = new Map<string, () => void>();
  const countRequest = (route: string, method: string, status: number) => {
    const key = `${route} ${method} ${status}`;
    let inc = counters.get(key);
    if (!inc) counters.set(key, (inc = metrics.requests.child(route, method, String(status))));
    inc();
  };
  // With users to check, /v2/ names the Basic challenge even when it answers 200: containers/image
  // (skopeo, podman, buildah) reads it there and only then sends credentials to protected repos.
  const baseHeaders: Record<string, string> = { 'Content-Type': 'application/json', 'Content-Length': '2' };
  if (o.auth.hasUsers) baseHeaders['WWW-Authenticate'] = unauthorized(o.auth.realm).headers['WWW-Authenticate']!;
  const redirectCounters = {
    blob: { inc: metrics.redirects.child('blob') },
    manifest: { inc: metrics.redirects.child('manifest') },
    tags: { inc: metrics.redirects.child('tags') },
  };

  /** Names in the index are valid by construction: the grammar runs only for the others. */
  const checkName = (name: string) => {
    if (!index.peek(name) && !isValidName(name)) throw errors.nameInvalid(name);
  };

  /** The repo from memory; a published repo that is not in memory is loaded first (Pending). */
  const repoOf = (ld: Loaded, name: string): IndexedRepo | undefined => {
    if (ld.repos.has(name)) return ld.repos.get(name) ?? undefined;
    const repo = index.peek(name);
    // Pinned for the later passes of this request: the access decision and the answer must come
    // from the same version, even if a reload or an eviction happens in between.
    if (repo) ld.repos.set(name, repo);
    if (repo || !index.has(name)) return repo;
    throw new Pending(index.load(name).then((r) => void ld.repos.set(name, r ?? null)));
  };

  /** A manifest's bytes from the byte cache, else read from its master (Pending). */
  const bytesOf = (ld: Loaded, repo: IndexedRepo, digest: string): Buffer => {
    const have = ld.bytes.get(digest);
    if (have) return have;
    const version = repo.current.manifests.has(digest) ? repo.current : repo.previous.find((p) => p.version.manifests.has(digest))!.version;
    const cached = index.cachedManifest(version, digest);
    if (cached) return cached;
    throw new Pending(index.readManifest(version, digest).then((b) => void ld.bytes.set(digest, b)));
  };

  /**
   * What a request must show before it is routed (access.ts holds the rule): nothing, Basic
   * credentials, or credentials only if it sent some (then they must be right). Decided from
   * memory (a cold repo is loaded first, Pending), so requests that need no password check stay
   * synchronous. A name that is not published needs proof too: an anonymous caller can't tell a
   * protected repo from a missing one.
   */
  const requirement = (p: Parsed, ld: Loaded): 'none' | 'required' | 'if-sent' => {
    switch (p.route) {
      case 'base':
      case 'catalog':
        return o.anonymous ? 'if-sent' : 'required';
      case 'manifest':
      case 'blob':
      case 'tags':
      case 'referrers': {
        const name = p.name!;
        if (!index.has(name) && !isValidName(name)) return 'none'; // NAME_INVALID, the same for everyone
        const repo = repoOf(ld, name);
        const protection = repo ? repo.protected : o.pullThrough?.match(name) ? false : undefined;
        return needsProof(o.anonymous, protection) ? 'required' : 'none';
      }
      default:
        return 'none';
    }
  };

  const lookup = (name: string, ld: Loaded): IndexedRepo => {
    checkName(name);
    const repo = repoOf(ld, name);
    if (!repo) throw errors.nameUnknown(name);
    return repo;
  };

  const redirectCache = new WeakMap<RepoVersion, Map<string, Reply>>();
  const redirect = (method: string, kind: 'blob' | 'manifest' | 'tags', location: string, extra: Record<string, string> = {}) => {
    redirectCounters[kind].inc();
    return reply(method, o.redirectStatus, { Location: location, ...extra });
  };

  /** `user`: who the credentials checked by `requirement` belong to, if any. */
  const route = (req: V2Request, p: Parsed, path: string, query: URLSearchParams, user: string | undefined, ld: Loaded): Reply | Promise<Reply> => {
    const method = req.method;
    // The upload endpoints answer no method at all here: their 405 says so with an empty Allow.
    if (method !== 'GET' && method !== 'HEAD') throw errors.unsupported(method, path, p.route === 'upload' ? '' : undefined);
    switch (p.route) {
      case 'upload':
        throw errors.unsupported(method, path, '');
      case 'unknown':
        throw new RegistryError('NAME_UNKNOWN', 'unknown endpoint', { path }, 404);
      case 'base':
        return reply(method, 200, { ...baseHeaders }, '{}');
      case 'catalog': {
        // The index hides what needs proof (fail closed) unless the request showed credentials.
        const visible = ld.catalog ?? (o.anonymous || user !== undefined ? index.visibleNames(user !== undefined) : []);
        if (visible instanceof Promise) throw new Pending(visible.then((v) => void (ld.catalog = v)));
        const page = paginate(visible, query.get('n') ?? undefined, query.get('last') ?? undefined, '/v2/_catalog');
        return jsonReply(method, { repositories: page.items }, page.link);
      }
      case 'manifest': {
        checkName(p.name!);
        const pt = o.pullThrough?.match(p.name!);
        if (pt) {
          const kind = validateReference(p.name!, p.ref!);
          const accept = parseAccept(req.header('accept')?.split(',') ?? []);
          return o.pullThrough!.manifest({ method, remoteAddress: req.remoteAddress?.(), accept, ifNoneMatch: req.header('if-none-match') }, pt, p.name!, p.ref!, kind);
        }
        const repo = lookup(p.name!, ld);
        const kind = validateReference(repo.name, p.ref!);
        const accept = parseAccept(req.header('accept')?.split(',') ?? []);
        if (repo.kind === 'crane') return redirect(method, 'manifest', repo.current.url + craneManifestPath(repo.crane!, p.ref!, accept ?? new Set()));
        const r = manifestReply({
          method,
          repo,
          ref: p.ref!,
          kind,
          accept,
          ifNoneMatch: req.header('if-none-match'),
          mode: o.manifests,
          redirectStatus: o.redirectStatus,
          urls: o.urls,
          bytes: (digest) => bytesOf(ld, repo, digest),
        });
        if (r.redirected) redirectCounters.manifest.inc();
        return r.reply;
      }
      case 'blob': {
        checkName(p.name!);
        if (!isDigestSyntax(p.ref!)) throw errors.digestInvalid(p.ref!, 'invalid digest');
        const pt = o.pullThrough?.match(p.name!);
        if (pt) {
          // Committed blobs this repo's upstream was seen to have take the static path; the
          // rest come through the cache, which confirms them first (design invariant 9).
          const cached = repoOf(ld, p.name!);
          const version = cached && versionWithBlob(cached, p.ref!);
          if (!version || !o.pullThrough!.proven(p.name!, p.ref!)) return o.pullThrough!.blob({ method, remoteAddress: req.remoteAddress?.(), accept: null }, pt, p.name!, p.ref!);
        }
        const repo = lookup(p.name!, ld);
        const digest = p.ref!;
        if (repo.kind === 'crane') return redirect(method, 'blob', repo.current.url + blobRelPath(digest));
        const version = versionWithBlob(repo, digest);
        if (!version) throw errors.blobUnknown(repo.name, digest);
        // The hot path: a version's redirects never change, so each is built once and reused
        // (bodiless, so GET and HEAD share it). Signed URLs expire and are made fresh each time.
        let built = o.urls.signing ? undefined : redirectCache.get(version)?.get(digest);
        if (!built) {
          const manifest = version.manifests.get(digest);
          // A manifest fetched through the blobs endpoint is served from its manifests/ path.
          const rel = manifest ? manifestRelPath(manifest.mediaType, digest) : blobRelPath(digest);
          built = redirect(method, 'blob', fileUrl(o.urls, version.url, rel), { 'Docker-Content-Digest': digest });
          if (!o.urls.signing) {
            let m = redirectCache.get(version);
            if (!m) redirectCache.set(version, (m = new Map()));
            m.set(digest, built);
          }
          return built;
        }
        redirectCounters.blob.inc();
        return built;
      }
      case 'tags': {
        checkName(p.name!);
        const pt = o.pullThrough?.match(p.name!);
        if (pt) {
          const page = { n: query.get('n') ?? undefined, last: query.get('last') ?? undefined };
          return o.pullThrough!.tags({ method, remoteAddress: req.remoteAddress?.(), accept: null }, pt, p.name!, page);
        }
        const repo = lookup(p.name!, ld);
        if (repo.kind === 'crane') return redirect(method, 'tags', repo.current.url + TAGS_LIST_REL_PATH);
        const page = paginate(repo.sortedTags, query.get('n') ?? undefined, query.get('last') ?? undefined, `/v2/${repo.name}/tags/list`);
        return jsonReply(method, { name: repo.name, tags: page.items }, page.link);
      }
      case 'referrers': {
        checkName(p.name!);
        const pt = o.pullThrough?.match(p.name!);
        if (pt) {
          if (!isDigestSyntax(p.ref!)) throw errors.digestInvalid(p.ref!, 'invalid digest');
          return o.pullThrough!.referrers({ method, accept: null }, p.name!, p.ref!, query.get('artifactType') ?? undefined);
        }
        const repo = lookup(p.name!, ld);
        if (!isDigestSyntax(p.ref!)) throw errors.digestInvalid(p.ref!, 'invalid digest');
        return referrersResponse(repo, p.ref!, query.get('artifactType') ?? undefined, method);
      }
    }
  };

  return (req) => {
    const started = performance.now();
    const q = req.target.indexOf('?');
    const path = q < 0 ? req.target : req.target.slice(0, q);
    const p = parseV2Path(path);
    const fail = (err: unknown): Reply => {
      if (!(err instanceof RegistryError)) {
        log.error({ err: String((err as Error).stack ?? err), path }, 'internal error');
        err = new RegistryError('UNAVAILABLE', 'internal error', undefined, 500);
      }
      return errorReply(req.method, err as RegistryError);
    };
    const done = (r: Reply): Reply => {
      countRequest(p.route, req.method, r.status);
      if (log.isLevelEnabled('info')) {
        log.info({ method: req.method, path, status: r.status, ms: +(performance.now() - started).toFixed(2) }, 'request');
      }
      return r;
    };
    const query = q < 0 ? NO_QUERY : new URLSearchParams(req.target.slice(q + 1));
    const ld: Loaded = { repos: new Map(), bytes: new Map() };
    let user: string | undefined;
    let checked = false;
    // Each pass either answers or names one thing to load (Pending); a few passes cover any request.
    const attempt = (pass: number): Reply | Promise<Reply> => {
      try {
        if (!checked) {
          const need = requirement(p, ld);
          const authorization = need === 'none' ? undefined : req.header('authorization');
          if (need === 'required' || (need === 'if-sent' && authorization !== undefined)) {
            const u = o.auth.check(authorization, req.remoteAddress?.());
            const proceed = (found: string | undefined) => {
              if (found === undefined) throw unauthorized(o.auth.realm, p.name);
              user = found;
              checked = true;
              return attempt(pass);
            };
            return u instanceof Promise ? u.then(proceed) : proceed(u);
          }
          checked = true;
        }
        return route(req, p, path, query, user, ld);
      } catch (err) {
        if (err instanceof Pending && pass < 4) return err.ready.then(() => attempt(pass + 1));
        return fail(err instanceof Pending ? new Error('request needed too many loads') : err);
      }
    };
    const r = attempt(0);
    // Password checks, pull-through misses and cold repos are asynchronous; the rest stays synchronous.
    return r instanceof Promise ? r.then(done, (err) => done(fail(err))) : done(r);
  };
}
