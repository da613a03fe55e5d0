import { describe, it, expect } from 'vitest';
import { basicHeader, createAuthenticator, parseWwwAuthenticate, pullScope } from './auth.js';
import type { FetchLike } from './transport.js';

describe('parseWwwAuthenticate', () => {
  it('reads a docker Bearer challenge, commas inside quotes included', () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:library/alpine:pull,push',
      },
    ]);
  });

  it('reads Basic, spaces after commas, unquoted values and the error parameter', () => {
    expect(parseWwwAuthenticate('Basic realm="Registry Realm"')).toEqual([{ scheme: 'basic', realm: 'Registry Realm' }]);
    expect(parseWwwAuthenticate('bearer realm=https://t.example/token, service=reg, error="invalid_token"')).toEqual([
      { scheme: 'bearer', realm: 'https://t.example/token', service: 'reg', error: 'invalid_token' },
    ]);
  });

  it('splits several challenges in one header and drops unknown schemes', () => {
    const got = parseWwwAuthenticate('Negotiate, Basic realm="r", Bearer realm="https://t/x",service="s"');
    expect(got).toEqual([
      { scheme: 'basic', realm: 'r' },
      { scheme: 'bearer', realm: 'https://t/x', service: 's' },
    ]);
  });

  it('ignores a Bearer challenge without a realm and survives garbage', () => {
    expect(parseWwwAuthenticate('Bearer service="s"')).toEqual([]);
    expect(parseWwwAuthenticate('"";;==,,')).toEqual([]);
    expect(parseWwwAuthenticate('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', realm: 'unterminated' }]);
  });
});

describe('helpers', () => {
  it('builds the pull scope and the Basic header', () => {
    expect(pullScope('library/alpine')).toBe('repository:library/alpine:pull');
    expect(basicHeader('user', 'pä:ss')).toBe('Basic ' + Buffer.from('user:pä:ss').toString('base64'));
  });
});

describe('createAuthenticator: one token request shared by concurrent callers', () => {
  const CHALLENGE = 'Bearer realm="https://auth.test/token",service="reg"';
  const SCOPE = 'repository:a/b:pull';

  /** A token server whose answers the test releases by hand; it records each request's signal. */
  function slowTokenServer() {
    const requests: Array<{ signal: AbortSignal | undefined; answer: () => void }> = [];
    const fetch = ((_url: string, init?: RequestInit) =>
      new Promise<Response>((resolve, reject) => {
        const signal = init?.signal ?? undefined;
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
        requests.push({ signal, answer: () => resolve(new Response(JSON.stringify({ token: `t${requests.length}`, expires_in: 300 }))) });
      })) as unknown as FetchLike;
    const auth = createAuthenticator({ registry: 'reg.test', fetch, userAgent: 'test', retries: 0, retryBaseMs: 1 });
    return { auth, requests };
  }

  it('keeps serving the others when the caller that started the request gives up', async () => {
    const { auth, requests } = slowTokenServer();
    const first = new AbortController();
    const p1 = auth.onUnauthorized(CHALLENGE, SCOPE, undefined, { repository: 'a/b', signal: first.signal });
    const p2 = auth.headerFor(SCOPE, { repository: 'a/b', signal: new AbortController().signal });
    await Promise.resolve();
    first.abort(new Error('client went away'));
    await expect(p1).rejects.toThrow('client went away');
    expect(requests).toHaveLength(1);
    expect(requests[0]!.signal?.aborted).toBe(false);
    requests[0]!.answer();
    await expect(p2).resolves.toBe('Bearer t1');
    expect(auth.tokenFetches).toBe(1);
  });

  it('aborts the request once every caller has given up, and starts afresh after', async () => {
    const { auth, requests } = slowTokenServer();
    const a = new AbortController();
    const b = new AbortController();
    const p1 = auth.onUnauthorized(CHALLENGE, SCOPE, undefined, { repository: 'a/b', signal: a.signal });
    const p2 = auth.headerFor(SCOPE, { repository: 'a/b', signal: b.signal });
    await Promise.resolve();
    a.abort(new Error('gone a'));
    b.abort(new Error('gone b'));
    await expect(p1).rejects.toThrow('gone a');
    await expect(p2).rejects.toThrow('gone b');
    expect(requests[0]!.signal?.aborted).toBe(true);
    const p3 = auth.headerFor(SCOPE, { repository: 'a/b' });
    await new Promise((r) => setImmediate(r));
    expect(requests).toHaveLength(2);
    requests[1]!.answer();
    await expect(p3).resolves.toBe('Bearer t2');
  });
});
