// GET /v2/<cache-repo>/tags/list: the upstream's list (all of it, paginated here), the cached
// tags under policy Never, and the cached tags marked stale when the upstream fails.
import { errors } from '../../shared/errors.js';
import { REFERRER_TAG_RE } from '../../shared/oci.js';
import { checkPageSize, paginate } from '../pagination.js';
import { jsonReply, type Reply } from '../reply.js';
import { STALE_WARNING, type PullThroughContext, type PullThroughRequest } from './context.js';
import { isUpstreamDown, upstreamToRegistryError } from './errors.js';
import type { RouteMatch } from './routes.js';

export type TagListPath = (req: PullThroughRequest, m: RouteMatch, name: string, page: { n?: string; last?: string }) => Promise<Reply>;

export function createTagListPath(c: PullThroughContext): TagListPath {
  const { o, repos, once } = c;

  const tagList = async (req: PullThroughRequest, m: RouteMatch, name: string): Promise<{ tags: string[]; stale: boolean }> => {
    const published = await o.index.load(name);
    const cached = () => [...new Set([...(repos.get(name)?.tags.keys() ?? []), ...(published?.sortedTags ?? [])])].sort();
    if (m.route.policy === 'Never') {
      const have = cached();
      if (have.length === 0 && !published) throw errors.nameUnknown(name);
      return { tags: have, stale: false };
    }
    try {
      const upstream = await once(`tags ${name}`, () => m.route.client.listTags(m.upstreamRepo, c.requestOpts(req, m)));
      return { tags: [...upstream].sort(), stale: false };
    } catch (err) {
      const have = cached();
      const staleOk = m.route.policy === 'IfNotPresent' || m.route.cfg['stale-on-error'];
      if (have.length && staleOk && isUpstreamDown(err)) {
        o.metrics.cache.stale.inc();
        o.log.warn({ repo: name, err: (err as Error).message }, 'upstream failed; listing the cached tags');
        return { tags: have, stale: true };
      }
      throw upstreamToRegistryError(err, m.route.cfg.url, 'tags', name, 'tags/list');
    }
  };

  return async (req, m, name, q) => {
    // Grammar first: a bad page size is the client's error, found before the upstream is asked.
    checkPageSize(q.n);
    const { tags: listed, stale } = await tagList(req, m, name);
    // The upstream's referrer tags are listed as it has them, unless the route doesn't carry them.
    const all = m.route.cfg.referrers ? listed : listed.filter((t) => !REFERRER_TAG_RE.test(t));
    const page = paginate(all, q.n, q.last, `/v2/${name}/tags/list`);
    const r = jsonReply(req.method, { name, tags: page.items }, page.link);
    if (stale) r.headers.Warning = STALE_WARNING;
    return r;
  };
}
