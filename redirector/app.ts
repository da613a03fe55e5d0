// The Hono app: /v2 through the framework-free handler, the embedded file server, /metrics,
// /healthz and /readyz.
import { Hono, type Context } from 'hono';
import { RegistryError } from '../shared/errors.js';
import { errorReply } from './errors.js';
import { healthzResponse, readyzResponse, type ReadinessCheck } from './health.js';
import { toResponse, type Reply } from './reply.js';
import { createV2Handler, type V2Options, type V2Request } from './v2.js';

export interface AppOptions extends V2Options {
  /** The embedded file server, mounted at urls.filesPrefix when blobs are embedded. */
  fileServer?: (c: Context) => Promise<Response>;
  /** What /readyz checks; without it, ready whenever the process answers. */
  ready?: ReadinessCheck;
}

/** The request target as sent; behind @hono/node-server that is the raw node request's url. */
function rawTarget(c: Context): string {
  return (c.env as { incoming?: { url?: string } } | undefined)?.incoming?.url ?? c.req.url.replace(/^https?:\/\/[^/]+/, '');
}

export function createApp(o: AppOptions): { app: Hono; v2: (req: V2Request) => Reply | Promise<Reply> } {
  const app = new Hono();
  const v2 = createV2Handler(o);
  const viaHono = async (c: Context) => toResponse(await v2({ method: c.req.method, target: rawTarget(c), header: (n) => c.req.header(n) }));
  app.all('/v2/*', viaHono);
  app.all('/v2', viaHono);
  if (o.fileServer) app.on(['GET', 'HEAD'], `${o.urls.filesPrefix}/*`, o.fileServer);
  app.get('/metrics', async () => {
    o.metrics.repos.set(o.index.size());
    if (o.pullThrough) o.metrics.cache.fillMemory.set(o.pullThrough.fillMemory());
    // Tags of the repos in memory only: counting every repo's would mean loading every repo.
    o.metrics.tags.set(o.index.tagCount());
    return new Response(await o.metrics.registry.metrics(), { headers: { 'Content-Type': o.metrics.registry.contentType } });
  });
  app.get('/healthz', () => healthzResponse());
  app.get('/readyz', () => readyzResponse(o.ready));
  app.notFound((c) => toResponse(errorReply(c.req.method, new RegistryError('NAME_UNKNOWN', 'not found', { path: c.req.path }, 404))));
  return { app, v2 };
}
