// GET/HEAD /v2/<cache-repo>/manifests/<ref>: a tag is resolved with one upstream HEAD (within
// tag-ttl, from memory), a manifest by digest is fetched once and never rechecked, and when the
// upstream fails a cached tag is served stale.
import { errors, RegistryError } from '../../shared/errors.js';
import { repoKey } from '../../shared/layout.js';
import { amd64Child, isIndexType, isSha256Digest, REFERRER_TAG_RE } from '../../shared/oci.js';
import { inlineManifestReply, manifestReply } from '../manifests.js';
import type { Reply } from '../reply.js';
import { addManifest, cachedManifest, type CachedManifest, type CacheRepo } from './cache-repo.js';
import { STALE_WARNING, type PullThroughContext, type PullThroughRequest } from './context.js';
import { isUpstreamDown, upstreamToRegistryError } from './errors.js';
import { createFillLocks } from './fill-lock.js';
import type { PullAhead } from './pull-ahead.js';
import type { RouteMatch } from './routes.js';

/** How long a worker waits for another one's fetch of the same manifest. */
const MANIFEST_WAIT_MS = 60_000;

export type ManifestPath = (req: PullThroughRequest, m: RouteMatch, name: string, ref: string, kind: 'tag' | 'digest') => Promise<Reply>;

export function createManifestPath(c: PullThroughContext, pullAhead: PullAhead): ManifestPath {
  const { o, store, committer, accessLog, once } = c;
  const locks = createFillLocks(o.layout);

  /** A manifest by digest from memory, the repo's own publish, or (once) the upstream. */
  const loadManifest = async (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, digest: string, allowFetch: boolean): Promise<CachedManifest | undefined> => {
    const have = repo.manifests.get(digest);
    if (have?.bytes) return have;
    const pub = await o.index.load(repo.name);
    const published = pub?.current.manifests.get(digest);
    if (pub && published) return addManifest(repo, digest, cachedManifest(await o.index.readManifest(pub.current, digest), published.mediaType));
    if (!allowFetch) return undefined;
    const fetchManifest = async (): Promise<CachedManifest> => {
      const fetched = await m.route.client.getManifest(m.upstreamRepo, digest, c.requestOpts(req, m));
      await store.putBytes(fetched.digest, fetched.bytes);
      const cm = addManifest(repo, digest, cachedManifest(fetched.bytes, fetched.mediaType));
      if (!cm.children && cm.blobs.length === 0) committer.schedule(repo.name);
      return cm;
    };
    return once(`manifest ${repo.name}@${digest}`, async () => {
      o.metrics.cache.misses.inc();
      // Across serve's workers: one GET per repo and digest (fill-lock.ts). A waiter reads the
      // store, and so does a worker that takes the lock after another one stored the manifest but
      // before this worker's index saw that publish: the HEAD below proves it, the upstream sees no
      // second GET.
      const lock = await locks.claim(digest, () => store.has(digest), MANIFEST_WAIT_MS, repoKey(repo.name));
      const stored = lock ? undefined : await store.read(digest);
      const type = stored && (JSON.parse(stored.toString('utf8')) as { mediaType?: unknown }).mediaType;
      if (stored && typeof type === 'string') {
        // The store's copy may be another repo's, if this repo's fetch in the other worker failed:
        // served for this repo only once its own upstream says it has the digest (invariant 9). A
        // HEAD, so the upstream still sees one GET.
        const head = await m.route.client.headManifest(m.upstreamRepo, digest, c.requestOpts(req, m));
        if (head.digest !== undefined && head.digest !== digest) {
          throw new RegistryError('UNAVAILABLE', `upstream ${m.route.cfg.url} answered for ${head.digest} when asked for ${digest}`, { name: repo.name, digest }, 502);
        }
        return addManifest(repo, digest, cachedManifest(stored, type));
      }
      try {
        return await fetchManifest();
      } finally {
        await lock?.release();
      }
    });
  };

  const serveManifest = (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, digest: string, cm: CachedManifest, kind: 'tag' | 'digest', maxAge: number, stale: boolean): Reply => {
    const published = o.index.peek(repo.name);
    const extra: Record<string, string> = stale ? { Warning: STALE_WARNING } : {};
    // An image about to be pulled and not published yet: start fetching its blobs now. Not on
    // HEAD, which asks whether the tag moved, not for the image.
    if (req.method === 'GET' && !published?.current.manifests.has(digest)) pullAhead(m, repo, cm, c.requestOpts(req, m).headers);
    if (published?.current.manifests.has(digest) && o.manifests === 'redirect') {
      const r = manifestReply({
        method: req.method, repo: published, ref: digest, kind: 'digest', accept: null, ifNoneMatch: req.ifNoneMatch,
        mode: o.manifests, redirectStatus: o.redirectStatus, urls: o.urls, bytes: () => cm.bytes!,
      }).reply;
      // Asked by digest so the redirect names the file, but a tag's answer (HEAD, 304) must not be
      // cached as immutable: it may move once tag-ttl is past.
      if (kind === 'tag' && r.headers['Cache-Control']) r.headers['Cache-Control'] = `public, max-age=${Math.max(0, Math.floor(maxAge / 1000))}`;
      Object.assign(r.headers, extra);
      return r;
    }
    return inlineManifestReply({
      method: req.method, digest, mediaType: cm.mediaType, size: cm.size, bytes: cm.bytes ?? null, kind,
      tagMaxAge: maxAge / 1000, ifNoneMatch: req.ifNoneMatch, extra,
    });
  };

  const negotiateChild = async (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, digest: string, cm: CachedManifest, allowFetch: boolean) => {
    if (!req.accept || req.accept.has(cm.mediaType) || !isIndexType(cm.mediaType)) return { digest, cm };
    const child = amd64Child(cm.children ?? []);
    const ccm = child && (await loadManifest(req, m, repo, child.digest, allowFetch));
    if (!child || !ccm || !req.accept.has(ccm.mediaType)) {
      throw new RegistryError('MANIFEST_UNKNOWN', 'manifest is an index and the client accepts neither it nor its linux/amd64 image', { name: repo.name, mediaType: cm.mediaType });
    }
    return { digest: child.digest, cm: ccm };
  };

  const touchDigest = (repo: CacheRepo, digest: string) => {
    for (const [tag, t] of repo.tags) if (t.digest === digest) accessLog.touch(repo, tag);
  };

  const byDigest = async (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, digest: string): Promise<Reply> => {
    // A digest names immutable bytes: never rechecked.
    const hit = await loadManifest(req, m, repo, digest, false);
    if (hit) o.metrics.cache.hits.inc();
    const cm = hit ?? (m.route.policy === 'Never' ? undefined : await loadManifest(req, m, repo, digest, true));
    if (!cm) throw errors.manifestUnknown(repo.name, digest);
    touchDigest(repo, digest);
    return serveManifest(req, m, repo, digest, cm, 'digest', 0, false);
  };

  /** Asks the upstream what the tag names now (one flight from HEAD to the updated tag). */
  const resolveTag = (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, ref: string): Promise<string> =>
    // A request arriving while the manifest is still being fetched joins the flight instead of
    // resolving the tag again.
    once(`tag ${repo.name}:${ref}`, async () => {
      const head = await m.route.client.headManifest(m.upstreamRepo, ref, c.requestOpts(req, m));
      let d = head.digest;
      if (!d) {
        const got = await m.route.client.getManifest(m.upstreamRepo, ref, c.requestOpts(req, m));
        await store.putBytes(got.digest, got.bytes);
        addManifest(repo, got.digest, cachedManifest(got.bytes, got.mediaType));
        d = got.digest;
      }
      const current = repo.tags.get(ref);
      if (current && current.digest === d) {
        current.checkedAt = Date.now();
        return d;
      }
      if (!(await loadManifest(req, m, repo, d, true))) throw errors.manifestUnknown(repo.name, ref);
      repo.tags.set(ref, { digest: d, checkedAt: Date.now() });
      return d;
    });

  const byTag = async (req: PullThroughRequest, m: RouteMatch, repo: CacheRepo, ref: string): Promise<Reply> => {
    const name = repo.name;
    const policy = m.route.policy;
    const ttl = m.route.cfg['tag-ttl'];
    const publishedDigest = (await o.index.load(name))?.tags.get(ref);
    const known = repo.tags.get(ref) ?? (publishedDigest ? { digest: publishedDigest, checkedAt: 0 } : undefined);
    if (known && !repo.tags.has(ref)) repo.tags.set(ref, known);
    const fresh = known !== undefined && Date.now() - known.checkedAt < ttl;
    const serveKnown = async (stale: boolean) => {
      const cm = await loadManifest(req, m, repo, known!.digest, policy !== 'Never');
      if (!cm) throw errors.manifestUnknown(name, ref);
      accessLog.touch(repo, ref);
      const chosen = await negotiateChild(req, m, repo, known!.digest, cm, policy !== 'Never');
      return serveManifest(req, m, repo, chosen.digest, chosen.cm, 'tag', known!.checkedAt + ttl - Date.now(), stale);
    };
    if (policy === 'Never') {
      if (!known) throw errors.manifestUnknown(name, ref);
      o.metrics.cache.hits.inc();
      return serveKnown(false);
    }
    if (policy === 'IfNotPresent' && fresh) {
      o.metrics.cache.hits.inc();
      return serveKnown(false);
    }
    let digest: string;
    try {
      digest = await resolveTag(req, m, repo, ref);
    } catch (err) {
      const staleOk = policy === 'IfNotPresent' || m.route.cfg['stale-on-error'];
      if (known && staleOk && isUpstreamDown(err)) {
        o.metrics.cache.stale.inc();
        o.log.warn({ repo: name, tag: ref, err: (err as Error).message }, 'upstream failed; serving the cached tag stale');
        return serveKnown(true);
      }
      throw err;
    }
    if (known && known.digest === digest) {
      o.metrics.cache.hits.inc();
      return serveKnown(false);
    }
    const cm = await loadManifest(req, m, repo, digest, true);
    if (!cm) throw errors.manifestUnknown(name, ref);
    accessLog.touch(repo, ref);
    const chosen = await negotiateChild(req, m, repo, digest, cm, true);
    // Complete already (an index, or blobs this repo has proven): commit now.
    committer.schedule(name);
    return serveManifest(req, m, repo, chosen.digest, chosen.cm, 'tag', ttl, false);
  };

  return async (req, m, name, ref, kind) => {
    // Grammar first, before any upstream request: derrick verifies sha256 only, so another
    // algorithm or a malformed encoding names nothing it can serve (as on a published repo).
    if (kind === 'digest' && !isSha256Digest(ref)) throw errors.manifestUnknown(name, ref);
    // `referrers: false`: this route carries no signatures, SBOMs or referrer indexes by tag.
    if (kind === 'tag' && !m.route.cfg.referrers && REFERRER_TAG_RE.test(ref)) throw errors.manifestUnknown(name, ref);
    const repo = c.repoFor(name, m);
    try {
      return await (kind === 'digest' ? byDigest(req, m, repo, ref) : byTag(req, m, repo, ref));
    } catch (err) {
      throw upstreamToRegistryError(err, m.route.cfg.url, 'manifest', name, ref);
    }
  };
}
