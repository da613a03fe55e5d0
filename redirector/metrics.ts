// Prometheus metrics for the redirector, on a registry of their own (one per app instance).
import client from 'prom-client';

/**
 * A counter for the request path: a plain number per label set, handed to prom-client only when
 * /metrics is scraped. prom-client's own inc() hashes the label set on every call, which showed
 * up at tens of thousands of redirects a second.
 */
export interface HotCounter {
  /** The increment function for one label set, looked up once by the caller. */
  child(...values: string[]): () => void;
}

function hotCounter(registry: client.Registry, name: string, help: string, labelNames: readonly string[]): HotCounter {
  const counts = new Map<string, { labels: Record<string, string>; n: number }>();
  new client.Counter({
    name,
    help,
    labelNames,
    registers: [registry],
    collect() {
      this.reset();
      for (const c of counts.values()) this.inc(c.labels, c.n);
    },
  });
  return {
    child(...values) {
      const key = values.join('\u0000');
      let c = counts.get(key);
      if (!c) counts.set(key, (c = { labels: Object.fromEntries(labelNames.map((l, i) => [l, values[i]!])), n: 0 }));
      const entry = c;
      return () => void entry.n++;
    },
  };
}

export function createMetrics() {
  const registry = new client.Registry();
  const requests = hotCounter(registry, 'derrick_http_requests_total', 'Requests by route and status', ['route', 'method', 'status']);
  const redirects = hotCounter(registry, 'derrick_redirects_total', 'Redirects handed out, by kind (blob, manifest, tags)', ['kind']);
  const repos = new client.Gauge({ name: 'derrick_repos_indexed', help: 'Published repos (names in the app dir and crane data)', registers: [registry] });
  const tags = new client.Gauge({ name: 'derrick_tags_indexed', help: 'Tags of the repos loaded in memory', registers: [registry] });
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
    fillMemory: new client.Gauge({ name: 'derrick_cache_fill_memory_bytes', help: 'Bytes blob fills hold in memory for their readers', registers: [registry] }),
  };
  return { registry, requests, redirects, repos, tags, reloadErrors, reloadLatency, cache };
}

export type Metrics = ReturnType<typeof createMetrics>;
