// The pull-through cache on the request path: a miss is fetched from the route's upstream
// (one request per reference or digest, however many clients ask), served while it is stored,
// and committed as an ordinary publish so that the next pull is a static hit.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { createFillRegistry } from '../../shared/cache/blob-fill.js';
import type { Config } from '../../shared/config.js';
import { errors, RegistryError } from '../../shared/errors.js';
import type { Layout } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { amd64Child, isIndexType } from '../../shared/oci.js';
import { readRepoState } from '../../shared/publish/repo-state.js';
import { readdirOrEmpty } from '../../shared/publish/fsutil.js';
import { openStore, type Store } from '../../shared/publish/store.js';
import { repoNameFromKey } from '../../shared/layout.js';
import type { RepoIndex } from '../index.js';
import { inlineManifestReply, manifestReply } from '../manifests.js';
import type { Metrics } from '../metrics.js';
import { paginate } from '../pagination.js';
import { jsonReply, reply, type Reply } from '../reply.js';
import type { UrlOptions } from '../urls.js';
import { blobSize, cachedManifest, cacheRepoFromState, newCacheRepo, type CachedManifest, type CacheRepo } from './cache-repo.js';
import { createAccessLog, type AccessLog } from './access-log.js';
import { createCommitter, type Committer } from './commit.js';
import { isUpstreamDown, upstreamToRegistryError } from './errors.js';
import { createRoutes, type Policy, type RouteMatch } from './routes.js';

export const STALE_WARNING = '110 - "Response is Stale"';
const UPSTREAM_TIMEOUT_MS = 30_000;

export interface PullThroughRequest {
  method: string;
  remoteAddress?: string;
  accept: Set<string> | null;
  ifNoneMatch?: string;
}

export interface PullThrough {
  match(name: string): RouteMatch | undefined;
  manifest(req: PullThroughRequest, m: RouteMatch, name: string, ref: string, kind: 'tag' | 'digest'): Promise<Reply>;
  blob(req: PullThroughRequest, m: RouteMatch, name: string, digest: string): Promise<Reply>;
  /** tags/list: the upstream's list, or what is cached (Never; or stale, when the upstream failed). */
  tags(req: PullThroughRequest, m: RouteMatch, name: string, page: { n?: string; last?: string }): Promise<Reply>;
  committer: Committer;
  accessLog: AccessLog;
  /** Bytes the running fills hold in memory (a gauge). */
  fillMemory(): number;
}

export interface PullThroughOptions {
  config: Config;
  layout: Layout;
  index: RepoIndex;
  metrics: Metrics;
  log: Logger;
  urls: UrlOptions;
  manifests: 'inline' | 'redirect';
  redirectStatus: number;
  override?: Policy;
  debounceMs?: number;
}

export async function createPullThrough(o: PullThroughOptions): Promise<PullThrough> {
  const l = o.layout;
  const store: Store = await openStore(l);
  const routes = createRoutes(o.config.upstreams, o.override);
  const match = routes.match;
  const repos = new Map<string, CacheRepo>();
  const committer = createCommitter({
    layout: l,
    store,
    repos,
    maxSize: o.config.cache['max-size'],
    keep: o.config.keep,
    graceMs: o.config.grace,
    publishedUrl: o.config.serve.blobs === 'embedded' ? undefined : o.config.serve.blobs,
    debounceMs: o.debounceMs,
    log: o.log,
    onEvict: () => o.metrics.cache.evictions.inc(),
  });
  const fills = createFillRegistry({
    memoryBudget: o.config.cache['fill-memory'],
    storeBlobsDir: l.storeBlobsDir,
    onDone: (_d, bytes) => o.metrics.cache.upstreamBytes.inc(bytes),
    onFail: (digest, err) => o.log.warn({ digest, err: err.message }, 'upstream blob rejected'),
  });
  const flights = new Map<string, Promise<unknown>>();
  const once = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const running = flights.get(key);
    if (running) {
      o.metrics.cache.joins.inc();
      return running as Promise<T>;
    }
    const p = fn().finally(() => flights.delete(key));
    flights.set(key, p);
    return p;
  };

  // Cached repos committed by an earlier process: their tags count as unconfirmed.
  for (const f of await readdirOrEmpty(l.repoStateDir)) {
    if (!f.endsWith('.json')) continue;
    const name = repoNameFromKey(f.slice(0, -5));
    const m = match(name);
    if (!m) continue;
    const state = await readRepoState(l, name).catch(() => undefined);
    if (!state) continue;
    const bytes = new Map<string, Buffer>();
    for (const d of Object.keys(state.manifests)) bytes.set(d, await store.read(d).catch(() => Buffer.alloc(0)));
    repos.set(name, cacheRepoFromState(state, m.upstreamRepo, (d) => (bytes.get(d)?.length ? bytes.get(d) : undefined)));
    committer.seed(state);
  }
  const accessLog = createAccessLog(l.cacheAccessFile, repos, o.log);
  await accessLog.restore(repos);

  // Say hello to each upstream in the background: it loads the fetch stack and opens a
  // connection before the first client needs one, and logs an unreachable upstream early.
  for (const r of routes.all) {
    if (r.policy === 'Never') continue;
    r.client.ping({ signal: AbortSignal.timeout(10_000) }).catch((err: Error) => o.log.warn({ upstream: r.cfg.url, err: err.message }, 'upstream not reachable at start'));
  }

  const repoFor = (name: string, m: RouteMatch) => {
    let r = repos.get(name);
    if (!r) repos.set(name, (r = newCacheRepo(name, m.upstreamRepo)));
    return r;
  };
  const requestOpts = (req: PullThroughRequest) => ({
    signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
    headers: req.remoteAddress ? { 'X-Forwarded-For': req.remoteAddress } : undefined,
  });

  /** A manifest by digest from memory, the published index, the store, or (once) the upstream. */
  const loadManifest = async (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, digest: string, allowFetch: boolean): Promise<CachedManifest | undefined> => {
    const have = repo.manifests.get(digest);
    if (have?.bytes) return have;
    const pub = await o.index.load(repo.name);
    const published = pub?.current.manifests.get(digest);
    if (pub && published) {
      const cm = cachedManifest(await o.index.readManifest(pub.current, digest), published.mediaType);
      repo.manifests.set(digest, cm);
      return cm;
    }
    if (!allowFetch) return undefined;
    return once(`manifest ${repo.name}@${digest}`, async () => {
      o.metrics.cache.misses.inc();
      const fetched = await m.route.client.getManifest(m.upstreamRepo, digest, requestOpts(req));
      await store.putBytes(fetched.digest, fetched.bytes);
      const cm = cachedManifest(fetched.bytes, fetched.mediaType);
      repo.manifests.set(digest, cm);
      if (!cm.children && cm.blobs.length === 0) committer.schedule(repo.name);
      return cm;
    });
  };

  const serveManifest = (req: PullThroughRequest, repo: CacheRepo, digest: string, cm: CachedManifest, kind: 'tag' | 'digest', maxAge: number, stale: boolean): Reply => {
    const published = o.index.peek(repo.name);
    const extra: Record<string, string> = stale ? { Warning: STALE_WARNING } : {};
    if (published?.current.manifests.has(digest) && o.manifests === 'redirect') {
      const r = manifestReply({
        method: req.method, repo: published, ref: digest, kind: 'digest', accept: null, ifNoneMatch: req.ifNoneMatch,
        mode: o.manifests, redirectStatus: o.redirectStatus, urls: o.urls, bytes: () => cm.bytes!,
      }).reply;
      Object.assign(r.headers, extra);
      return r;
    }
    return inlineManifestReply({
      method: req.method, digest, mediaType: cm.mediaType, size: cm.size, bytes: cm.bytes ?? null, kind,
      tagMaxAge: maxAge / 1000, ifNoneMatch: req.ifNoneMatch, extra,
    });
  };

  const negotiateChild = async (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, digest: string, cm: CachedManifest, allowFetch: boolean) => {
    if (!req.accept || req.accept.has(cm.mediaType) || !isIndexType(cm.mediaType)) return { digest, cm };
    const child = amd64Child(cm.children ?? []);
    const ccm = child && (await loadManifest(req, m, repo, child.digest, allowFetch));
    if (!child || !ccm || !req.accept.has(ccm.mediaType)) {
      throw new RegistryError('MANIFEST_UNKNOWN', 'manifest is an index and the client accepts neither it nor its linux/amd64 image', { name: repo.name, mediaType: cm.mediaType });
    }
    return { digest: child.digest, cm: ccm };
  };

  const manifest: PullThrough['manifest'] = async (req, m, name, ref, kind) => {
    const repo = repoFor(name, m);
    const policy = m.route.policy;
    const upstream = m.route.cfg.url;
    const ttl = m.route.cfg['tag-ttl'];
    try {
      if (kind === 'digest') {
        // A digest names immutable bytes: never rechecked.
        const hit = await loadManifest(req, m, repo, ref, false);
        if (hit) o.metrics.cache.hits.inc();
        const cm = hit ?? (policy === 'Never' ? undefined : await loadManifest(req, m, repo, ref, true));
        if (!cm) throw errors.manifestUnknown(name, ref);
        touchDigest(repo, ref);
        return serveManifest(req, repo, ref, cm, 'digest', 0, false);
      }
      const now = Date.now();
      const publishedDigest = (await o.index.load(name))?.tags.get(ref);
      const known = repo.tags.get(ref) ?? (publishedDigest ? { digest: publishedDigest, checkedAt: 0 } : undefined);
      if (known && !repo.tags.has(ref)) repo.tags.set(ref, known);
      const fresh = known !== undefined && now - known.checkedAt < ttl;
      const serveKnown = async (stale: boolean) => {
        const cm = await loadManifest(req, m, repo, known!.digest, policy !== 'Never');
        if (!cm) throw errors.manifestUnknown(name, ref);
        accessLog.touch(repo, ref);
        const chosen = await negotiateChild(req, m, repo, known!.digest, cm, policy !== 'Never');
        return serveManifest(req, repo, chosen.digest, chosen.cm, 'tag', known!.checkedAt + ttl - Date.now(), stale);
      };
      if (policy === 'Never') {
        if (!known) throw errors.manifestUnknown(name, ref);
        o.metrics.cache.hits.inc();
        return await serveKnown(false);
      }
      if (policy === 'IfNotPresent' && fresh) {
        o.metrics.cache.hits.inc();
        return await serveKnown(false);
      }
      // One flight from HEAD to the updated tag, so a request arriving while the manifest is
      // still being fetched joins it instead of resolving the tag again.
      let digest: string;
      try {
        digest = await once(`tag ${name}:${ref}`, async () => {
          const head = await m.route.client.headManifest(m.upstreamRepo, ref, requestOpts(req));
          let d = head.digest;
          if (!d) {
            const got = await m.route.client.getManifest(m.upstreamRepo, ref, requestOpts(req));
            await store.putBytes(got.digest, got.bytes);
            repo.manifests.set(got.digest, cachedManifest(got.bytes, got.mediaType));
            d = got.digest;
          }
          const current = repo.tags.get(ref);
          if (current && current.digest === d) {
            current.checkedAt = Date.now();
            return d;
          }
          if (!(await loadManifest(req, m, repo, d, true))) throw errors.manifestUnknown(name, ref);
          repo.tags.set(ref, { digest: d, checkedAt: Date.now() });
          return d;
        });
      } catch (err) {
        const staleOk = policy === 'IfNotPresent' || m.route.cfg['stale-on-error'];
        if (known && staleOk && isUpstreamDown(err)) {
          o.metrics.cache.stale.inc();
          o.log.warn({ repo: name, tag: ref, err: (err as Error).message }, 'upstream failed; serving the cached tag stale');
          return await serveKnown(true);
        }
        throw err;
      }
      if (known && known.digest === digest) {
        o.metrics.cache.hits.inc();
        return await serveKnown(false);
      }
      const cm = await loadManifest(req, m, repo, digest, true);
      if (!cm) throw errors.manifestUnknown(name, ref);
      accessLog.touch(repo, ref);
      const chosen = await negotiateChild(req, m, repo, digest, cm, true);
      // Complete already (an index, or blobs shared with what the store holds): commit now.
      committer.schedule(name);
      return serveManifest(req, repo, chosen.digest, chosen.cm, 'tag', ttl, false);
    } catch (err) {
      throw upstreamToRegistryError(err, upstream, 'manifest', name, ref);
    }
  };

  const touchDigest = (repo: CacheRepo, digest: string) => {
    for (const [tag, t] of repo.tags) if (t.digest === digest) accessLog.touch(repo, tag);
  };

  const blobHeaders = (digest: string, size: number): Record<string, string> => ({
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest,
    'Content-Length': String(size),
    'Cache-Control': 'public, max-age=31536000, immutable',
  });

  const blob: PullThrough['blob'] = async (req, m, name, digest) => {
    const repo = repoFor(name, m);
    const known = blobSize(repo, digest);
    try {
      // Filled by an earlier pull of this repo but not yet published: serve the verified file.
      if (known !== undefined && (await store.has(digest))) {
        o.metrics.cache.hits.inc();
        const body: Readable | null = req.method === 'HEAD' ? null : createReadStream(l.storeBlob(digest));
        return reply(req.method, 200, blobHeaders(digest, known), body);
      }
      if (m.route.policy === 'Never') throw errors.blobUnknown(name, digest);
      if (req.method === 'HEAD') {
        const head = await m.route.client.headBlob(m.upstreamRepo, digest, requestOpts(req));
        const size = known ?? head.size;
        const headers = blobHeaders(digest, size ?? 0);
        if (size === undefined) delete headers['Content-Length'];
        return reply('HEAD', 200, headers);
      }
      o.metrics.cache.misses.inc();
      const { fill, joined } = fills.fill(digest, known, {
        open: async (signal) => {
          const r = await m.route.client.getBlob(m.upstreamRepo, digest, { signal, headers: requestOpts(req).headers });
          return { body: r.body, size: r.size };
        },
      });
      if (joined) o.metrics.cache.joins.inc();
      fill.done.then(
        () => committer.schedule(name),
        () => {},
      );
      const { size } = await fill.ready;
      return reply('GET', 200, blobHeaders(digest, size), fill.reader());
    } catch (err) {
      throw upstreamToRegistryError(err, m.route.cfg.url, 'blob', name, digest);
    }
  };

  const tagList = async (req: PullThroughRequest, m: RouteMatch, name: string): Promise<{ tags: string[]; stale: boolean }> => {
    const published = await o.index.load(name);
    const cached = () => [...new Set([...(repos.get(name)?.tags.keys() ?? []), ...(published?.sortedTags ?? [])])].sort();
    if (m.route.policy === 'Never') {
      const have = cached();
      if (have.length === 0 && !published) throw errors.nameUnknown(name);
      return { tags: have, stale: false };
    }
    try {
      const upstream = await once(`tags ${name}`, () => m.route.client.listTags(m.upstreamRepo, requestOpts(req)));
      return { tags: [...upstream].sort(), stale: false };
    } catch (err) {
      const have = cached();
      const staleOk = m.route.policy === 'IfNotPresent' || m.route.cfg['stale-on-error'];
      if (have.length && staleOk && isUpstreamDown(err)) {
        o.metrics.cache.stale.inc();
        o.log.warn({ repo: name, err: (err as Error).message }, 'upstream failed; listing the cached tags');
        return { tags: have, stale: true };
      }
      throw upstreamToRegistryError(err, m.route.cfg.url, 'tags', name, 'tags/list');
    }
  };

  const tags: PullThrough['tags'] = async (req, m, name, q) => {
    const { tags: all, stale } = await tagList(req, m, name);
    const page = paginate(all, q.n, q.last, `/v2/${name}/tags/list`);
    const r = jsonReply(req.method, { name, tags: page.items }, page.link);
    if (stale) r.headers.Warning = STALE_WARNING;
    return r;
  };

  return { match, manifest, blob, tags, committer, accessLog, fillMemory: fills.memoryHeld };
}

