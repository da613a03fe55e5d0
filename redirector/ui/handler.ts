// The catalog page of `derrick serve`: / and /ui/..., from the same lazy index as /v2 and behind
// the same access decision (access.ts). The list comes from names alone; a repo's page loads
// that one repo. A browser signs in at /ui/login (a Basic challenge), after which it sends the
// credentials with every /ui/ request, as /v2 clients do.
import { listPage } from '../../shared/catalog-page/list-page.js';
import type { PageContext, RouteView } from '../../shared/catalog-page/model.js';
import { registryHostOf } from '../../shared/catalog-page/pull-lines.js';
import { notFoundPage, repoPage } from '../../shared/catalog-page/repo-page.js';
import type { Logger } from '../../shared/log.js';
import { isValidName } from '../../shared/oci.js';
import { needsProof, type CredentialCheck } from '../access.js';
import type { RepoIndex } from '../index.js';
import type { Reply } from '../reply.js';
import { assetReply, challengeReply, htmlReply, methodNotAllowed, namesReply, textReply } from './pages.js';
import { repoView } from './repo-view.js';
import { visiblePage } from './visible-page.js';

export interface UiOptions {
  index: RepoIndex;
  auth: CredentialCheck;
  /** serve.anonymous: when false, every page needs credentials. */
  anonymous: boolean;
  routes: RouteView[];
  /** The pull-through route a name falls under, if any. */
  matchRoute(name: string): (RouteView & { upstreamRepo: string }) | undefined;
  log: Logger;
}

export interface UiRequest {
  method: string;
  /** Path and query, as sent. */
  target: string;
  header(name: string): string | undefined;
  remoteAddress?: () => string | undefined;
  /** scheme://host[:port] clients reach derrick at (origin.ts). */
  origin: string;
}

export function createUiHandler(o: UiOptions): (req: UiRequest) => Promise<Reply> {
  const answer = async (req: UiRequest, path: string, query: URLSearchParams): Promise<Reply> => {
    const { method } = req;
    if (path.startsWith('/ui/assets/')) return assetReply(method, path.slice('/ui/assets/'.length)) ?? textReply(method, 404, 'text/plain', 'not found\n');
    const authorization = req.header('authorization');
    const user = authorization === undefined ? undefined : await o.auth.check(authorization, req.remoteAddress?.());
    const ctx: PageContext = { ...registryHostOf(req.origin), user, canSignIn: true };
    // Credentials that don't check out, or none where every repo needs them: the browser asks.
    if ((authorization !== undefined && user === undefined) || (!o.anonymous && user === undefined) || (path === '/ui/login' && !user)) {
      return challengeReply(method, ctx, o.auth.realm);
    }
    if (path === '/ui/login') return { status: 303, headers: { Location: '/ui/', 'Content-Length': '0' }, body: null };
    if (path === '/ui/names.json') return namesReply(method, await o.index.visibleNames(user !== undefined));
    const listPath = /^\/(?:ui\/?)?$|^\/ui\/page\/(\d+)\/?$/.exec(path);
    if (listPath) {
      const q = (query.get('q') ?? '').slice(0, 256);
      const p = await visiblePage(o.index, user !== undefined, q, Number(listPath[1] ?? query.get('page') ?? 1));
      return htmlReply(method, 200, listPage(ctx, { ...p, query: q, routes: o.routes }));
    }
    const repoPath = /^\/ui\/r\/(.+?)\/?$/.exec(path);
    if (!repoPath) return htmlReply(method, 404, notFoundPage(ctx, path));
    let name: string;
    try {
      name = decodeURIComponent(repoPath[1]!);
    } catch {
      name = repoPath[1]!;
    }
    return repoReply(method, ctx, name, user !== undefined);
  };

  const repoReply = async (method: string, ctx: PageContext, name: string, authed: boolean): Promise<Reply> => {
    const missing = () => htmlReply(method, 404, notFoundPage(ctx, name));
    if (!isValidName(name)) return missing();
    const route = o.matchRoute(name);
    const repo = o.index.has(name) ? await o.index.load(name) : undefined;
    // A page shows a repo's tags and digests: it is as protected as the repo. Unknown counts as
    // protected, and a hidden repo looks exactly like a missing one.
    if (!repo) return route ? htmlReply(method, 200, repoPage(ctx, { name, tags: [], route })) : missing();
    if (needsProof(o.anonymous, repo.protected) && !authed) return missing();
    const view = await repoView(o.index, repo);
    return htmlReply(method, 200, repoPage(ctx, { ...view, route }));
  };

  return async (req) => {
    const q = req.target.indexOf('?');
    const path = q < 0 ? req.target : req.target.slice(0, q);
    if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(req.method);
    try {
      return await answer(req, path, new URLSearchParams(q < 0 ? '' : req.target.slice(q + 1)));
    } catch (err) {
      o.log.error({ err: (err as Error).message, path }, 'catalog page failed');
      return textReply(req.method, 500, 'text/plain; charset=utf-8', 'internal error\n');
    }
  };
}
