// The pull-through cache on the request path: a miss is fetched from the route's upstream
// (one request per reference or digest, however many clients ask), served while it is stored,
// and committed as an ordinary publish so that the next pull is a static hit. This file wires
// the parts; each request path has its own file.
import { createFillRegistry } from '../../shared/cache/blob-fill.js';
import { openStore } from '../../shared/publish/store.js';
import { isUpstreamError } from '../../shared/registry/errors.js';
import type { Reply } from '../reply.js';
import { createAccessLog, type AccessLog } from './access-log.js';
import { createBlobPath } from './blob-path.js';
import { newCacheRepo, type CacheRepo } from './cache-repo.js';
import { createCommitter, type Committer } from './commit.js';
import type { PullThroughContext, PullThroughOptions, PullThroughRequest } from './context.js';
import { createManifestPath } from './manifest-path.js';
import { createProofs } from './provenance.js';
import { createPullAhead } from './pull-ahead.js';
import { createReferrersPath } from './referrers.js';
import { restoreCacheRepos } from './restore.js';
import { createRoutes, type RouteMatch } from './routes.js';
import { createSingleFlight } from './single-flight.js';
import { createTagListPath } from './tag-list.js';
import { createUpstreamFill } from './upstream-fill.js';

export { STALE_WARNING, type PullThroughOptions, type PullThroughRequest } from './context.js';

export interface PullThrough {
  match(name: string): RouteMatch | undefined;
  manifest(req: PullThroughRequest, m: RouteMatch, name: string, ref: string, kind: 'tag' | 'digest'): Promise<Reply>;
  blob(req: PullThroughRequest, m: RouteMatch, name: string, digest: string): Promise<Reply>;
  /** tags/list: the upstream's list, or what is cached (Never; or stale, when the upstream failed). */
  tags(req: PullThroughRequest, m: RouteMatch, name: string, page: { n?: string; last?: string }): Promise<Reply>;
  /** referrers: from what this cache repo holds; an empty index when nothing refers to the digest. */
  referrers(req: PullThroughRequest, name: string, digest: string, artifactType: string | undefined): Promise<Reply>;
  /**
   * Whether this cache repo's upstream was seen to have the digest (invariant 9). A published
   * blob that is not proven (state committed by an older derrick) takes the blob path, which
   * confirms it at the upstream first, instead of the static redirect.
   */
  proven(name: string, digest: string): boolean;
  committer: Committer;
  accessLog: AccessLog;
  /** Bytes the running fills hold in memory (a gauge). */
  fillMemory(): number;
}

export async function createPullThrough(o: PullThroughOptions): Promise<PullThrough> {
  const l = o.layout;
  const store = await openStore(l);
  const routes = createRoutes(o.config.upstreams, o.override, new Set(o.config.repos.map((r) => r.name)));
  const match = routes.match;
  const repos = new Map<string, CacheRepo>();
  const once = createSingleFlight(() => o.metrics.cache.joins.inc());
  const proofs = createProofs({ layout: l, match, once, timeoutMs: (m) => m.route.cfg.timeout, log: o.log });
  const committer = createCommitter({
    layout: l,
    store,
    repos,
    proofs,
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

  const recommit = await restoreCacheRepos({ layout: l, store, match, repos, committer, proofs, log: o.log });
  const accessLog = createAccessLog(l.cacheAccessFile, repos, o.log);
  await accessLog.restore(repos);
  // Published blobs this cache cannot vouch for: confirm them upstream, unpublish what fails.
  for (const name of recommit) if (match(name)?.route.policy !== 'Never') committer.schedule(name);

  // Say hello to each upstream in the background: it loads the fetch stack and opens a
  // connection before the first client needs one, and logs an unreachable upstream early.
  for (const r of routes.all) {
    if (r.policy === 'Never') continue;
    r.client.ping({ signal: AbortSignal.timeout(10_000) }).catch((err: Error) => {
      const refused = isUpstreamError(err, 'unauthorized') || isUpstreamError(err, 'denied');
      const msg = !refused ? 'upstream not reachable at start' : r.cfg.auth ? 'upstream refused the route credentials at start' : 'upstream needs credentials and the route has no auth';
      o.log.warn({ upstream: r.cfg.url, err: err.message }, msg);
    });
  }

  const c: PullThroughContext = {
    o, store, repos, committer, accessLog, fills, proofs, once,
    repoFor: (name, m) => {
      let r = repos.get(name);
      if (!r) repos.set(name, (r = newCacheRepo(name, m.upstreamRepo)));
      return r;
    },
    requestOpts: (req, m) => ({
      signal: AbortSignal.timeout(m.route.cfg.timeout),
      headers: req.remoteAddress ? { 'X-Forwarded-For': req.remoteAddress } : undefined,
    }),
  };
  const startFill = createUpstreamFill(c);
  return {
    match,
    manifest: createManifestPath(c, createPullAhead(c, startFill)),
    blob: createBlobPath(c, startFill),
    tags: createTagListPath(c),
    referrers: createReferrersPath(c, match),
    proven: (name, digest) => repos.get(name)?.proven.has(digest) ?? false,
    committer,
    accessLog,
    fillMemory: fills.memoryHeld,
  };
}
