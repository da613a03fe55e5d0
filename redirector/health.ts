// Health endpoints for load balancers and systemd: /healthz says the process answers; /readyz says
// it can serve: the index answers and the published tree is there to read. Both are outside /v2,
// unauthenticated and cheap (no repo is loaded, two access(2) calls).
import { constants as C } from 'node:fs';
import fs from 'node:fs/promises';
import type { Layout } from '../shared/layout.js';
import type { BlobsCheck } from './blobs-check.js';
import type { RepoIndex } from './index.js';

/** What keeps the server from being ready; empty when it is ready. */
export type ReadinessCheck = () => Promise<string[]>;

/** `blobs`: the self-check of serve.blobs when it is a URL (blobs-check.ts, cached). */
export function readinessCheck(l: Layout, index: Pick<RepoIndex, 'size'>, blobs?: BlobsCheck): ReadinessCheck {
  return async () => {
    const problems: string[] = [];
    try {
      index.size();
    } catch (err) {
      problems.push(`index: ${(err as Error).message}`);
    }
    // The redirector reads app/ and the file server (or nginx) reads master/ through published/.
    for (const dir of [l.publishedDir, l.appDir]) {
      try {
        await fs.access(dir, C.R_OK | C.X_OK);
      } catch (err) {
        problems.push(`${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const blobsProblem = await blobs?.();
    if (blobsProblem) problems.push(blobsProblem);
    return problems;
  };
}

const NO_STORE = { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' };

/**
 * DERRICK_DEBUG_WORKER=1 (a debug switch, off in production): /healthz names the process that
 * answered, so tests and operators can see that `--workers N` spreads connections.
 */
export function healthzResponse(): Response {
  if (process.env.DERRICK_DEBUG_WORKER !== '1') return new Response('{"status":"ok"}\n', { headers: NO_STORE });
  return new Response(JSON.stringify({ status: 'ok', pid: process.pid }) + '\n', { headers: { ...NO_STORE, 'X-Derrick-Worker': String(process.pid) } });
}

export async function readyzResponse(check: ReadinessCheck | undefined): Promise<Response> {
  const problems = check ? await check() : [];
  if (problems.length === 0) return new Response('{"status":"ready"}\n', { headers: NO_STORE });
  return new Response(JSON.stringify({ status: 'not ready', problems }) + '\n', { status: 503, headers: NO_STORE });
}
