// Starting (or joining) the one upstream fill of a blob for a cached repo, shared by the blob path
// (a client asked) and pull-ahead (a manifest was served). It remembers which cached repo started
// each running fill, because a fill streams that repo's upstream's bytes: another repo joining it
// must prove the digest at its own upstream first (invariant 9).
import type { BlobFill } from '../../shared/cache/blob-fill.js';
import type { PullThroughContext } from './context.js';
import type { RouteMatch } from './routes.js';

export interface StartedFill {
  fill: BlobFill;
  joined: boolean;
  /** The running fill was started for another cached repo: its bytes prove nothing for this one. */
  foreignOwner: boolean;
}

export type UpstreamFill = (m: RouteMatch, name: string, digest: string, size: number | undefined, headers: Record<string, string> | undefined) => StartedFill;

export function createUpstreamFill(c: PullThroughContext): UpstreamFill {
  const { fills, committer } = c;
  /** digest -> the cached repo whose request started the running fill (its upstream's bytes). */
  const fillOwner = new Map<string, string>();

  return (m, name, digest, size, headers) => {
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
}
