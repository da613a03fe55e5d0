// The Hono app for what is neither /v2 nor the embedded file server (serve answers both on its
// node fast path): /metrics, /healthz, /readyz, and the spec's 404 for anything else. serve loads this
// module on the first such request, so start-up doesn't pay for Hono.
import { getRequestListener } from '@hono/node-server';
import { Hono } from 'hono';
import type http from 'node:http';
import { RegistryError } from '../shared/errors.js';
import { errorReply } from './errors.js';
import { healthzResponse, readyzResponse, type ReadinessCheck } from './health.js';
import type { RepoIndex } from './index.js';
import type { Metrics } from './metrics.js';
import type { PullThrough } from './pull-through/pull-through.js';
import { toResponse } from './reply.js';

export interface AppOptions {
  index: RepoIndex;
  metrics: Metrics;
  pullThrough?: PullThrough;
  /** What /readyz checks; without it, ready whenever the process answers. */
  ready?: ReadinessCheck;
}

export function createApp(o: AppOptions): Hono {
  const app = new Hono();
  app.get('/metrics', async () => {
    o.metrics.repos.set(o.index.size());
    if (o.pullThrough) o.metrics.cache.fillMemory.set(o.pullThrough.fillMemory());
    // Tags of the repos in memory only: counting every repo's would mean loading every repo.
    o.metrics.tags.set(o.index.tagCount());
    const registry = await o.metrics.registry();
    return new Response(await registry.metrics(), { headers: { 'Content-Type': registry.contentType } });
  });
  app.get('/healthz', () => healthzResponse());
  app.get('/readyz', () => readyzResponse(o.ready));
  app.notFound((c) => toResponse(errorReply(c.req.method, new RegistryError('NAME_UNKNOWN', 'not found', { path: c.req.path }, 404))));
  return app;
}

/** The app as a node:http request listener. */
export function createFallbackListener(o: AppOptions): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const listener = getRequestListener(createApp(o).fetch);
  return (req, res) => void listener(req, res);
}
