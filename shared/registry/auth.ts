// Registry authentication: the docker token protocol (Bearer) and plain Basic, decided by what the
// registry's 401 challenge asks for rather than by configuration, as docker and skopeo do.
import { UpstreamError } from './errors.js';
import { backoffMs, describeNetworkError, isNetworkError, isRetryableStatus, parseRetryAfter, sleep } from './retry.js';
import type { FetchLike } from './transport.js';

export type Challenge =
  | { scheme: 'bearer'; realm: string; service?: string; scope?: string; error?: string }
  | { scheme: 'basic'; realm?: string };

/** Token lifetime when the token server does not say (docker's token spec default). */
export const DEFAULT_TOKEN_LIFETIME_S = 60;
/** Renew this long before expiry so a token never runs out between the check and its use. */
const EXPIRY_MARGIN_MS = 10_000;

/** The scope a pull of one repository needs. */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/**
 * Parses a WWW-Authenticate header into its challenges (RFC 7235: several may share one header,
 * and quoted values may hold commas, as in scope="repository:a:pull,push"). Unknown schemes are dropped.
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skip = (re: RegExp) => {
    while (i < n && re.test(header[i]!)) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: { scheme: string; params: Record<string, string> } | undefined;
  const flush = () => {
    if (!current) return;
    const p = current.params;
    if (current.scheme === 'bearer' && p.realm) {
      const c: Challenge = { scheme: 'bearer', realm: p.realm };
      if (p.service !== undefined) c.service = p.service;
      if (p.scope !== undefined) c.scope = p.scope;
      if (p.error !== undefined) c.error = p.error;
      out.push(c);
    } else if (current.scheme === 'basic') {
      out.push(p.realm !== undefined ? { scheme: 'basic', realm: p.realm } : { scheme: 'basic' });
    }
    current = undefined;
  };
  while (i < n) {
    skip(/[\s,]/);
    const word = token();
    if (!word) {
      i++; // a stray character: step over it rather than loop forever
      continue;
    }
    skip(/[ \t]/);
    if (header[i] === '=' && current) {
      i++;
      skip(/[ \t]/);
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        const start = i;
        while (i < n && header[i] !== ',' && !/\s/.test(header[i]!)) i++;
        value = header.slice(start, i);
      }
      current.params[word.toLowerCase()] = value;
    } else {
      // A token not followed by '=' starts the next challenge.
      flush();
      current = { scheme: word.toLowerCase(), params: {} };
    }
  }
  flush();
  return out;
}

export function basicHeader(username: string, password: string): string {
  return 'Basic ' + Buffer.from(`${username}:${password}`, 'utf8').toString('base64');
}

export interface AuthOptions {
  registry: string;
  username?: string;
  password?: string;
  /** Used for the token server too, so tlsVerify=false reaches a self-signed token server. */
  fetch: FetchLike;
  userAgent: string;
  retries: number;
  retryBaseMs: number;
  now?: () => number;
}

/** Names the image an auth failure happened for, so the error says which pull needed it. */
export interface AuthContext {
  repository: string;
  reference?: string;
  signal?: AbortSignal;
}

export interface Authenticator {
  /**
   * The Authorization header to send up front for `scope`: a cached or freshly fetched token once a
   * Bearer challenge has been seen, Basic once a Basic one has; undefined before any challenge.
   */
  headerFor(scope: string | undefined, ctx: AuthContext): Promise<string | undefined>;
  /**
   * After a 401: learns the challenge, forgets the `rejected` header's token and returns a header to
   * try once more with, or undefined when there is nothing else to try.
   */
  onUnauthorized(
    wwwAuthenticate: string | null,
    scope: string | undefined,
    rejected: string | undefined,
    ctx: AuthContext,
  ): Promise<string | undefined>;
  /** How many token-server responses were received: for tests and metrics. */
  readonly tokenFetches: number;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

/** One token request that several callers wait on. */
interface SharedTokenFetch {
  promise: Promise<string>;
  controller: AbortController;
  /** Callers with a signal that have not given up yet. */
  waiting: number;
  /** Drops it from the in-flight map, so a later caller starts afresh. */
  forget(): void;
}

/**
 * The shared token for one caller: its own signal rejects its own wait. The last caller with a
 * signal to give up aborts the request; a caller without a signal never gives up, so a request
 * one of those waits on is never aborted.
 */
function waitForToken(shared: SharedTokenFetch, signal: AbortSignal | undefined): Promise<string> {
  if (!signal) {
    shared.waiting = Number.POSITIVE_INFINITY;
    return shared.promise;
  }
  if (signal.aborted) return Promise.reject(signal.reason);
  shared.waiting++;
  return new Promise<string>((resolve, reject) => {
    const onAbort = () => {
      if (--shared.waiting === 0) {
        shared.forget();
        shared.controller.abort(signal.reason);
      }
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    shared.promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

export function createAuthenticator(opts: AuthOptions): Authenticator {
  const now = opts.now ?? Date.now;
  const hasCredentials = opts.username !== undefined && opts.password !== undefined;
  let known: Challenge | undefined;
  const tokens = new Map<string, CachedToken>();
  // Concurrent layer pulls of one repository share one token request. It runs on a signal of its
  // own: one caller that gives up (a client gone, a timeout) must not fail the others waiting on
  // it. It is aborted only when every caller that could give up has.
  const inflight = new Map<string, SharedTokenFetch>();
  let tokenFetches = 0;

  const fail = (ctx: AuthContext, kind: UpstreamError['kind'], detail: string, extra: { status?: number; retryAfter?: string; cause?: unknown } = {}) =>
    new UpstreamError({ kind, registry: opts.registry, repository: ctx.repository, reference: ctx.reference, detail, ...extra });

  const keyOf = (c: Extract<Challenge, { scheme: 'bearer' }>, scope: string | undefined) =>
    `${c.realm}\n${c.service ?? ''}\n${scope ?? ''}`;

  async function fetchToken(c: Extract<Challenge, { scheme: 'bearer' }>, scope: string | undefined, ctx: AuthContext): Promise<CachedToken> {
    let url: URL;
    try {
      url = new URL(c.realm);
    } catch {
      throw fail(ctx, 'invalid', `registry sent an unusable token realm "${c.realm}"`);
    }
    if (c.service !== undefined) url.searchParams.set('service', c.service);
    if (scope) url.searchParams.set('scope', scope);
    if (hasCredentials) url.searchParams.set('account', opts.username!);
    const headers: Record<string, string> = { 'User-Agent': opts.userAgent, Accept: 'application/json' };
    if (hasCredentials) headers.Authorization = basicHeader(opts.username!, opts.password!);

    for (let attempt = 0; ; attempt++) {
      const last = attempt >= opts.retries;
      let res: Response;
      try {
        res = await opts.fetch(url.toString(), { method: 'GET', headers, signal: ctx.signal });
      } catch (err) {
        if (!isNetworkError(err)) throw err;
        if (last) throw fail(ctx, 'network', `cannot reach token server ${url.origin}: ${describeNetworkError(err)}`, { cause: err });
        await sleep(backoffMs(attempt, opts.retryBaseMs), ctx.signal);
        continue;
      }
      tokenFetches++;
      if (res.ok) {
        let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
        try {
          body = (await res.json()) as typeof body;
        } catch (err) {
          throw fail(ctx, 'invalid', `token server ${url.origin} answered with invalid JSON`, { cause: err });
        }
        const token = typeof body.token === 'string' && body.token ? body.token : body.access_token;
        if (typeof token !== 'string' || !token) throw fail(ctx, 'invalid', `token server ${url.origin} answered without a token`);
        const lifetimeMs =
          (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_LIFETIME_S) * 1000;
        const t = now();
        // issued_at only helps when our clock agrees with the token server's; a skewed one would
        // make every token look expired (or eternal), so fall back to the time we received it.
        const issued = typeof body.issued_at === 'string' ? Date.parse(body.issued_at) : NaN;
        const base = !Number.isNaN(issued) && issued <= t && issued > t - lifetimeMs ? issued : t;
        return { header: `Bearer ${token}`, expiresAt: base + lifetimeMs - Math.min(EXPIRY_MARGIN_MS, lifetimeMs / 2) };
      }
      await res.body?.cancel().catch(() => {});
      const where = `token server ${url.origin}`;
      if (res.status === 401) throw fail(ctx, 'unauthorized', `${where} rejected the ${hasCredentials ? 'credentials' : 'anonymous request'}`, { status: 401 });
      if (res.status === 403) throw fail(ctx, 'denied', `${where} denied access`, { status: 403 });
      const retryAfter = res.headers.get('retry-after') ?? undefined;
      if (res.status === 429 || isRetryableStatus(res.status)) {
        if (!last) {
          await sleep(parseRetryAfter(retryAfter) ?? backoffMs(attempt, opts.retryBaseMs), ctx.signal);
          continue;
        }
        if (res.status === 429) throw fail(ctx, 'too-many-requests', `${where}: too many requests`, { status: 429, retryAfter });
        throw fail(ctx, 'unavailable', `${where} unavailable`, { status: res.status });
      }
      throw fail(ctx, 'invalid', `${where} answered unexpectedly`, { status: res.status });
    }
  }

  async function bearer(c: Extract<Challenge, { scheme: 'bearer' }>, scope: string | undefined, ctx: AuthContext): Promise<string> {
    const key = keyOf(c, scope);
    const cached = tokens.get(key);
    if (cached && cached.expiresAt > now()) return cached.header;
    let shared = inflight.get(key);
    if (!shared) {
      const controller = new AbortController();
      const done = () => {
        if (inflight.get(key) === shared) inflight.delete(key);
      };
      const promise = fetchToken(c, scope, { ...ctx, signal: controller.signal }).then(
        (t) => {
          done();
          if (t.expiresAt > now()) tokens.set(key, t);
          return t.header;
        },
        (err) => {
          done();
          throw err;
        },
      );
      // Every caller handles the outcome through waitForToken; this keeps a fetch that all of
      // them left from being an unhandled rejection.
      promise.catch(() => {});
      shared = { promise, controller, waiting: 0, forget: done };
      inflight.set(key, shared);
    }
    return waitForToken(shared, ctx.signal);
  }

  async function headerFor(scope: string | undefined, ctx: AuthContext): Promise<string | undefined> {
    if (!known) return undefined;
    if (known.scheme === 'basic') return hasCredentials ? basicHeader(opts.username!, opts.password!) : undefined;
    return bearer(known, scope ?? known.scope, ctx);
  }

  return {
    get tokenFetches() {
      return tokenFetches;
    },
    headerFor,
    async onUnauthorized(wwwAuthenticate, scope, rejected, ctx) {
      const challenges = wwwAuthenticate ? parseWwwAuthenticate(wwwAuthenticate) : [];
      // Prefer Bearer: it scopes access to one repository, while Basic hands over the password.
      const c = challenges.find((x) => x.scheme === 'bearer') ?? challenges.find((x) => x.scheme === 'basic');
      if (!c) return undefined;
      known = c;
      if (c.scheme === 'bearer' && rejected) {
        for (const [key, t] of tokens) if (t.header === rejected) tokens.delete(key);
      }
      const header = await headerFor(scope, ctx);
      return header === rejected ? undefined : header;
    },
  };
}
