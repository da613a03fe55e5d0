// Fixtures for the pull-through cache e2e tests: seeded images on a real docker-registry,
// derrick.yaml with upstreams, `derrick serve` with extra CLI flags (--no-fetch / --force-fetch),
// a header-recording proxy, /metrics parsing, polling and store/published-tree inspection.
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { generateImage, type GenerateImageOptions, type GeneratedImage } from '../../scripts/gen-image.js';
import { layout } from '../../shared/layout.js';
import { ACCEPT_ALL_MANIFESTS, sha256Digest } from '../../shared/oci.js';
import { CLI, type ServeProcess } from './derrick.js';
import { rawRequest, type RawResponse } from './http.js';
import { freePort } from './ports.js';
import { run, startProcess, waitForHttp, type RunningProcess } from './proc.js';
import { listTree } from './walk.js';
import type { Registry } from './registry.js';
import { SKOPEO_BIN, fetchManifest, seedRegistry } from './skopeo.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Upstream images

export interface SeededImage {
  /** Repository on the upstream registry, e.g. cw/app. */
  repo: string;
  tag: string;
  /** What the upstream serves for the tag (Docker-Content-Digest with every type accepted). */
  digest: string;
  mediaType: string;
  /** The manifest (or index) bytes as the upstream serves them. */
  body: Buffer;
  gen: GeneratedImage;
  /** Every config and layer digest of every platform. */
  blobs: string[];
  /** Every manifest digest: the top one and, for an index, its children. */
  manifests: string[];
  /** The OCI layout the image was generated into. */
  layoutDir: string;
}

/**
 * Generates an image into `<workDir>/layouts/<repo with / as _>` and pushes it to
 * `<registry>/<repo>:<tag>` with skopeo (every platform).
 */
export async function seedImage(
  registry: Registry,
  workDir: string,
  repo: string,
  opts: Omit<GenerateImageOptions, 'layoutDir'>,
): Promise<SeededImage> {
  const layoutDir = path.join(workDir, 'layouts', repo.replaceAll('/', '_'));
  const gen = await generateImage({ ...opts, layoutDir });
  const digest = await seedRegistry(registry.host, repo, layoutDir, opts.tag, { all: true });
  const m = await fetchManifest(registry.host, repo, opts.tag);
  const manifests = [digest, ...(opts.platforms ? gen.manifests.map((c) => c.digest) : [])];
  return { repo, tag: opts.tag, digest, mediaType: m.mediaType, body: m.body, gen, blobs: gen.blobs, manifests, layoutDir };
}

/** PUT a manifest to an (auth-less) registry: moves a tag without pushing anything else. */
export async function putManifest(registryUrl: string, repo: string, ref: string, body: Buffer, mediaType: string): Promise<void> {
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'Content-Type': mediaType }, body });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`PUT ${repo}:${ref}: HTTP ${res.status} ${text}`);
}

// ---------------------------------------------------------------------------------------------
// derrick.yaml

export interface RouteOptions {
  prefix: string;
  /** http://127.0.0.1:PORT of the registry (or of a proxy in front of it). */
  url: string;
  tagTtl?: string;
  policy?: 'Never' | 'Always' | 'IfNotPresent';
  staleOnError?: boolean;
  include?: string[];
  exclude?: string[];
  /** upstreams[].timeout, e.g. "1s". */
  timeout?: string;
  /** derrick's own credentials for the upstream (the password from this environment variable). */
  auth?: { username: string; passwordEnv: string };
  /** upstreams[].pull-ahead (default true). */
  pullAhead?: boolean;
}

export interface PtConfigOptions {
  /** Default ./var (relative to the config file). */
  root?: string;
  routes: RouteOptions[];
  /** cache.max-size: bytes or "50MiB". */
  maxSize?: number | string;
  /** Ordinary published repos (`derrick publish`). */
  repos?: Array<{ name: string; from: string; protected?: boolean }>;
  grace?: string;
  /** serve.htpasswd (needed when a repo is protected). */
  htpasswd?: string;
}

export function ptConfigYaml(o: PtConfigOptions): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [`root: ${q(o.root ?? './var')}`, `grace: ${o.grace ?? '10m'}`];
  if (o.repos?.length) {
    lines.push('repos:');
    for (const r of o.repos) {
      lines.push(`  - name: ${r.name}`, `    from: ${q(r.from)}`);
      if (r.protected) lines.push('    protected: true');
    }
  }
  lines.push('upstreams:');
  for (const r of o.routes) {
    lines.push(`  - prefix: ${r.prefix}`, `    url: ${q(r.url)}`, '    tls-verify: false');
    lines.push(`    tag-ttl: ${r.tagTtl ?? '2s'}`, `    policy: ${r.policy ?? 'IfNotPresent'}`);
    if (r.staleOnError !== undefined) lines.push(`    stale-on-error: ${r.staleOnError}`);
    if (r.auth) lines.push(`    auth: { username: ${q(r.auth.username)}, password-env: ${r.auth.passwordEnv} }`);
    if (r.include) lines.push(`    include: ${JSON.stringify(r.include)}`);
    if (r.exclude) lines.push(`    exclude: ${JSON.stringify(r.exclude)}`);
    if (r.timeout) lines.push(`    timeout: ${r.timeout}`);
    if (r.pullAhead !== undefined) lines.push(`    pull-ahead: ${r.pullAhead}`);
  }
  if (o.maxSize !== undefined) lines.push('cache:', `  max-size: ${typeof o.maxSize === 'number' ? o.maxSize : q(o.maxSize)}`);
  lines.push('serve:', '  listen: 127.0.0.1:0');
  if (o.htpasswd) lines.push(`  htpasswd: ${q(o.htpasswd)}`);
  return lines.join('\n') + '\n';
}

/** Writes `<dir>/<name>` and returns its path. */
export async function writePtConfig(dir: string, name: string, o: PtConfigOptions): Promise<string> {
  const file = path.join(dir, name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(file, ptConfigYaml(o));
  return file;
}

// ---------------------------------------------------------------------------------------------
// derrick serve with extra flags

export interface PtServe extends ServeProcess {
  /** The process's stdout+stderr so far, for assertion messages. */
  output(): string;
}

/** `node dist/cli.js serve -c FILE --listen 127.0.0.1:<free port> ...extraArgs`; retries a port race. */
export async function startPtServe(configFile: string, extraArgs: string[] = [], env: Record<string, string | undefined> = {}): Promise<PtServe> {
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const proc: RunningProcess = startProcess(process.execPath, [CLI, 'serve', '-c', configFile, '--listen', `127.0.0.1:${port}`, ...extraArgs], {
      env: { DERRICK_LOG_LEVEL: 'info', ...env },
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForHttp(`${url}/v2/`, 15_000, { proc });
      // With --workers the port answers as soon as the first worker listens; the line comes once
      // every worker does, and a test that counts workers must not start before it.
      await pollUntil(async () => proc.output().includes('derrick serve: listening on') || !proc.alive(), 15_000, 'serve to print its listening line');
      return { url, host: `127.0.0.1:${port}`, proc, stop: () => proc.stop(), output: () => proc.output() };
    } catch (err) {
      lastErr = err;
      await proc.stop();
      if (!/EADDRINUSE/.test(proc.output())) break;
    }
  }
  throw lastErr;
}

// ---------------------------------------------------------------------------------------------
// Client-side requests

/** Manifest GET/HEAD with every manifest type in Accept (what skopeo sends). */
export function getManifest(serveUrl: string, repo: string, ref: string, method: 'GET' | 'HEAD' = 'GET', headers: Record<string, string> = {}): Promise<RawResponse> {
  return rawRequest(serveUrl, `/v2/${repo}/manifests/${ref}`, { method, headers: { Accept: ACCEPT_ALL_MANIFESTS, ...headers } });
}

/** Blob request without following redirects. */
export function blobRequest(serveUrl: string, repo: string, digest: string, method: 'GET' | 'HEAD' = 'HEAD'): Promise<RawResponse> {
  return rawRequest(serveUrl, `/v2/${repo}/blobs/${digest}`, { method });
}

/** The first registry error code of a spec error body, or undefined. */
export function errorCode(res: RawResponse): string | undefined {
  try {
    return res.json()?.errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

export function errorMessage(res: RawResponse): string {
  try {
    const e = res.json()?.errors?.[0];
    return `${e?.message ?? ''} ${typeof e?.detail === 'string' ? e.detail : JSON.stringify(e?.detail ?? '')}`;
  } catch {
    return res.text;
  }
}

/** Digest of `tag` in an OCI layout's index.json (what skopeo wrote). */
export async function layoutTagDigest(layoutDir: string, tag: string): Promise<string> {
  const index = JSON.parse(await fs.readFile(path.join(layoutDir, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
  };
  const d = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!d) throw new Error(`tag ${tag} not in ${layoutDir}/index.json`);
  return d.digest;
}

/**
 * `skopeo copy [--all] --src-tls-verify=false docker://<host>/<ref> oci:<outDir>:<tag>` (or
 * `dir:<outDir>` with `dest: 'dir'`, which keeps a Docker schema2 manifest byte for byte where
 * oci: converts it to OCI); returns the digest of the manifest skopeo wrote. `ref` is repo:tag or
 * repo@digest. Unlike skopeoCopy it gives up after `timeoutMs` (default 90 s), so a pull that
 * hangs fails the test instead of the file.
 */
export async function pullTo(
  host: string,
  ref: string,
  outDir: string,
  opts: { all?: boolean; tag?: string; timeoutMs?: number; dest?: 'oci' | 'dir' } = {},
): Promise<string> {
  const tag = opts.tag ?? 'pulled';
  await fs.mkdir(path.dirname(outDir), { recursive: true });
  const dest = opts.dest === 'dir' ? `dir:${outDir}` : `oci:${outDir}:${tag}`;
  const args = ['--insecure-policy', 'copy', ...(opts.all ? ['--all'] : []), '--src-tls-verify=false', `docker://${host}/${ref}`, dest];
  const res = await run(SKOPEO_BIN, args, { timeoutMs: opts.timeoutMs ?? 90_000 });
  if (res.code !== 0) throw new Error(`skopeo ${args.join(' ')} failed (exit ${res.code ?? res.signal}):\n${res.stderr || res.stdout}`);
  if (opts.dest === 'dir') return sha256Digest(await fs.readFile(path.join(outDir, 'manifest.json')));
  return layoutTagDigest(outDir, tag);
}

// ---------------------------------------------------------------------------------------------
// /metrics

/** Sum of every series of `name` (optionally only those carrying these labels). 0 when absent. */
export async function metric(serveUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await rawRequest(serveUrl, '/metrics');
  if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`);
  return sumMetric(res.text, name, labels);
}

export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const lbl = m[2] ?? '';
    if (!Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) continue;
    const v = Number(m[3]);
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// Polling and the tree on disk

/** Calls `fn` until it returns something other than undefined/false; throws after timeoutMs. */
export async function pollUntil<T>(fn: () => Promise<T | undefined | false>, timeoutMs: number, what: string, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${String(lastErr)})` : ''}`);
    await sleep(intervalMs);
  }
}

/** Polls a blob HEAD until it is answered with a 307 (the cache repo has been committed). Returns the Location. */
export async function waitForCommit(serveUrl: string, repo: string, digest: string, timeoutMs = 10_000): Promise<string> {
  let last = '';
  return pollUntil(
    async () => {
      const r = await blobRequest(serveUrl, repo, digest, 'HEAD');
      last = `HTTP ${r.status}`;
      return r.status === 307 ? String(r.headers.location) : undefined;
    },
    timeoutMs,
    `a 307 for ${repo}@${digest} (last: ${last || 'none'})`,
  );
}

export { exists } from '../../shared/publish/fsutil.js';

/** `<root>/store/blobs/sha256/<hex>`. */
export function storeBlobPath(root: string, digest: string): string {
  return layout(root).storeBlob(digest);
}

/** `<root>/published/app/<key>.json`. */
export function appFilePath(root: string, repo: string): string {
  return layout(root).app(repo);
}

/** The parsed redirect file of a published repo, or undefined when it is not published. */
export async function readAppFile(root: string, repo: string): Promise<any | undefined> {
  try {
    return JSON.parse(await fs.readFile(appFilePath(root, repo), 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Every path under `dir` (recursively) whose base name starts with ".tmp-". */
export async function findTmpFiles(dir: string): Promise<string[]> {
  return (await listTree(dir)).filter((x) => x.entry.name.startsWith('.tmp-')).map((x) => x.path);
}

/** Every regular file under `dir` (recursively; a missing dir has none). */
export async function filesUnder(dir: string): Promise<string[]> {
  return (await listTree(dir)).filter((x) => x.entry.isFile()).map((x) => x.path);
}

// ---------------------------------------------------------------------------------------------
// A proxy that records request headers (User-Agent, X-Forwarded-For of derrick's upstream requests)

export interface RecordedHeaders {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
}

export interface HeaderProxy {
  url: string;
  requests: RecordedHeaders[];
  close(): Promise<void>;
}

export async function startHeaderProxy(upstream: { host: string; port: number }): Promise<HeaderProxy> {
  const requests: RecordedHeaders[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', headers: { ...req.headers } });
    const up = http.request({ host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_e, s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
