// Starting (or joining) the one upstream fill of a blob for a cached repo, shared by the blob path
// (a client asked) and pull-ahead (a manifest was served). It remembers which cached repo started
// each running fill, because a fill streams that repo's upstream's bytes: another repo joining it
// must prove the digest at its own upstream first (invariant 9).
//
// Across serve's workers the fill lock (fill-lock.ts) makes it one upstream GET per digest: a
// worker with no fill of the digest running takes the lock first, and one that finds another
// worker fetching waits, then finds the blob stored. This worker's callers share one claim, so
// they still join one local fill (a client's request joins a pull-ahead fill and streams it).
import type { BlobFill } from '../../shared/cache/blob-fill.js';
import type { PullThroughContext } from './context.js';
import { createFillLocks } from './fill-lock.js';
import type { RouteMatch } from './routes.js';
import { createSingleFlight } from './single-flight.js';

/** How long a worker waits for another one's fill of the same blob before answering 503. */
const FILL_WAIT_MS = 10 * 60_000;

export interface StartedFill {
  fill: BlobFill;
  joined: boolean;
  /** The running fill was started for another cached repo: its bytes prove nothing for this one. */
  foreignOwner: boolean;
}

/** A started or joined fill, or 'stored' when another worker stored the blob while this one waited. */
export type UpstreamFill = (
  m: RouteMatch,
  name: string,
  digest: string,
  size: number | undefined,
  headers: Record<string, string> | undefined,
) => Promise<StartedFill | 'stored'>;

export function createUpstreamFill(c: PullThroughContext): UpstreamFill {
  const { fills, committer, store } = c;
  const locks = createFillLocks(c.o.layout);
  /** This worker's requests for one digest share one lock claim. */
  const claims = createSingleFlight();
  /** digest -> the cached repo whose request started the running fill (its upstream's bytes). */
  const fillOwner = new Map<string, string>();

  const start = (m: RouteMatch, name: string, digest: string, size: number | undefined, headers: Record<string, string> | undefined): StartedFill => {
    const repo = c.repoFor(name, m);
    const { fill, joined } = fills.fill(digest, size, {
      open: async (signal) => {
        const r = await m.route.client.getBlob(m.upstreamRepo, digest, { signal, headers });
        return { body: r.body, size: r.size };
      },
    });
    if (!joined) {
      fillOwner.set(digest, name);
      fill.done
        .then(
          () => repo.proven.add(digest),
          () => {},
        )
        .finally(() => fillOwner.get(digest) === name && fillOwner.delete(digest));
    }
    fill.done.then(
      () => committer.schedule(name),
      () => {},
    );
    return { fill, joined, foreignOwner: joined && fillOwner.get(digest) !== name };
  };

  return async (m, name, digest, size, headers) => {
    if (fills.running(digest)) return start(m, name, digest, size, headers);
    const lock = await claims(digest, () => locks.claim(digest, () => store.has(digest), FILL_WAIT_MS));
    // Another worker stored it meanwhile (and no caller here started a fill since).
    if (!lock && !fills.running(digest)) return 'stored';
    let started: StartedFill;
    try {
      started = start(m, name, digest, size, headers);
    } catch (err) {
      await lock?.release();
      throw err;
    }
    // The caller that started the fill holds the shared claim until the blob is stored or failed.
    if (lock && !started.joined) started.fill.done.finally(() => lock.release()).catch(() => {});
    return started;
  };
}
