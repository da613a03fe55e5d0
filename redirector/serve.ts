// `derrick serve`: listen first, then build what answers (serve-handler.ts) while early requests
// wait for it; graceful shutdown. This module imports nothing heavy, so the port is bound (or
// its failure reported) before the index, the cache or any framework is loaded.
import http from 'node:http';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import { listen, splitListen } from './listen.js';
import { createListener } from './listener.js';
import type { RepoIndex } from './index.js';
import type { PullThrough } from './pull-through/pull-through.js';
import type { Policy } from './pull-through/routes.js';
import type { ServeHandler } from './serve-handler.js';

export { ListenError, splitListen } from './listen.js';
export { FILES_PREFIX } from './urls.js';

export interface RunningServer {
  url: string;
  port: number;
  index: RepoIndex;
  pullThrough?: PullThrough;
  /** SIGHUP: re-read serve.tls's pair for new connections (listener.ts). */
  reloadTls(): Promise<boolean>;
  close(): Promise<void>;
}

export interface ServeOptions {
  listen?: string;
  log: Logger;
  /** --no-fetch / --force-fetch: Never / Always for every pull-through route. */
  policy?: Policy;
}

type Listener = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** Resolves once the server answers; its port is open, and requests are held, from the start. */
export async function startServer(config: Config, opts: ServeOptions): Promise<RunningServer> {
  const address = opts.listen ?? config.serve.listen;
  // Until the handler exists, requests wait in arrival order (a client's connect succeeds at once).
  const early: Array<[http.IncomingMessage, http.ServerResponse]> = [];
  const hold: Listener = (req, res) => void early.push([req, res]);
  // A missing Host is refused by request-target.ts, with the spec's JSON, rather than by node
  // (createListener turns node's own check off). A bad TLS pair fails here, before the bind.
  const { server, scheme, reloadTls } = await createListener(config.serve.tls, opts.log);
  server.on('request', hold);
  server.keepAliveTimeout = 65_000;
  const port = await listen(server, address);
  const closeServer = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });

  let handler: ServeHandler;
  try {
    const { createServeHandler } = await import('./serve-handler.js');
    handler = await createServeHandler(config, { log: opts.log, policy: opts.policy });
  } catch (err) {
    for (const [, res] of early) res.writeHead(503, { 'Content-Length': '0', Connection: 'close' }).end();
    await closeServer();
    throw err;
  }
  server.off('request', hold).on('request', handler.handle);
  for (const [req, res] of early.splice(0)) handler.handle(req, res);

  const { host } = splitListen(address);
  return {
    url: `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    index: handler.index,
    pullThrough: handler.pullThrough,
    reloadTls,
    close: async () => {
      await handler.close();
      await closeServer();
    },
  };
}
