// The start-up self-check of `serve.blobs` when it is another server's URL: derrick fetches one
// known published file through that URL, the way a client follows a redirect. A wrong base path
// (or a server that is down, or serves another tree) would otherwise give every client a 404 or a
// digest error, silently: the check logs one clear error naming the URL and what came back, and
// /readyz reports it. The outcome is cached for a few seconds, so /readyz stays cheap.
import crypto from 'node:crypto';
import { manifestRelPath } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import type { IndexedRepo, RepoIndex } from './index.js';
import { fileUrl, type UrlOptions } from './urls.js';

/** The problem with serve.blobs, or undefined when it serves the tree (or there is nothing to try yet). */
export type BlobsCheck = () => Promise<string | undefined>;

export interface BlobsCheckOptions {
  urls: UrlOptions;
  index: Pick<RepoIndex, 'names' | 'load'>;
  log: Logger;
  /** How long an outcome is reused (default 5 s). */
  ttlMs?: number;
  timeoutMs?: number;
}

/** Repos looked at to find a file to fetch: the first public ones are enough. */
const MAX_CANDIDATES = 20;

/** The smallest current manifest of a repo a client without credentials may fetch through the URL. */
async function pickFile(o: BlobsCheckOptions): Promise<{ url: string; digest: string } | undefined> {
  for (const name of o.index.names().slice(0, MAX_CANDIDATES)) {
    const repo: IndexedRepo | undefined = await o.index.load(name).catch(() => undefined);
    // Without signing, a protected repo's files are not for anonymous fetches.
    if (!repo || repo.kind !== 'derrick' || (repo.protected && !o.urls.signing)) continue;
    let best: [string, { mediaType: string; size: number }] | undefined;
    for (const e of repo.current.manifests) if (!best || e[1].size < best[1].size) best = e;
    if (best) return { url: fileUrl(o.urls, repo.current.url, manifestRelPath(best[1].mediaType, best[0])), digest: best[0] };
  }
  return undefined;
}

async function tryFetch(url: string, digest: string, timeoutMs: number): Promise<string | undefined> {
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'follow' });
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    return e.cause?.code ?? e.cause?.message ?? e.message;
  }
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) return `HTTP ${res.status}`;
  const got = 'sha256:' + crypto.createHash('sha256').update(body).digest('hex');
  return got === digest ? undefined : `HTTP 200 with other bytes (${body.length} bytes hashing to ${got}, expected ${digest})`;
}

export function createBlobsCheck(o: BlobsCheckOptions): BlobsCheck {
  const ttl = o.ttlMs ?? 5000;
  let cached: { at: number; outcome: Promise<string | undefined> } | undefined;
  let lastLogged: string | undefined;

  const run = async (): Promise<string | undefined> => {
    const file = await pickFile(o);
    if (!file) return undefined;
    // A signed URL in the log would be a credential for its TTL: log the path without the query.
    const shown = file.url.split('?')[0]!;
    const what = await tryFetch(file.url, file.digest, o.timeoutMs ?? 5000);
    const problem = what && `serve.blobs (${o.urls.blobs}) does not serve the published tree: GET ${shown} answered ${what}`;
    // One error per distinct problem, not one per /readyz probe.
    if (problem && problem !== lastLogged) o.log.error({ url: shown, got: what }, problem);
    if (!problem && lastLogged) o.log.warn({ url: shown }, 'serve.blobs serves the published tree again');
    lastLogged = problem;
    return problem;
  };

  return () => {
    if (!cached || Date.now() - cached.at >= ttl) cached = { at: Date.now(), outcome: run() };
    return cached.outcome;
  };
}
