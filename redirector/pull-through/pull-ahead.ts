// Pull-ahead: when the cache serves an image manifest it has not published, it starts filling the
// image's blobs (config first, then the layers in manifest order) without waiting for the client
// to ask. A client that fetches a few layers at a time (docker: 3) then finds the later ones
// already streaming or stored, and a link one TCP connection cannot fill is used by several.
//
// Each blob goes through the same single-flight fill as a client's request, so a client asking
// for it joins the running fill: still one upstream GET per blob. Per route at most
// `concurrency - 1` pull-ahead fills run at once (the route's upstream requests are capped at
// `concurrency`; one slot stays free for the client's own manifest and blob requests), and the
// fills share the fill memory budget with everything else. A fill nobody reads holds almost no
// memory: its bytes go to the temp file. The cost: when a client only wanted the manifest
// (an `inspect`), the image's blobs are fetched from the upstream and stored anyway.
import { existsSync } from 'node:fs';
import type { CachedManifest, CacheRepo } from './cache-repo.js';
import { isForeign } from './cache-repo.js';
import type { PullThroughContext } from './context.js';
import type { Route, RouteMatch } from './routes.js';
import type { UpstreamFill } from './upstream-fill.js';

export type PullAhead = (m: RouteMatch, repo: CacheRepo, cm: CachedManifest, headers: Record<string, string> | undefined) => void;

interface Job {
  m: RouteMatch;
  name: string;
  digest: string;
  size: number;
  headers: Record<string, string> | undefined;
}

interface RouteQueue {
  jobs: Job[];
  running: number;
  /** `${repo}@${digest}` queued or running, so a manifest served twice queues its blobs once. */
  keys: Set<string>;
}

export function createPullAhead(c: PullThroughContext, startFill: UpstreamFill): PullAhead {
  const queues = new WeakMap<Route, RouteQueue>();

  const pump = (q: RouteQueue, cap: number) => {
    while (q.running < cap && q.jobs.length) {
      const job = q.jobs.shift()!;
      q.running++;
      void runJob(job).finally(() => {
        q.running--;
        q.keys.delete(`${job.name}@${job.digest}`);
        pump(q, cap);
      });
    }
  };

  const runJob = async (j: Job): Promise<void> => {
    try {
      // Stored already (for this repo or another): the client's request proves and serves it.
      // Checked synchronously, in the same tick as the fill lookup: a fill renames its file into
      // the store before it leaves the registry, so a blob is always seen either stored or
      // filling. An await between the two let a fill finish unseen and the blob be fetched twice.
      if (existsSync(c.o.layout.storeBlob(j.digest))) return;
      const started = await startFill(j.m, j.name, j.digest, j.size, j.headers);
      // Stored by another worker while this one waited, or another repo's fill: its bytes prove
      // nothing here, so waiting on it would only hold a slot.
      if (started === 'stored' || started.foreignOwner) return;
      await started.fill.done;
    } catch (err) {
      // The client's own request for the blob reports the failure; here it is only noted.
      c.o.log.debug({ repo: j.name, digest: j.digest, err: (err as Error).message }, 'pull-ahead fill failed');
    }
  };

  return (m, repo, cm, headers) => {
    if (!m.route.cfg['pull-ahead'] || m.route.policy === 'Never' || cm.children) return;
    let q = queues.get(m.route);
    if (!q) queues.set(m.route, (q = { jobs: [], running: 0, keys: new Set() }));
    // cm.blobs is the config, then the layers in order: the order clients read them.
    for (const b of cm.blobs) {
      const key = `${repo.name}@${b.digest}`;
      if (isForeign(b) || q.keys.has(key)) continue;
      q.keys.add(key);
      q.jobs.push({ m, name: repo.name, digest: b.digest, size: b.size, headers });
    }
    pump(q, Math.max(1, m.route.cfg.concurrency - 1));
  };
}
