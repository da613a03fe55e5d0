// Protocol fixtures for tests: tiny real HTTP(S) servers on 127.0.0.1 that answer like a
// registry, so the client is tested against sockets, headers and status codes, not mocks.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { MediaType, sha256Digest } from '../oci.js';

export interface RecordedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  headers: http.IncomingHttpHeaders;
}

export interface TestServer {
  /** 127.0.0.1:PORT, as a registry option. */
  host: string;
  /** scheme://127.0.0.1:PORT */
  origin: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void | Promise<void>;

export async function startServer(handler: Handler, tls?: { key: string; cert: string }): Promise<TestServer> {
  const requests: RecordedRequest[] = [];
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  };
  const server = tls ? https.createServer(tls, listener) : http.createServer(listener);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    origin: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(bytes.length), ...headers });
  res.end(bytes);
}

/** A distribution-spec error body, as distribution itself sends it. */
export function sendError(res: http.ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}) {
  sendJson(res, status, { errors: [{ code, message, detail: null }] }, headers);
}

export interface FakeRepo {
  /** tag -> manifest digest */
  tags: Record<string, string>;
  manifests: Record<string, { bytes: Buffer; mediaType: string }>;
  blobs: Record<string, Buffer>;
}

/** A one-layer image: its manifest, config and layer, each with its digest. */
export function fakeImage(seed = 'hello') {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layer = Buffer.from(`layer bytes for ${seed}`);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256Digest(config), size: config.length },
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: sha256Digest(layer), size: layer.length }],
    }),
  );
  return {
    manifest,
    manifestDigest: sha256Digest(manifest),
    config,
    configDigest: sha256Digest(config),
    layer,
    layerDigest: sha256Digest(layer),
  };
}

export function repoOf(images: Record<string, ReturnType<typeof fakeImage>>): FakeRepo {
  const repo: FakeRepo = { tags: {}, manifests: {}, blobs: {} };
  for (const [tag, img] of Object.entries(images)) {
    repo.tags[tag] = img.manifestDigest;
    repo.manifests[img.manifestDigest] = { bytes: img.manifest, mediaType: MediaType.ociManifest };
    repo.blobs[img.configDigest] = img.config;
    repo.blobs[img.layerDigest] = img.layer;
  }
  return repo;
}

export interface RegistryRoutesOptions {
  /** Send Docker-Content-Digest on manifest responses (default true); some registries do not. */
  contentDigest?: boolean;
}

/** Read-only distribution routes over in-memory repos: /v2/, tags/list, manifests, blobs. */
export function registryRoutes(repos: Record<string, FakeRepo>, opts: RegistryRoutesOptions = {}): Handler {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const head = req.method === 'HEAD';
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    const m = /^\/v2\/(.+)\/(tags\/list|manifests|blobs)(?:\/([^/]+))?$/.exec(url.pathname);
    const repo = m ? repos[m[1]!] : undefined;
    if (!m || !repo) return sendError(res, 404, 'NAME_UNKNOWN', 'repository name not known to registry');
    const [, name, kind, ref = ''] = m;
    if (kind === 'tags/list') return sendJson(res, 200, { name, tags: Object.keys(repo.tags) });
    if (kind === 'manifests') {
      const digest = repo.tags[ref] ?? ref;
      const man = repo.manifests[digest];
      if (!man) return sendError(res, 404, 'MANIFEST_UNKNOWN', 'manifest unknown');
      const headers: Record<string, string> = { 'Content-Type': man.mediaType, 'Content-Length': String(man.bytes.length) };
      if (opts.contentDigest !== false) headers['Docker-Content-Digest'] = digest;
      res.writeHead(200, headers);
      return void res.end(head ? undefined : man.bytes);
    }
    const blob = repo.blobs[ref];
    if (!blob) return sendError(res, 404, 'BLOB_UNKNOWN', 'blob unknown to registry');
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.length), 'Docker-Content-Digest': ref });
    res.end(head ? undefined : blob);
  };
}
