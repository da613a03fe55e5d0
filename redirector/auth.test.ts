// The authenticator: bcrypt in worker threads, remembered answers, shared in-flight checks, a
// per-address slow-down for repeated failures, case-insensitive schemes.
import fs from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tmpDir, type TmpDir } from '../test/helpers/tmp.js';
import { createAuthenticator, parseBasic, type Authenticator } from './auth.js';
import { decideFileAccess } from './access.js';
import { createFailureThrottle } from './failure-throttle.js';
import { createPasswordPool, PoolBusyError, type PasswordPool } from './password-pool.js';

const basic = (s: string, scheme = 'Basic') => `${scheme} ${Buffer.from(s).toString('base64')}`;

let tmp: TmpDir;
let file: string;
let hash: string;

beforeAll(async () => {
  tmp = await tmpDir('derrick-auth');
  file = path.join(tmp.dir, 'htpasswd');
  hash = bcrypt.hashSync('s3cret', 5).replace(/^\$2b\$/, '$2y$'); // as `htpasswd -B` writes it
  await fs.writeFile(file, `# users\nalice:${hash}\n`);
});

afterAll(async () => {
  await tmp?.cleanup();
});

describe('parseBasic', () => {
  it('reads any case of the scheme and refuses what is not user:password in base64', () => {
    for (const scheme of ['Basic', 'basic', 'BASIC', 'bAsIc']) expect(parseBasic(basic('alice:s3cret', scheme))?.user).toBe('alice');
    expect(parseBasic(basic('alice:pa:ss'))).toMatchObject({ user: 'alice', password: 'pa:ss' });
    expect(parseBasic('Basic %%%')).toBeUndefined();
    expect(parseBasic('Basic YWxpY2U')).toBeUndefined(); // unpadded
    expect(parseBasic(basic('no-colon'))).toBeUndefined();
    expect(parseBasic(`Bearer ${Buffer.from('alice:s3cret').toString('base64')}`)).toBeUndefined();
    expect(parseBasic('Basic')).toBeUndefined();
  });
});

describe('createAuthenticator', () => {
  let auth: Authenticator;
  beforeAll(() => {
    auth = createAuthenticator(file, { throttle: createFailureThrottle({ free: 3, baseMs: 1000, maxMs: 1000, windowMs: 60_000, maxClients: 100 }) });
  });
  afterAll(async () => {
    await auth.close();
  });

  it('checks off the event loop, then answers from memory synchronously', async () => {
    const first = auth.check(basic('alice:s3cret'), '10.0.0.1');
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toBe('alice');
    expect(auth.check(basic('alice:s3cret'), '10.0.0.1')).toBe('alice');
    // The same credentials under another spelling of the scheme are the same entry.
    expect(auth.check(basic('alice:s3cret', 'basic'), '10.0.0.1')).toBe('alice');
  });

  it('remembers failures too, and refuses unknown users and malformed headers', async () => {
    expect(await auth.check(basic('alice:wrong'), '10.0.0.2')).toBeUndefined();
    expect(auth.check(basic('alice:wrong'), '10.0.0.3')).toBeUndefined(); // remembered: synchronous
    expect(await auth.check(basic('mallory:s3cret'), '10.0.0.4')).toBeUndefined();
    expect(auth.check('Basic !!!', '10.0.0.5')).toBeUndefined();
    expect(auth.check(undefined, '10.0.0.5')).toBeUndefined();
  });

  it('shares one check between identical requests in flight', async () => {
    const a = auth.check(basic('alice:other-1'), '10.0.1.1');
    const b = auth.check(basic('alice:other-1'), '10.0.1.2');
    expect(a).toBeInstanceOf(Promise);
    expect(b).toBe(a);
    expect(await a).toBeUndefined();
  });

  it('slows down an address that keeps failing, and nobody else', async () => {
    const slow = '10.0.2.1';
    for (let i = 0; i < 3; i++) await auth.check(basic(`alice:guess-${i}`), slow);
    let t0 = performance.now();
    expect(await auth.check(basic('alice:guess-x'), slow)).toBeUndefined();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(990);
    // A remembered failure from that address waits too.
    t0 = performance.now();
    expect(await auth.check(basic('alice:guess-0'), slow)).toBeUndefined();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(990);
    // Another address is not slowed down, and a success clears the count.
    t0 = performance.now();
    expect(await auth.check(basic('alice:guess-y'), '10.0.2.2')).toBeUndefined();
    expect(performance.now() - t0).toBeLessThan(990);
    expect(auth.check(basic('alice:s3cret'), slow)).toBe('alice');
    t0 = performance.now();
    await auth.check(basic('alice:guess-z'), slow);
    expect(performance.now() - t0).toBeLessThan(990);
  });

  it('without an htpasswd nobody is a user', () => {
    const none = createAuthenticator(undefined);
    expect(none.hasUsers).toBe(false);
    expect(none.check(basic('alice:s3cret'))).toBeUndefined();
  });
});

describe('createPasswordPool', () => {
  let pool: PasswordPool;
  afterAll(async () => {
    await pool?.close();
  });

  it('verifies in workers and refuses checks beyond its queue', async () => {
    pool = createPasswordPool({ size: 1, maxQueue: 2 });
    const h = bcrypt.hashSync('pw', 8);
    const running = [pool.verify('pw', h), pool.verify('no', h), pool.verify('pw', h)];
    await expect(pool.verify('pw', h)).rejects.toBeInstanceOf(PoolBusyError);
    expect(await Promise.all(running)).toEqual([true, false, true]);
    expect(await pool.verify('pw', 'not a hash')).toBe(false);
  });
});

describe('decideFileAccess', () => {
  const req = (segments: string[], headers: Record<string, string> = {}) => ({
    uri: '/published/' + segments.join('/'),
    segments,
    header: (n: string) => headers[n],
    query: () => undefined,
  });
  const yes = { realm: 'derrick', check: (h: string | undefined) => (h === 'ok' ? 'alice' : undefined) };

  it('fails closed when protection is unknown or its lookup throws', async () => {
    const file = ['master', 'x~y', 'ts', 'tags', 'list'];
    for (const isProtected of [() => undefined, () => { throw new Error('index broken'); }, async () => undefined, () => Promise.reject(new Error('x'))]) {
      const d = await decideFileAccess({ anonymous: true, isProtected, auth: yes }, req(file));
      expect(d).not.toBe('ok');
      expect((d as { code: string }).code).toBe('UNAUTHORIZED');
      expect(await decideFileAccess({ anonymous: true, isProtected, auth: yes }, req(file, { authorization: 'ok' }))).toBe('ok');
    }
    expect(decideFileAccess({ anonymous: true, isProtected: () => false }, req(file))).toBe('ok');
    expect((decideFileAccess({ anonymous: false, isProtected: () => false }, req(file)) as { code: string }).code).toBe('UNAUTHORIZED');
  });

  it('never serves app/, redirect files or anything outside master/<key>/ and web/<key>/', () => {
    const open = { anonymous: true, isProtected: () => false };
    for (const s of [['app', 'a.json'], ['master', 'a', 'ts', 'redirect.json'], ['web', 'a', 'redirect.json'], ['web', 'a'], ['other', 'a', 'b'], ['master']]) {
      expect(decideFileAccess(open, req(s)), s.join('/')).toBe('hidden');
    }
    // A tag may be called redirect.json: its manifest is served.
    expect(decideFileAccess(open, req(['web', 'a', 'manifests', 'oci', 'redirect.json']))).toBe('ok');
  });
});
