// A small docker token server (the "realm" of a registry's Bearer challenge) for tests against a
// real docker-registry with `auth: token`: it checks Basic credentials, grants per repository what
// a user may do, and signs ES256 JWTs with a throwaway key whose self-signed certificate is the
// registry's rootcertbundle. Every request is recorded so tests can count token fetches per scope
// and see which account asked.
//
// distribution 2.8 finds the signing key from the JWT header: an `x5c` chain verified against the
// rootcertbundle, a `jwk`, or a `kid` naming a key of the bundle in libtrust's key ID format
// (base32 of the first 240 bits of sha256(SPKI DER), in groups of 4 joined by ':'). We send `kid`.
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { makeCa } from './certs.js';

export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequest {
  /** The user of the Basic credentials, if any were sent (whether or not they were right). */
  user?: string;
  /** The `account` query parameter. */
  account?: string;
  service?: string;
  /** Every `scope` parameter as sent, e.g. repository:priv/a:pull. */
  scopes: string[];
  status: number;
  /** What the issued token grants (empty for anonymous or an unknown repo). */
  granted: TokenAccess[];
}

export interface TokenIssuerOptions {
  /** Where the signing key and certificate are written. */
  dir: string;
  /** user -> password. */
  users: Record<string, string>;
  /** user -> repository name ('*' for every one) -> actions the user may be granted there. */
  grants: Record<string, Record<string, string[]>>;
  /** Token lifetime in seconds (changeable later through `expiresIn`); default 300. */
  expiresIn?: number;
}

export interface TokenIssuer {
  /** http://127.0.0.1:PORT/token: the registry's realm. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate of the signing key: the registry's rootcertbundle. */
  rootCertBundle: string;
  /** Lifetime of the tokens issued from now on, in seconds. */
  expiresIn: number;
  requests: TokenRequest[];
  /** The requests whose scopes include exactly `scope`. */
  requestsFor(scope: string): TokenRequest[];
  /** Changes a user's password from now on (an upstream account whose password was rotated). */
  setPassword(user: string, pass: string): void;
  /** The `sub` of a token this issuer signed (checked against its key); undefined otherwise. */
  subjectOf(token: string): string | undefined;
  close(): Promise<void>;
}

const SERVICE = 'derrick-test-registry';
const ISSUER = 'derrick-test-token-issuer';

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** RFC 4648 base32 without padding: libtrust's key ID alphabet. */
function base32(bytes: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** libtrust's KeyID of a public key: what distribution matches a JWT's `kid` against. */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const id = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return id.match(/.{4}/g)!.join(':');
}

/** repository:<name>:<actions>; a name may hold ':' only in theory, so split at the first and last. */
function parseScope(scope: string): TokenAccess | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',').filter(Boolean) };
}

function basicUser(header: string | undefined): { user: string; pass: string } | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = text.indexOf(':');
  return i < 0 ? undefined : { user: text.slice(0, i), pass: text.slice(i + 1) };
}

export async function startTokenIssuer(opts: TokenIssuerOptions): Promise<TokenIssuer> {
  const pem = await makeCa(opts.dir, 'token-signer');
  const privateKey = createPrivateKey(await readFile(pem.key));
  const publicKey = createPublicKey(privateKey);
  const kid = libtrustKeyId(publicKey);
  const requests: TokenRequest[] = [];
  const users = { ...opts.users };

  const signJwt = (claims: object) => {
    const input = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'ES256', kid }))}.${b64url(JSON.stringify(claims))}`;
    // JOSE wants ES256 signatures as raw r||s, not DER.
    const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64url(sig)}`;
  };

  const grantsOf = (user: string | undefined, wanted: TokenAccess[]): TokenAccess[] => {
    const table = user === undefined ? {} : (opts.grants[user] ?? {});
    const out: TokenAccess[] = [];
    for (const w of wanted) {
      if (w.type !== 'repository') continue;
      const allowed = table[w.name] ?? table['*'] ?? [];
      const actions = w.actions.filter((a) => allowed.includes(a));
      if (actions.length) out.push({ type: w.type, name: w.name, actions });
    }
    return out;
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://issuer');
    const creds = basicUser(req.headers.authorization);
    const record: TokenRequest = { scopes: url.searchParams.getAll('scope'), status: 0, granted: [] };
    if (creds) record.user = creds.user;
    const account = url.searchParams.get('account');
    if (account !== null) record.account = account;
    const service = url.searchParams.get('service');
    if (service !== null) record.service = service;
    requests.push(record);
    const answer = (status: number, body: object) => {
      record.status = status;
      const text = JSON.stringify(body);
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (url.pathname !== '/token') return answer(404, { details: 'not found' });
    // Wrong credentials are refused outright; no credentials get an anonymous token (Docker Hub does this).
    if (creds && users[creds.user] !== creds.pass) return answer(401, { details: 'incorrect username or password' });
    const wanted = record.scopes.flatMap((s) => s.split(' ')).map(parseScope).filter((a): a is TokenAccess => a !== undefined);
    record.granted = grantsOf(creds?.user, wanted);
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = issuer.expiresIn;
    const token = signJwt({
      iss: ISSUER,
      sub: creds?.user ?? '',
      aud: service ?? SERVICE,
      exp: now + expiresIn,
      nbf: now - 5,
      iat: now,
      jti: randomBytes(12).toString('hex'),
      access: record.granted,
    });
    answer(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const issuer: TokenIssuer = {
    realm: `http://127.0.0.1:${port}/token`,
    service: SERVICE,
    issuer: ISSUER,
    rootCertBundle: pem.cert,
    expiresIn: opts.expiresIn ?? 300,
    requests,
    requestsFor: (scope) => requests.filter((r) => r.scopes.includes(scope)),
    setPassword(user, pass) {
      users[user] = pass;
    },
    subjectOf(token) {
      const [h, p, s] = token.split('.');
      if (!h || !p || !s) return undefined;
      const ok = verify('sha256', Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
      if (!ok) return undefined;
      return (JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as { sub?: string }).sub;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return issuer;
}
