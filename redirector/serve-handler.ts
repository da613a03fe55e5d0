// What answers serve's requests once it is listening: the index, the pull-through cache, the
// embedded file server and the /v2 handler, behind one node:http request listener. serve.ts
// imports this module only after its listener is open, so nothing here delays the bind.
import type http from 'node:http';
import type { Config } from '../shared/config.js';
import { errors, RegistryError } from '../shared/errors.js';
import { layout as makeLayout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { createAuthenticator } from './auth.js';
import { errorReply } from './errors.js';
import { createFileHandler, rawPathOf, type FileRequest } from './files.js';
import { createBlobsCheck } from './blobs-check.js';
import { readinessCheck } from './health.js';
import { createRepoIndex, type RepoIndex } from './index.js';
import { createMetrics } from './metrics.js';
import { createOriginResolver, hasRelativeLocation, withOrigin } from './origin.js';
import type { PullThrough } from './pull-through/pull-through.js';
import type { Policy } from './pull-through/routes.js';
import { writeReply, type Reply } from './reply.js';
import { readTarget } from './request-target.js';
import type { UiRequest } from './ui/handler.js';
import { isUiPath } from './ui/path.js';
import { FILES_PREFIX } from './urls.js';
import { createV2Handler } from './v2.js';

export interface ServeHandler {
  handle(req: http.IncomingMessage, res: http.ServerResponse): void;
  index: RepoIndex;
  pullThrough?: PullThrough;
  close(): Promise<void>;
}

export interface HandlerOptions {
  log: Logger;
  /** --no-fetch / --force-fetch: Never / Always for every pull-through route. */
  policy?: Policy;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function fileRequest(method: string, target: string, headers: http.IncomingHttpHeaders, remoteAddress: () => string | undefined): FileRequest {
  const q = target.indexOf('?');
  const query = q === -1 ? undefined : new URLSearchParams(target.slice(q + 1));
  return {
    method,
    rawPath: rawPathOf(target),
    header: (n) => headerValue(headers[n]),
    query: (n) => query?.get(n) ?? undefined,
    remoteAddress,
  };
}

function isV2(target: string): boolean {
  return target.startsWith('/v2/') || target === '/v2' || target.startsWith('/v2?');
}

export async function createServeHandler(config: Config, opts: HandlerOptions): Promise<ServeHandler> {
  const s = config.serve;
  const l = makeLayout(config.root);
  const metrics = createMetrics();
  const { log } = opts;
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
  // The cache's modules (the registry client, undici) load only when upstreams are configured.
  const pullThrough: PullThrough | undefined = config.upstreams.length
    ? await (await import('./pull-through/pull-through.js')).createPullThrough({
        config, layout: l, index, metrics, log, urls, manifests: s.manifests, redirectStatus: s['redirect-status'], override: opts.policy,
      })
    : undefined;
  const auth = createAuthenticator(s.htpasswd);
  // The seam through which the file server learns protection (access.ts); a repo the index
  // doesn't know (unpublished, replaced) answers undefined and is treated as protected.
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
  const v2 = createV2Handler({
    pullThrough,
    index,
    urls,
    manifests: s.manifests,
    redirectStatus: s['redirect-status'],
    anonymous: s.anonymous,
    auth,
    metrics,
    log,
  });
  // serve.blobs as a URL is fetched through once now (logging what is wrong) and again on /readyz.
  const blobsCheck = s.blobs === 'embedded' ? undefined : createBlobsCheck({ urls, index, log });
  void blobsCheck?.();
  const ready = readinessCheck(l, index, blobsCheck);
  const origin = createOriginResolver({ publicUrl: s['public-url'], trustedProxies: s['trusted-proxies'] });

  // /metrics, /healthz and the 404s go through Hono, loaded on the first such request.
  let fallback: Promise<(req: http.IncomingMessage, res: http.ServerResponse) => void> | undefined;
  const viaFallback = (req: http.IncomingMessage, res: http.ServerResponse) => {
    fallback ??= import('./app.js').then((m) => m.createFallbackListener({ index, metrics, pullThrough, ready }));
    fallback.then(
      (listener) => listener(req, res),
      (err: Error) => {
        log.error({ err: err.message }, 'cannot load the HTTP app');
        writeReply(res, errorReply(req.method ?? 'GET', new RegistryError('UNAVAILABLE', 'internal error', undefined, 500)));
      },
    );
  };

  // The catalog page (/ and /ui/...), loaded on its first request like the fallback.
  let ui: Promise<(r: UiRequest) => Promise<Reply>> | undefined;
  const viaUi = (req: http.IncomingMessage, res: http.ServerResponse, method: string, target: string, host: string | undefined) => {
    ui ??= import('./ui/handler.js').then((m) =>
      m.createUiHandler({
        index, auth, anonymous: s.anonymous, log,
        routes: config.upstreams.map((u) => ({ prefix: u.prefix, upstream: u.url })),
        matchRoute: (name) => {
          const m = pullThrough?.match(name);
          return m && { prefix: m.route.cfg.prefix, upstream: m.route.cfg.url, upstreamRepo: m.upstreamRepo };
        },
      }),
    );
    ui.then((h) => h({ method, target, header: (n) => headerValue(req.headers[n]), remoteAddress: () => req.socket.remoteAddress, origin: origin(req, host) }))
      .then((r) => writeReply(res, r))
      .catch((err: Error) => {
        log.error({ err: err.message, target }, 'catalog page failed');
        if (!res.headersSent) res.writeHead(500, { 'Content-Length': '0' });
        res.end();
      });
  };

  /** Redirects to a path (the embedded file server's) leave with an absolute Location. */
  const send = (req: http.IncomingMessage, res: http.ServerResponse, host: string | undefined, r: Reply) => {
    if (!hasRelativeLocation(r)) return writeReply(res, r);
    writeReply(res, withOrigin(r, origin(req, host)));
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const method = req.method ?? 'GET';
    const t = readTarget(req.url ?? '/', req.rawHeaders, req.httpVersionMinor);
    if (!t.ok) return writeReply(res, errorReply(method, errors.badRequest(t.why)));
    const target = t.target;
    // /v2 is the hot path: answered without a framework.
    if (isV2(target)) {
      const r = v2({ method, target, header: (n) => headerValue(req.headers[n]), remoteAddress: () => req.socket.remoteAddress });
      if (r instanceof Promise) {
        r.then((x) => send(req, res, t.host, x)).catch((err: Error) => {
          log.error({ err: err.message, target }, 'cannot send the reply');
          res.destroy();
        });
      } else send(req, res, t.host, r);
      return;
    }
    // The embedded blob server is the other hot path (every redirected blob lands here). It
    // answers every method itself: a write gets its 405 with Allow, not a 404.
    if (files && target.startsWith(FILES_PREFIX + '/')) {
      files(fileRequest(method, target, req.headers, () => req.socket.remoteAddress)).then(
        (r) => writeReply(res, r),
        (err: Error) => {
          log.error({ err: err.message, target }, 'file server failed');
          if (!res.headersSent) res.writeHead(500, { 'Content-Length': '0' });
          res.end();
        },
      );
      return;
    }
    if (isUiPath(target)) return viaUi(req, res, method, target, t.host);
    req.url = target;
    viaFallback(req, res);
  };

  return {
    handle,
    index,
    pullThrough,
    close: async () => {
      await pullThrough?.committer.idle();
      await pullThrough?.accessLog.flush();
      await index.close();
      await auth.close();
    },
  };
}
