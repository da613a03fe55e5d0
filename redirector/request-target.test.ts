import { describe, expect, it } from 'vitest';
import { withOrigin } from './origin.js';
import { reply } from './reply.js';
import { readTarget, singleHost } from './request-target.js';

describe('readTarget', () => {
  const h = (...hosts: string[]) => hosts.flatMap((v, i) => [i % 2 ? 'host' : 'Host', v]).concat(['Accept', '*/*']);
  it.each([
    ['/v2/x/manifests/y?n=1', h('r.test:5000'), 1, { ok: true, target: '/v2/x/manifests/y?n=1', host: 'r.test:5000' }],
    ['http://a.test:8080/v2/', h('r.test'), 1, { ok: true, target: '/v2/', host: 'a.test:8080' }],
    ['HTTP://a.test', h('r.test'), 1, { ok: true, target: '/', host: 'a.test' }],
    ['http://a.test?x=1', h('r.test'), 1, { ok: true, target: '/?x=1', host: 'a.test' }],
    ['/v2/', h('[::1]:5000'), 1, { ok: true, target: '/v2/', host: '[::1]:5000' }],
    ['/v2/', [], 0, { ok: true, target: '/v2/', host: undefined }],
    ['/v2/', [], 1, { ok: false, why: 'no Host header' }],
    ['/v2/', h('a', 'b'), 1, { ok: false, why: 'more than one Host header' }],
    ['/v2/', h('a/b'), 1, { ok: false, why: 'invalid Host header' }],
    ['/v2/', h('a, b'), 1, { ok: false, why: 'invalid Host header' }],
    ['http://u@a/v2/', h('a'), 1, { ok: false, why: 'invalid authority in the request target' }],
    ['*', h('a'), 1, { ok: false, why: 'the request target is neither a path nor an absolute http(s) URL' }],
  ])('%s with %j (HTTP/1.%d)', (url, raw, minor, want) => {
    expect(readTarget(url, raw, minor)).toEqual(want);
  });

  it('singleHost reads the raw list, where node keeps only the first', () => {
    expect(singleHost(['HOST', 'a', 'X', 'y'])).toBe('a');
    expect(singleHost(['Host', 'a', 'hOsT', 'a'])).toBeNull();
    expect(singleHost(['Hostname', 'a'])).toBeUndefined();
  });
});

describe('withOrigin', () => {
  it('prefixes a path Location, keeps an absolute one, and reuses the copy for the same origin', () => {
    const rel = reply('GET', 307, { Location: '/published/master/a/b' });
    const a = withOrigin(rel, 'http://r.test');
    expect(a.headers.Location).toBe('http://r.test/published/master/a/b');
    expect(rel.headers.Location).toBe('/published/master/a/b');
    expect(withOrigin(rel, 'http://r.test')).toBe(a);
    expect(withOrigin(rel, 'https://s.test').headers.Location).toBe('https://s.test/published/master/a/b');
    const abs = reply('GET', 307, { Location: 'https://cdn.test/x' });
    expect(withOrigin(abs, 'http://r.test')).toBe(abs);
    const none = reply('GET', 200, {}, '{}');
    expect(withOrigin(none, 'http://r.test')).toBe(none);
  });
});
