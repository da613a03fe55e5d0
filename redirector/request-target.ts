// What every request is checked for before routing (RFC 9112 section 3.2), cheaply enough for
// the hot path: exactly one Host, and a valid one; an absolute-form target
// (`GET http://host/v2/...`) is routed by its path, its authority standing in for Host.

/** The path-and-query to route by, and the authority the client addressed (undefined: none sent). */
export type RequestTarget = { ok: true; target: string; host: string | undefined } | { ok: false; why: string };

/**
 * A host[:port] fit to put into a Location: a DNS-like name or IPv4 address, or an IPv6
 * literal in brackets, and an optional port. Userinfo, paths, spaces, commas (two Hosts
 * joined) and everything else a hostile Host could use to point a redirect elsewhere fail.
 */
const HOST_RE = /^(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

export function isValidHost(host: string): boolean {
  return HOST_RE.test(host);
}

/**
 * Node keeps only the first of several Host headers in `req.headers`, so the raw list is read:
 * the Host header's value, or `null` when there are two or more.
 */
export function singleHost(rawHeaders: readonly string[]): string | undefined | null {
  let host: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 4 && (name === 'Host' || name.toLowerCase() === 'host')) {
      if (host !== undefined) return null;
      host = rawHeaders[i + 1]!;
    }
  }
  return host;
}

const ABSOLUTE_RE = /^https?:\/\/([^/?#]*)(.*)$/i;

/**
 * `url` is node's `req.url` (the request target as sent); `httpMinor` is 0 for HTTP/1.0, which
 * may omit Host.
 */
export function readTarget(url: string, rawHeaders: readonly string[], httpMinor: number): RequestTarget {
  const host = singleHost(rawHeaders);
  if (host === null) return { ok: false, why: 'more than one Host header' };
  if (host !== undefined && !isValidHost(host)) return { ok: false, why: 'invalid Host header' };
  if (host === undefined && httpMinor >= 1) return { ok: false, why: 'no Host header' };
  if (url.charCodeAt(0) === 47 /* '/' */) return { ok: true, target: url, host };
  const m = ABSOLUTE_RE.exec(url);
  if (!m) return { ok: false, why: 'the request target is neither a path nor an absolute http(s) URL' };
  const authority = m[1]!;
  if (!isValidHost(authority)) return { ok: false, why: 'invalid authority in the request target' };
  const rest = m[2]!;
  return { ok: true, target: rest.startsWith('/') ? rest : `/${rest}`, host: authority };
}
