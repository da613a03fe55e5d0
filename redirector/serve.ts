// `derrick serve`: index + app + HTTP server, with graceful shutdown.
import { getRequestListener } from '@hono/node-server';
import http from 'node:http';
import type { Config } from '../shared/config.js';
import { layout as makeLayout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { createApp } from './app.js';
import { createAuthenticator } from './auth.js';
import { createFileHandler, honoFileServer, rawPathOf, type FileRequest } from './files.js';
import { readinessCheck } from './health.js';
import { createRepoIndex, type RepoIndex } from './index.js';
import { createListener } from './listener.js';
import { createMetrics } from './metrics.js';
import { createPullThrough, type PullThrough } from './pull-through/pull-through.js';
import type { Policy } from './pull-through/routes.js';
import { writeReply } from './reply.js';

export const FILES_PREFIX = '/published';

export interface RunningServer {
  url: string;
  port: number;
  index: RepoIndex;
  pullThrough?: PullThrough;
  /** SIGHUP: re-reads serve.tls's certificate and key; false (and logged) when the old pair stays. */
  reloadTls(): Promise<boolean>;
  close(): Promise<void>;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function fileRequest(method: string, url: string, headers: http.IncomingHttpHeaders, remoteAddress: () => string | undefined): FileRequest {
  const q = url.indexOf('?');
  const query = q === -1 ? undefined : new URLSearchParams(url.slice(q + 1));
  return {
    method,
    rawPath: rawPathOf(url),
    header: (n) => headerValue(headers[n]),
    query: (n) => query?.get(n) ?? undefined,
    remoteAddress,
  };
}

export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(listen.slice(i + 1)) };
}

export interface ServeOptions {
  listen?: string;
  log: Logger;
  /** --no-fetch / --force-fetch: Never / Always for every pull-through route. */
  policy?: Policy;
}

export async function startServer(config: Config, opts: ServeOptions): Promise<RunningServer> {
  const s = config.serve;
  const l = makeLayout(config.root);
  const metrics = createMetrics();
  const { log } = opts;
  const { server, scheme, reloadTls } = await createListener(s.tls, log);
  const index = await createRepoIndex({
    layout: l,
    craneData: s['crane-data'],
    graceMs: config.grace,
    rescanMs: s['rescan-interval'],
    memoryBound: s['index-memory'],
    manifestCache: s['manifest-cache'],
    maxFileSize: s['max-redirect-file'],
    protectedNames: new Set(config.repos.filter((r) => r.protected).map((r) => r.name)),
    log,
    events: {
      onLoaded: (repo, ms) => {
        if (ms !== undefined && ms >= 0) metrics.reloadLatency.observe(ms / 1000);
        log.info({ repo: repo.name, master: repo.current.master, swapToServedMs: ms }, 'repo loaded');
      },
      onError: () => metrics.reloadErrors.inc(),
    },
  });
  const secret = s.signing ? process.env[s.signing['secret-env']] : undefined;
  const urls = {
    blobs: s.blobs,
    filesPrefix: FILES_PREFIX,
    signing: secret && s.signing ? { secret, ttlMs: s.signing.ttl } : undefined,
  };
  const pullThrough: PullThrough | undefined = config.upstreams.length
    ? await createPullThrough({
        config, layout: l, index, metrics, log, urls, manifests: s.manifests, redirectStatus: s['redirect-status'], override: opts.policy,
      })
    : undefined;
  const auth = createAuthenticator(s.htpasswd);
  // The seam through which the file server learns protection; a repo the index doesn't know
  // (unpublished, replaced, not loaded) answers undefined and is treated as protected.
  const isProtected = (name: string) => {
    const loaded = index.peek(name);
    if (loaded) return loaded.protected;
    return index.has(name) ? index.load(name).then((r) => r?.protected) : undefined;
  };
  const files =
    s.blobs === 'embedded'
      ? createFileHandler({ publishedDir: l.publishedDir, prefix: FILES_PREFIX, signingSecret: secret, access: { anonymous: s.anonymous, isProtected, auth } })
      : undefined;
  if (!secret && s.blobs !== 'embedded' && auth.hasUsers) {
    log.warn(
      { blobs: s.blobs },
      'serve.blobs is another server and serve.signing is off: clients resend credentials only to the same host:port, so protected blobs need that server behind the same origin as /v2 (nginx-conf --proxy) or signed URLs',
    );
  }
  const { app, v2 } = createApp({
    pullThrough,
    index,
    urls,
    manifests: s.manifests,
    redirectStatus: s['redirect-status'],
    anonymous: s.anonymous,
    auth,
    metrics,
    log,
    fileServer: files && honoFileServer(files),
    ready: readinessCheck(l, index),
  });
  const hono = getRequestListener(app.fetch);
  // /v2 is the hot path: answered by the same handler Hono uses, minus the Fetch API round trip.
  const handler: http.RequestListener = (req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/v2/') || url === '/v2' || url.startsWith('/v2?')) {
      const r = v2({ method: req.method ?? 'GET', target: url, header: (n) => headerValue(req.headers[n]), remoteAddress: () => req.socket.remoteAddress });
      if (r instanceof Promise) void r.then((x) => writeReply(res, x));
      else writeReply(res, r);
      return;
    }
    // The embedded blob server is the other hot path (every redirected blob lands here).
    if (files && url.startsWith(FILES_PREFIX + '/') && (req.method === 'GET' || req.method === 'HEAD')) {
      files(fileRequest(req.method, url, req.headers, () => req.socket.remoteAddress)).then(
        (r) => writeReply(res, r),
        (err: Error) => {
          log.error({ err: err.message, url }, 'file server failed');
          if (!res.headersSent) res.writeHead(500, { 'Content-Length': '0' });
          res.end();
        },
      );
      return;
    }
    void hono(req, res);
  };
  server.on('request', handler);
  const { host, port } = splitListen(opts.listen ?? s.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.keepAliveTimeout = 65_000;
  const addr = server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  return {
    url: `${scheme}://${host.includes(':') ? `[${host}]` : host}:${boundPort}`,
    port: boundPort,
    index,
    pullThrough,
    reloadTls,
    close: async () => {
      await pullThrough?.committer.idle();
      await pullThrough?.accessLog.flush();
      await index.close();
      await auth.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    },
  };
}
