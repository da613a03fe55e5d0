// Prometheus metrics for the redirector. The request path and the index only bump plain numbers
// here; prom-client (and @opentelemetry/api under it, ~100 modules, a fifth of serve's start-up
// CPU) loads on the first scrape of /metrics, which turns those numbers into its registry.
import type client from 'prom-client';

/**
 * A counter for the request path: a plain number per label set. prom-client's own inc() hashes
 * the label set on every call, which showed up at tens of thousands of redirects a second.
 */
export interface HotCounter {
  /** The increment function for one label set, looked up once by the caller. */
  child(...values: string[]): () => void;
}

interface Labelled {
  labels: Record<string, string>;
  n: number;
}

function hotCounter(labelNames: readonly string[]) {
  const counts = new Map<string, Labelled>();
  const counter: HotCounter = {
    child(...values) {
      const key = values.join('\u0000');
      let c = counts.get(key);
      if (!c) counts.set(key, (c = { labels: Object.fromEntries(labelNames.map((l, i) => [l, values[i]!])), n: 0 }));
      const entry = c;
      return () => void entry.n++;
    },
  };
  return { counter, counts };
}

/** A counter or gauge without labels: a number until scraped. */
export interface Plain {
  inc(by?: number): void;
  set(v: number): void;
  value(): number;
}

function plain(): Plain {
  let n = 0;
  return { inc: (by = 1) => void (n += by), set: (v) => void (n = v), value: () => n };
}

/**
 * Observations wait here until the first scrape builds the histogram, then go straight to it.
 * The wait is bounded: a server never scraped keeps the latest PENDING_MAX (reloads are rare).
 */
const PENDING_MAX = 10_000;

function lazyHistogram() {
  let real: client.Histogram | undefined;
  let pending: number[] = [];
  return {
    observe: (v: number) => {
      if (real) return real.observe(v);
      if (pending.length >= PENDING_MAX) pending.shift();
      pending.push(v);
    },
    attach: (h: client.Histogram) => {
      for (const v of pending) h.observe(v);
      pending = [];
      real = h;
    },
  };
}

const RELOAD_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30];

export function createMetrics() {
  const requests = hotCounter(['route', 'method', 'status']);
  const redirects = hotCounter(['kind']);
  const reloadLatency = lazyHistogram();
  const m = {
    requests: requests.counter,
    redirects: redirects.counter,
    repos: plain(),
    tags: plain(),
    reloadErrors: plain(),
    reloadLatency: { observe: reloadLatency.observe },
    cache: {
      hits: plain(),
      misses: plain(),
      stale: plain(),
      joins: plain(),
      upstreamBytes: plain(),
      evictions: plain(),
      fillMemory: plain(),
    },
  };

  const build = async (): Promise<client.Registry> => {
    const { default: prom } = await import('prom-client');
    const registry = new prom.Registry();
    const labelled = (name: string, help: string, labelNames: string[], counts: Map<string, Labelled>) =>
      new prom.Counter({
        name, help, labelNames, registers: [registry],
        collect() {
          this.reset();
          for (const c of counts.values()) this.inc(c.labels, c.n);
        },
      });
    const mirror = (kind: 'counter' | 'gauge', name: string, help: string, p: Plain) => {
      const Metric = kind === 'counter' ? prom.Counter : prom.Gauge;
      new Metric({
        name, help, registers: [registry],
        collect() {
          this.reset();
          if (kind === 'counter') (this as client.Counter).inc(p.value());
          else (this as client.Gauge).set(p.value());
        },
      });
    };
    labelled('derrick_http_requests_total', 'Requests by route and status', ['route', 'method', 'status'], requests.counts);
    labelled('derrick_redirects_total', 'Redirects handed out, by kind (blob, manifest, tags)', ['kind'], redirects.counts);
    mirror('gauge', 'derrick_repos_indexed', 'Published repos (names in the app dir and crane data)', m.repos);
    mirror('gauge', 'derrick_tags_indexed', 'Tags of the repos loaded in memory', m.tags);
    mirror('counter', 'derrick_redirect_file_errors_total', 'Redirect files rejected', m.reloadErrors);
    reloadLatency.attach(
      new prom.Histogram({
        name: 'derrick_reload_latency_seconds', help: 'From the app symlink swap to the new publish being served', buckets: RELOAD_BUCKETS, registers: [registry],
      }),
    );
    const c = m.cache;
    mirror('counter', 'derrick_cache_hits_total', 'Pull-through requests answered from the cache', c.hits);
    mirror('counter', 'derrick_cache_misses_total', 'Pull-through fetches from an upstream', c.misses);
    mirror('counter', 'derrick_cache_stale_total', 'Cached tags served stale because the upstream failed', c.stale);
    mirror('counter', 'derrick_cache_singleflight_joins_total', 'Requests that joined a fetch already in flight', c.joins);
    mirror('counter', 'derrick_cache_upstream_bytes_total', 'Blob bytes fetched from upstreams and verified', c.upstreamBytes);
    mirror('counter', 'derrick_cache_evictions_total', 'Cached images evicted above cache.max-size', c.evictions);
    mirror('gauge', 'derrick_cache_fill_memory_bytes', 'Bytes blob fills hold in memory for their readers', c.fillMemory);
    return registry;
  };
  let registry: Promise<client.Registry> | undefined;
  /** The prom-client registry, built (and prom-client loaded) on the first call. */
  const getRegistry = () => (registry ??= build().catch((err: unknown) => ((registry = undefined), Promise.reject(err))));
  return { ...m, registry: getRegistry };
}

export type Metrics = ReturnType<typeof createMetrics>;
