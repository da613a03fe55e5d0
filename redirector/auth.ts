// Basic auth against an htpasswd file of bcrypt entries, without stalling the server:
//   - bcrypt runs in a worker pool (password-pool.ts), never on the event loop;
//   - recent answers (successes and failures) are remembered by a hash of the credentials in a
//     bounded cache, and identical checks in flight share one bcrypt run;
//   - an address that keeps failing waits longer before each check (failure-throttle.ts).
// A header that is missing, malformed or already answered is decided synchronously, so the
// anonymous path never waits for anything.
import fs from 'node:fs';
import crypto from 'node:crypto';
import os from 'node:os';
import { errors } from '../shared/errors.js';
import type { CredentialCheck } from './access.js';
import { createFailureThrottle, type FailureThrottle } from './failure-throttle.js';
import { createPasswordPool, PoolBusyError, type PasswordPool } from './password-pool.js';
import { TtlCache } from './ttl-cache.js';

export interface Authenticator extends CredentialCheck {
  /** True when an htpasswd file with at least one user is configured. */
  readonly hasUsers: boolean;
  close(): Promise<void>;
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

/** The credentials of a Basic header (scheme names are case-insensitive), or undefined when malformed. */
export function parseBasic(authorization: string): { token: string; user: string; password: string } | undefined {
  const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(authorization);
  if (!m || m[1]!.length % 4 !== 0) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { token: m[1]!, user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

export interface AuthenticatorOptions {
  realm?: string;
  pool?: PasswordPool;
  throttle?: FailureThrottle;
  /** Remembered answers at most, and for how long. */
  cacheSize?: number;
  successTtlMs?: number;
  failureTtlMs?: number;
}

export function createAuthenticator(htpasswdFile: string | undefined, opts: AuthenticatorOptions = {}): Authenticator {
  const realm = opts.realm ?? 'derrick';
  const users = htpasswdFile ? parseHtpasswd(fs.readFileSync(htpasswdFile, 'utf8'), htpasswdFile) : new Map<string, string>();
  // One core stays free for the event loop on small machines.
  let pool = opts.pool;
  const getPool = () => (pool ??= createPasswordPool({ size: Math.max(1, Math.min(4, os.availableParallelism() - 1)), maxQueue: 512 }));
  const throttle = opts.throttle ?? createFailureThrottle();
  const answers = new TtlCache<string, string | null>(opts.cacheSize ?? 4096);
  const inflight = new Map<string, Promise<string | undefined>>();
  // An unknown user is checked against some real hash (and refused whatever it says), so that it
  // costs what a wrong password costs and the timing doesn't tell which user names exist.
  const decoy = users.values().next().value;
  const successTtl = opts.successTtlMs ?? 10 * 60_000;
  const failureTtl = opts.failureTtlMs ?? 30_000;

  const remember = (key: string, user: string | undefined, client: string | undefined) => {
    answers.set(key, user ?? null, user === undefined ? failureTtl : successTtl);
    if (user === undefined) throttle.failed(client);
    else throttle.succeeded(client);
    return user;
  };

  const verify = async (key: string, user: string, password: string, client: string | undefined): Promise<string | undefined> => {
    const wait = throttle.delayMs(client);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const hash = users.get(user);
    let ok: boolean;
    try {
      ok = await getPool().verify(password, hash ?? decoy!);
    } catch (err) {
      if (err instanceof PoolBusyError) throw errors.tooManyRequests('1');
      throw err;
    }
    return remember(key, ok && hash !== undefined ? user : undefined, client);
  };

  return {
    realm,
    hasUsers: users.size > 0,
    check(authorization, client) {
      if (authorization === undefined || users.size === 0) return undefined;
      const basic = parseBasic(authorization);
      if (!basic) {
        throttle.failed(client);
        return undefined;
      }
      const key = crypto.createHash('sha256').update(basic.token).digest('base64');
      const known = answers.get(key);
      if (known !== undefined && known !== null) {
        throttle.succeeded(client);
        return known;
      }
      if (known === null) {
        // A remembered failure costs no bcrypt, but a throttled address still waits for it.
        throttle.failed(client);
        const wait = throttle.delayMs(client);
        return wait === 0 ? undefined : new Promise<undefined>((r) => setTimeout(() => r(undefined), wait));
      }
      let running = inflight.get(key);
      if (!running) {
        running = verify(key, basic.user, basic.password, client).finally(() => inflight.delete(key));
        inflight.set(key, running);
      }
      return running;
    },
    close: async () => {
      await pool?.close();
    },
  };
}
