// What the pull-through request paths (manifests, blobs, tags, referrers) share: the options,
// the store, the cached repos and the machinery around them. Built once by createPullThrough.
import type { FillRegistry } from '../../shared/cache/blob-fill.js';
import type { Config } from '../../shared/config.js';
import type { Layout } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import type { Store } from '../../shared/publish/store.js';
import type { RepoIndex } from '../index.js';
import type { Metrics } from '../metrics.js';
import type { UrlOptions } from '../urls.js';
import type { AccessLog } from './access-log.js';
import type { CacheRepo } from './cache-repo.js';
import type { Committer } from './commit.js';
import type { Proofs } from './provenance.js';
import type { Policy, RouteMatch } from './routes.js';
import type { SingleFlight } from './single-flight.js';

/**
 * The distribution spec's warning for an answer the registry could not confirm (code 299,
 * agent "-"): the cached copy, served because the upstream failed.
 */
export const STALE_WARNING = '299 - "Response is stale: the upstream failed, this is the cached copy"';

export interface PullThroughRequest {
  method: string;
  remoteAddress?: string;
  accept: Set<string> | null;
  ifNoneMatch?: string;
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

export interface PullThroughContext {
  o: PullThroughOptions;
  store: Store;
  repos: Map<string, CacheRepo>;
  committer: Committer;
  accessLog: AccessLog;
  fills: FillRegistry;
  proofs: Proofs;
  once: SingleFlight;
  /** The cached repo for a name, created empty on first use. */
  repoFor(name: string, m: RouteMatch): CacheRepo;
  /** Options for one upstream request on behalf of a client: the route's timeout, X-Forwarded-For. */
  requestOpts(req: PullThroughRequest, m: RouteMatch): { signal: AbortSignal; headers?: Record<string, string> };
}
