// Prometheus metrics for the redirector, on a registry of their own (one per app instance).
import client from 'prom-client';

export function createMetrics() {
  const registry = new client.Registry();
  const requests = new client.Counter({
    name: 'derrick_http_requests_total',
    help: 'Requests by route and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  const redirects = new client.Counter({
    name: 'derrick_redirects_total',
    help: 'Redirects handed out, by kind (blob, manifest)',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const repos = new client.Gauge({ name: 'derrick_repos_indexed', help: 'Repos in the index', registers: [registry] });
  const tags = new client.Gauge({ name: 'derrick_tags_indexed', help: 'Tags in the index', registers: [registry] });
  const reloadErrors = new client.Counter({ name: 'derrick_redirect_file_errors_total', help: 'Redirect files rejected', registers: [registry] });
  const reloadLatency = new client.Histogram({
    name: 'derrick_reload_latency_seconds',
    help: 'From the app symlink swap to the new publish being served',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30],
    registers: [registry],
  });
  const counter = (name: string, help: string) => new client.Counter({ name, help, registers: [registry] });
  const cache = {
    hits: counter('derrick_cache_hits_total', 'Pull-through requests answered from the cache'),
    misses: counter('derrick_cache_misses_total', 'Pull-through fetches from an upstream'),
    stale: counter('derrick_cache_stale_total', 'Cached tags served stale because the upstream failed'),
    joins: counter('derrick_cache_singleflight_joins_total', 'Requests that joined a fetch already in flight'),
    upstreamBytes: counter('derrick_cache_upstream_bytes_total', 'Blob bytes fetched from upstreams and verified'),
    evictions: counter('derrick_cache_evictions_total', 'Cached images evicted above cache.max-size'),
  };
  return { registry, requests, redirects, repos, tags, reloadErrors, reloadLatency, cache };
}

export type Metrics = ReturnType<typeof createMetrics>;
