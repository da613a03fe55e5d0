// Replies for the catalog pages: HTML, the assets, names.json, the sign-in challenge.
import { CATALOG_CSP, CSS, JS } from '../../shared/catalog-page/assets.js';
import { html } from '../../shared/catalog-page/escape.js';
import { page } from '../../shared/catalog-page/layout.js';
import type { PageContext } from '../../shared/catalog-page/model.js';
import { unauthorized } from '../access.js';
import type { Reply } from '../reply.js';

/** Pages differ by who asks: never shared between users by a cache. */
const PRIVATE = { 'Cache-Control': 'private, no-cache', Vary: 'Authorization' };

export function textReply(method: string, status: number, type: string, body: string, extra: Record<string, string> = {}): Reply {
  const headers = { 'Content-Type': type, 'Content-Length': String(Buffer.byteLength(body)), 'X-Content-Type-Options': 'nosniff', ...extra };
  return { status, headers, body: method === 'HEAD' ? null : body };
}

export function htmlReply(method: string, status: number, body: string, extra: Record<string, string> = {}): Reply {
  return textReply(method, status, 'text/html; charset=utf-8', body, { ...PRIVATE, 'Content-Security-Policy': CATALOG_CSP, ...extra });
}

export function namesReply(method: string, names: readonly string[]): Reply {
  return textReply(method, 200, 'application/json', JSON.stringify({ repositories: names }), PRIVATE);
}

export function assetReply(method: string, file: string): Reply | undefined {
  const asset = file === 'app.css' ? { type: 'text/css; charset=utf-8', body: CSS } : file === 'app.js' ? { type: 'text/javascript; charset=utf-8', body: JS } : undefined;
  return asset && textReply(method, 200, asset.type, asset.body, { 'Cache-Control': 'public, max-age=300' });
}

/** The Basic challenge a browser answers with its sign-in prompt; the same realm as /v2. */
export function challengeReply(method: string, ctx: PageContext, realm: string): Reply {
  const body = page(ctx, 'Sign in', html`<h1>Sign in required</h1><p>Your browser asks for a user name and password from the registry's htpasswd file.</p><p><a href="/ui/">Back to the public repositories</a></p>`);
  return htmlReply(method, 401, body, { 'WWW-Authenticate': unauthorized(realm).headers['WWW-Authenticate']! });
}

export function methodNotAllowed(method: string): Reply {
  return textReply(method, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { Allow: 'GET, HEAD' });
}
