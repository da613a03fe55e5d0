// Cache provenance (design invariant 9): a cached repo serves and publishes only digests its own
// upstream was seen to have. A doubt (a blob the shared store holds for another repo's sake) is
// settled by one HEAD at the upstream, shared by concurrent askers. The proofs are written to
// store/cache-proof/<key>.json before each commit's repo state, so they outlive a restart.
import fs from 'node:fs/promises';
import writeFileAtomic from 'write-file-atomic';
import { z } from 'zod';
import { errors, RegistryError } from '../../shared/errors.js';
import type { Layout } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { isForeign, type CacheRepo } from './cache-repo.js';
import type { RouteMatch } from './routes.js';
import type { SingleFlight } from './single-flight.js';

const ProofFileSchema = z
  .object({
    version: z.literal(1),
    /** The upstream the proofs are about: a route pointed elsewhere since proves nothing. */
    upstream: z.string(),
    repository: z.string(),
    digests: z.array(z.string()),
  })
  .strict();

type RequestOpts = { signal: AbortSignal; headers?: Record<string, string> };

export interface Proofs {
  /**
   * Makes sure `repo`'s upstream has `digest`: at once when proven, else a HEAD there (one per
   * repo and digest at a time). Throws the upstream's error (a 404 means it lacks the blob), or
   * BLOB_UNKNOWN under policy Never, which may not ask.
   */
  check(repo: CacheRepo, m: RouteMatch, digest: string, opts: RequestOpts): Promise<void>;
  /** For a commit: checks each digest it can; those that fail stay unproven, so unpublished. */
  checkAll(repo: CacheRepo, digests: string[]): Promise<void>;
  /** Writes the repo's proofs (of the digests its manifests still name) to disk. */
  save(repo: CacheRepo): Promise<void>;
  /** Removes the record of a repo that is no longer cached. */
  drop(name: string): Promise<void>;
  /**
   * The proofs a previous process recorded for `name` at this upstream: undefined when there is
   * no record at all (state committed before proofs were kept), empty when the record is about
   * another upstream or unreadable.
   */
  load(name: string, m: RouteMatch): Promise<Set<string> | undefined>;
}

export interface ProofsOptions {
  layout: Layout;
  match(name: string): RouteMatch | undefined;
  once: SingleFlight;
  timeoutMs(m: RouteMatch): number;
  log: Logger;
}

export function createProofs(o: ProofsOptions): Proofs {
  const l = o.layout;

  const check: Proofs['check'] = async (repo, m, digest, opts) => {
    if (repo.proven.has(digest)) return;
    if (m.route.policy === 'Never') {
      // The same answer as for a blob the store lacks: it must not tell whether another
      // (perhaps protected) repo holds the digest.
      throw errors.blobUnknown(repo.name, digest);
    }
    await o.once(`proof ${repo.name}@${digest}`, async () => {
      // Recorded by a commit of another process (serve --workers): proven without asking the
      // upstream, which may be down while the cached image must still be served.
      const recorded = await load(repo.name, m).catch(() => undefined);
      if (recorded?.has(digest)) {
        for (const d of recorded) repo.proven.add(d);
        return;
      }
      const head = await m.route.client.headBlob(m.upstreamRepo, digest, opts);
      if (head.digest && head.digest !== digest) {
        throw new RegistryError('UNAVAILABLE', `upstream ${m.route.cfg.url} answered for ${head.digest} when asked for ${digest}`, { name: repo.name, digest }, 502);
      }
      repo.proven.add(digest);
      o.log.info({ repo: repo.name, digest }, 'blob confirmed at the upstream');
    });
  };

  const checkAll: Proofs['checkAll'] = async (repo, digests) => {
    const m = o.match(repo.name);
    if (!m || m.route.policy === 'Never') return;
    await Promise.all(
      digests.map((d) =>
        check(repo, m, d, { signal: AbortSignal.timeout(o.timeoutMs(m)) }).catch((err: Error) =>
          o.log.warn({ repo: repo.name, digest: d, err: err.message }, 'blob not confirmed at the upstream; its image stays unpublished'),
        ),
      ),
    );
  };

  const save: Proofs['save'] = async (repo) => {
    const m = o.match(repo.name);
    if (!m) return;
    const named = new Set<string>();
    for (const [d, man] of repo.manifests) {
      named.add(d);
      for (const b of man.blobs) if (!isForeign(b)) named.add(b.digest);
    }
    const digests = [...repo.proven].filter((d) => named.has(d)).sort();
    const doc: z.infer<typeof ProofFileSchema> = { version: 1, upstream: m.route.cfg.url, repository: m.upstreamRepo, digests };
    await fs.mkdir(l.cacheProofDir, { recursive: true });
    await writeFileAtomic(l.cacheProof(repo.name), JSON.stringify(doc) + '\n', { fsync: true });
  };

  const load: Proofs['load'] = async (name, m) => {
    const file = l.cacheProof(name);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    try {
      const doc = ProofFileSchema.parse(JSON.parse(text));
      if (doc.upstream !== m.route.cfg.url || doc.repository !== m.upstreamRepo) {
        o.log.warn({ repo: name, file, was: `${doc.upstream} ${doc.repository}` }, 'cache proofs are about another upstream; every blob will be confirmed again');
        return new Set();
      }
      return new Set(doc.digests);
    } catch (err) {
      o.log.warn({ repo: name, file, err: (err as Error).message }, 'unreadable cache proofs; every blob will be confirmed again');
      return new Set();
    }
  };

  const drop: Proofs['drop'] = async (name) => {
    await fs.rm(l.cacheProof(name), { force: true });
  };

  return { check, checkAll, save, drop, load };
}
