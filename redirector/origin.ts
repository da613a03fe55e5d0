// The origin (scheme://host[:port]) that makes a redirect's Location absolute. Some clients
// resolve a relative Location wrongly (docker-registry-client tries port 80); crane and
// distribution always send absolute ones.
//
// Where it comes from, first match wins:
//   1. serve.public-url, when set: one constant, whatever the request says;
//   2. X-Forwarded-Proto / X-Forwarded-Host (their first value), only from a peer address listed
//      in serve.trusted-proxies, and only values that pass the same checks as a Host;
//   3. the request's own authority: the absolute-form target's, else Host (checked before
//      routing, see request-target.ts), else, for HTTP/1.0 without Host, the local address.
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { parseAddressRange } from '../shared/address-range.js';
import { isValidHost } from './request-target.js';
import type { Reply } from './reply.js';

export interface OriginOptions {
  publicUrl?: string;
  /** Addresses and CIDR ranges (IPv4 or IPv6) whose X-Forwarded-* headers are believed. */
  trustedProxies: readonly string[];
}

function blockListOf(ranges: readonly string[]): BlockList {
  const list = new BlockList();
  for (const r of ranges) {
    const p = parseAddressRange(r);
    if (typeof p === 'string') throw new Error(p); // the config schema already refused it
    if (p.prefix === undefined) list.addAddress(p.address, p.family);
    else list.addSubnet(p.address, p.prefix, p.family);
  }
  return list;
}

/** Whether a socket's peer address is in the list; an IPv4-mapped IPv6 peer counts as its IPv4. */
function isListed(list: BlockList, address: string | undefined): boolean {
  if (!address) return false;
  if (address.startsWith('::ffff:') && isIP(address.slice(7)) === 4) return list.check(address.slice(7), 'ipv4');
  return list.check(address, isIP(address) === 6 ? 'ipv6' : 'ipv4');
}

function firstValue(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const comma = header.indexOf(',');
  return (comma === -1 ? header : header.slice(0, comma)).trim();
}

/** host:port of the socket's local end, for a request that names no authority (HTTP/1.0). */
function localAuthority(req: IncomingMessage): string {
  const a = req.socket.localAddress ?? '127.0.0.1';
  return `${a.includes(':') ? `[${a}]` : a}:${req.socket.localPort}`;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/**
 * The origin for a request; `host` is its authority as request-target.ts checked it (the
 * absolute-form target's, else Host), undefined when it sent none.
 */
export function createOriginResolver(o: OriginOptions): (req: IncomingMessage, host: string | undefined) => string {
  if (o.publicUrl) {
    const fixed = o.publicUrl.replace(/\/+$/, '');
    return () => fixed;
  }
  const trusted = o.trustedProxies.length ? blockListOf(o.trustedProxies) : undefined;
  return (req, host) => {
    let scheme = (req.socket as TLSSocket).encrypted === true ? 'https' : 'http';
    if (trusted) {
      const proto = header(req, 'x-forwarded-proto');
      const fwdHost = header(req, 'x-forwarded-host');
      if ((proto !== undefined || fwdHost !== undefined) && isListed(trusted, req.socket.remoteAddress)) {
        const p = firstValue(proto)?.toLowerCase();
        if (p === 'http' || p === 'https') scheme = p;
        const h = firstValue(fwdHost);
        if (h && isValidHost(h)) host = h;
      }
    }
    return `${scheme}://${host ?? localAuthority(req)}`;
  };
}

/** The absolute variant of a reply last made for each relative redirect, and for which origin. */
const absoluteOf = new WeakMap<Reply, { origin: string; reply: Reply }>();

/**
 * A reply whose Location is a path gets `origin` in front of it; any other reply is returned
 * as it is. The blob redirects are cached Replies (one per version and digest), so their
 * absolute copy is cached beside them, for the last origin seen: with one public name that is
 * every request, and a stream of hostile Hosts costs one small object each, never memory.
 */
export function withOrigin(r: Reply, origin: string): Reply {
  const location = r.headers.Location;
  if (location === undefined || location.charCodeAt(0) !== 47 /* '/' */) return r;
  const hit = absoluteOf.get(r);
  if (hit !== undefined && hit.origin === origin) return hit.reply;
  const reply: Reply = { status: r.status, headers: { ...r.headers, Location: origin + location }, body: r.body };
  absoluteOf.set(r, { origin, reply });
  return reply;
}

/** Whether a reply is a redirect to a path (which withOrigin would change). */
export function hasRelativeLocation(r: Reply): boolean {
  const location = r.headers.Location;
  return location !== undefined && location.charCodeAt(0) === 47;
}
