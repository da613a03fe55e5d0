// What the index remembers about a name besides the loaded repo itself: tiny, and kept when the
// repo is evicted, so that an evicted repo keeps the grace of its replaced publishes and a
// rejected file is not read again while it is unchanged.

export interface Known {
  /** Identity of the app entry when last looked at (see app-entry.ts). */
  seen?: string;
  /** The entry with that identity was refused: don't read it again until it changes. */
  seenBad?: boolean;
  /** The redirect file of the last version loaded successfully (a master's redirect.json). */
  good?: string;
  /** Learned from a load or a head scan of the entry `seen` names; undefined once it changes. */
  protected?: boolean;
  /** Masters replaced less than `grace` ago, whose blobs still redirect. */
  previous: Array<{ real: string; until: number }>;
}

export function newKnown(): Known {
  return { previous: [] };
}

/**
 * Records that the entry now has `identity` and resolves to `real`. Returns whether it changed.
 * When it moved away from the last good master, that master enters its grace period: a redirect
 * handed out for it stays valid, whether or not the repo is in memory now.
 */
export function noteEntry(k: Known, identity: string, real: string | undefined, graceMs: number, now = Date.now()): boolean {
  if (k.seen === identity) return false;
  k.seen = identity;
  k.seenBad = false;
  k.protected = undefined;
  if (k.good && k.good !== real && !k.previous.some((p) => p.real === k.good)) {
    k.previous.unshift({ real: k.good, until: now + graceMs });
  }
  k.previous = k.previous.filter((p) => p.until > now && p.real !== real);
  return true;
}

/** Whether the record still says something a future request needs. */
export function worthKeeping(k: Known, now = Date.now()): boolean {
  k.previous = k.previous.filter((p) => p.until > now);
  return k.previous.length > 0 || !!k.seenBad || k.good !== undefined || k.protected !== undefined;
}
