// Signed, expiring URLs in nginx's secure_link format, so the embedded file server and a
// generated nginx config verify the same links:
//   secure_link $arg_md5,$arg_expires;  secure_link_md5 "$secure_link_expires$uri <secret>";
import crypto from 'node:crypto';

/** nginx hashes the expires argument exactly as sent, so it stays a string here too. */
function md5For(uriPath: string, secret: string, expires: string): string {
  return crypto.createHash('md5').update(`${expires}${uriPath} ${secret}`).digest('base64url');
}

/** The path (as nginx's $uri sees it, decoded) and the expiry in Unix seconds. */
export function signPath(uriPath: string, secret: string, expires: number): string {
  return `md5=${md5For(uriPath, secret, String(expires))}&expires=${expires}`;
}

export function signedQuery(uriPath: string, secret: string, ttlMs: number, now = Date.now()): string {
  return signPath(uriPath, secret, Math.floor((now + ttlMs) / 1000));
}

export type SignatureCheck = 'ok' | 'missing' | 'invalid' | 'expired';

export function checkSignature(uriPath: string, md5: string | undefined, expires: string | undefined, secret: string, now = Date.now()): SignatureCheck {
  if (!md5 || !expires) return 'missing';
  if (!/^\d+$/.test(expires)) return 'invalid';
  const want = Buffer.from(md5For(uriPath, secret, expires));
  const got = Buffer.from(md5);
  if (want.length !== got.length || !crypto.timingSafeEqual(want, got)) return 'invalid';
  return Number(expires) * 1000 < now ? 'expired' : 'ok';
}
