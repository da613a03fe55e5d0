// Which upstream serves a repo name: clients pull <prefix>/<upstream-repo>.
import picomatch from 'picomatch';
import type { UpstreamConfig } from '../../shared/config.js';
import { authPassword } from '../../shared/config.js';
import { createRegistryClient, type RegistryClient } from '../../shared/registry/client.js';

export type Policy = 'Never' | 'Always' | 'IfNotPresent';

export interface Route {
  cfg: UpstreamConfig;
  client: RegistryClient;
  policy: Policy;
}

export interface RouteMatch {
  route: Route;
  /** The repository name at the upstream. */
  upstreamRepo: string;
}

export const USER_AGENT = 'derrick/0.1 (pull-through)';

export interface Routes {
  match(name: string): RouteMatch | undefined;
  all: Route[];
}

/**
 * `published`: the names of `repos:` in the config. Such a name is never a cache repo, even under
 * a route's prefix: its publisher owns its state and its protection, and the cache must neither
 * serve it from the upstream nor republish (or unpublish) it as its own.
 */
export function createRoutes(upstreams: UpstreamConfig[], override?: Policy, published: ReadonlySet<string> = new Set()): Routes {
  const routes = upstreams.map((cfg) => {
    const url = new URL(cfg.url);
    const route: Route = {
      cfg,
      policy: override ?? cfg.policy,
      client: createRegistryClient({
        registry: url.host,
        scheme: url.protocol === 'http:' ? 'http' : 'https',
        tlsVerify: cfg['tls-verify'],
        username: cfg.auth?.username,
        password: authPassword(cfg.auth),
        concurrency: cfg.concurrency,
        userAgent: USER_AGENT,
        // On the request path a client is waiting: report (or serve stale) at once, let it retry.
        retries: 0,
      }),
    };
    const include = picomatch(cfg.include, { dot: true });
    const exclude = cfg.exclude.length ? picomatch(cfg.exclude, { dot: true }) : () => false;
    return { prefix: cfg.prefix + '/', route, include, exclude };
  });
  return {
    all: routes.map((r) => r.route),
    match: (name) => {
      if (published.has(name)) return undefined;
      for (const r of routes) {
        if (!name.startsWith(r.prefix)) continue;
        const upstreamRepo = name.slice(r.prefix.length);
        if (upstreamRepo && r.include(upstreamRepo) && !r.exclude(upstreamRepo)) return { route: r.route, upstreamRepo };
      }
      return undefined;
    },
  };
}
