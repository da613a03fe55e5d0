// Basic auth against an htpasswd file of bcrypt entries. bcrypt is slow on purpose, so a
// verified (user, password) pair is remembered by its hash for the life of the file.
import fs from 'node:fs';
import crypto from 'node:crypto';
import bcrypt from 'bcryptjs';

export interface Authenticator {
  /** The user for a valid Authorization header, or undefined. */
  check(authorization: string | undefined): string | undefined;
  readonly realm: string;
}

export function parseHtpasswd(text: string, file: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split('\n').forEach((line, i) => {
    const l = line.trim();
    if (!l || l.startsWith('#')) return;
    const colon = l.indexOf(':');
    const hash = l.slice(colon + 1);
    if (colon <= 0 || !/^\$2[aby]\$\d\d\$/.test(hash)) throw new Error(`${file}:${i + 1}: not a "user:bcrypt-hash" line`);
    users.set(l.slice(0, colon), hash.replace(/^\$2y\$/, '$2b$'));
  });
  return users;
}

export function createAuthenticator(htpasswdFile: string | undefined, realm = 'derrick'): Authenticator {
  const users = htpasswdFile ? parseHtpasswd(fs.readFileSync(htpasswdFile, 'utf8'), htpasswdFile) : new Map<string, string>();
  const verified = new Map<string, string>();
  return {
    realm,
    check(authorization) {
      if (!authorization?.startsWith('Basic ')) return undefined;
      const key = crypto.createHash('sha256').update(authorization).digest('hex');
      const hit = verified.get(key);
      if (hit) return hit;
      const decoded = Buffer.from(authorization.slice(6), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return undefined;
      const user = decoded.slice(0, colon);
      const hash = users.get(user);
      if (!hash || !bcrypt.compareSync(decoded.slice(colon + 1), hash)) return undefined;
      verified.set(key, user);
      return user;
    },
  };
}
