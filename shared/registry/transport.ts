// How bytes reach a registry: which scheme, whether certificates are checked, and redirects that
// never carry the registry's credentials to another host.
import { describeNetworkError } from './retry.js';

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface TransportOptions {
  /** host[:port] */
  registry: string;
  tlsVerify: boolean;
  userAgent: string;
  /** A scheme the operator wrote (a pull-through url: http://...) rather than one to detect. */
  scheme?: 'http' | 'https';
}

export interface Transport {
  /** One request, redirects not followed. */
  fetch: FetchLike;
  /** "https://host[:port]" or, for tlsVerify=false registries that only speak it, "http://…". */
  baseUrl(signal?: AbortSignal): Promise<string>;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 10;
/** Headers that may follow a redirect to another origin (a CDN, S3): nothing that identifies us. */
const CROSS_ORIGIN_HEADERS = new Set(['user-agent', 'accept', 'range']);

let insecureFetch: Promise<FetchLike> | undefined;

/**
 * fetch that accepts any certificate. Node's built-in fetch has no per-request switch for that
 * (only the process-wide NODE_TLS_REJECT_UNAUTHORIZED), so this one request path uses undici's
 * own fetch with an Agent of the same version; it is loaded only when a registry asks for it.
 */
function getInsecureFetch(): Promise<FetchLike> {
  insecureFetch ??= import('undici').then(({ Agent, fetch }) => {
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    return ((url: string, init: RequestInit) =>
      fetch(url, { ...(init as object), dispatcher } as Parameters<typeof fetch>[1])) as unknown as FetchLike;
  });
  return insecureFetch;
}

export function createTransport(opts: TransportOptions): Transport {
  if (opts.scheme === 'http') {
    const base = `http://${opts.registry}`;
    return { fetch: (url, init) => fetch(url, init), baseUrl: async () => base };
  }
  if (opts.scheme === 'https' && !opts.tlsVerify) {
    const base = `https://${opts.registry}`;
    return { fetch: async (url, init) => (await getInsecureFetch())(url, init), baseUrl: async () => base };
  }
  if (opts.tlsVerify) {
    const base = `https://${opts.registry}`;
    return { fetch: (url, init) => fetch(url, init), baseUrl: async () => base };
  }

  let scheme: Promise<string> | undefined;
  const doFetch: FetchLike = async (url, init) => (await getInsecureFetch())(url, init);

  // Like skopeo for an insecure registry: try https without checking the certificate, and fall
  // back to plain http only when https cannot even be spoken (TLS or connection failure). Any
  // HTTP answer over https, even a 401 or 404, settles it on https.
  async function detect(signal?: AbortSignal): Promise<string> {
    const probe = async (base: string) => {
      const res = await doFetch(`${base}/v2/`, {
        method: 'GET',
        headers: { 'User-Agent': opts.userAgent },
        redirect: 'manual',
        signal,
      });
      await res.body?.cancel().catch(() => {});
      return base;
    };
    try {
      return await probe(`https://${opts.registry}`);
    } catch (httpsErr) {
      if (signal?.aborted) throw httpsErr;
      try {
        return await probe(`http://${opts.registry}`);
      } catch (httpErr) {
        if (signal?.aborted) throw httpErr;
        // A TypeError, as fetch's own failures are, so callers retry it like any network error.
        throw new TypeError(
          `neither https (${describeNetworkError(httpsErr)}) nor http (${describeNetworkError(httpErr)}) answered`,
          { cause: httpErr },
        );
      }
    }
  }

  return {
    fetch: doFetch,
    baseUrl(signal) {
      if (!scheme) {
        const p = detect(signal);
        scheme = p;
        // Forget a failed detection so the next attempt probes again.
        p.catch(() => {
          if (scheme === p) scheme = undefined;
        });
      }
      return scheme;
    },
  };
}

/**
 * Follows redirects by hand so the rule is ours, not a fetch version's: the registry's
 * Authorization (and any extra headers) go only to the registry's own origin; a blob redirected
 * to a CDN or bucket gets a presigned URL and must not see our token.
 */
export async function fetchFollowingRedirects(
  doFetch: FetchLike,
  url: string,
  init: RequestInit & { headers: Record<string, string> },
): Promise<Response> {
  const origin = new URL(url).origin;
  let current = url;
  let method = init.method ?? 'GET';
  for (let hop = 0; ; hop++) {
    const sameOrigin = new URL(current).origin === origin;
    const headers = sameOrigin
      ? init.headers
      : Object.fromEntries(Object.entries(init.headers).filter(([k]) => CROSS_ORIGIN_HEADERS.has(k.toLowerCase())));
    const res = await doFetch(current, { ...init, method, headers, redirect: 'manual' });
    const location = res.headers.get('location');
    if (!REDIRECT_STATUSES.has(res.status) || !location) return res;
    await res.body?.cancel().catch(() => {});
    // A plain Error, not fetch's TypeError: a redirect loop is not worth retrying.
    if (hop >= MAX_REDIRECTS) throw new Error(`more than ${MAX_REDIRECTS} redirects from ${url}`);
    current = new URL(location, current).toString();
    if (res.status === 303 && method !== 'HEAD') method = 'GET';
  }
}
