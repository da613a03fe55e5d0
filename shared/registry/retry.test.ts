import { describe, it, expect } from 'vitest';
import { createLimiter } from './limiter.js';
import { MAX_RETRY_AFTER_MS, backoffMs, isNetworkError, isRetryableStatus, parseRetryAfter, sleep } from './retry.js';
import { describeImage, UpstreamError } from './errors.js';

describe('parseRetryAfter', () => {
  const now = Date.parse('2025-01-01T00:00:00Z');
  it('reads delta-seconds and HTTP-dates, capped', () => {
    expect(parseRetryAfter('1', now)).toBe(1000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Tue, 31 Dec 2024 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('3600', now)).toBe(MAX_RETRY_AFTER_MS);
  });
  it('returns undefined for absent or unreadable values', () => {
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter('-1')).toBeUndefined();
  });
});

describe('backoff', () => {
  it('doubles per attempt with jitter in the upper half, capped at 10s', () => {
    expect(backoffMs(0, 100, () => 0)).toBe(50);
    expect(backoffMs(0, 100, () => 1)).toBe(100);
    expect(backoffMs(3, 100, () => 0)).toBe(400);
    expect(backoffMs(30, 100, () => 1)).toBe(10_000);
  });
  it('classifies statuses and errors', () => {
    expect([500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 404, 429, 501].some(isRetryableStatus)).toBe(false);
    expect(isNetworkError(new TypeError('fetch failed'))).toBe(true);
    expect(isNetworkError(Object.assign(new Error('read'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isNetworkError(new Error('x', { cause: Object.assign(new Error('y'), { code: 'ECONNREFUSED' }) }))).toBe(true);
    expect(isNetworkError(new Error('socket hang up'))).toBe(true);
    expect(isNetworkError(new DOMException('aborted', 'AbortError'))).toBe(false);
    expect(isNetworkError(new Error('bad json'))).toBe(false);
  });
  it('sleep stops at abort', async () => {
    const ac = new AbortController();
    const p = sleep(10_000, ac.signal);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
  });
});

describe('limiter', () => {
  it('admits at most N, hands slots over in order, tolerates double release', async () => {
    const lim = createLimiter(2);
    const r1 = await lim.acquire();
    const r2 = await lim.acquire();
    const order: number[] = [];
    const p3 = lim.acquire().then((r) => (order.push(3), r));
    const p4 = lim.acquire().then((r) => (order.push(4), r));
    await new Promise((r) => setTimeout(r, 10));
    expect(lim.active).toBe(2);
    expect(lim.waiting).toBe(2);
    r1();
    r1();
    const r3 = await p3;
    expect(order).toEqual([3]);
    expect(lim.waiting).toBe(1);
    r2();
    const r4 = await p4;
    expect(order).toEqual([3, 4]);
    r3();
    r4();
    expect(lim.active).toBe(0);
  });
  it('drops an aborted waiter from the queue', async () => {
    const lim = createLimiter(1);
    const r1 = await lim.acquire();
    const ac = new AbortController();
    const p = lim.acquire(ac.signal);
    ac.abort(new Error('gone'));
    await expect(p).rejects.toThrow('gone');
    expect(lim.waiting).toBe(0);
    r1();
    expect(lim.active).toBe(0);
  });
});

describe('UpstreamError', () => {
  it('names the image as skopeo would', () => {
    expect(describeImage('127.0.0.1:5000', 'library/alpine', '3.20')).toBe('docker://127.0.0.1:5000/library/alpine:3.20');
    expect(describeImage('r', 'a', 'sha256:' + 'a'.repeat(64))).toBe(`docker://r/a@sha256:${'a'.repeat(64)}`);
    const e = new UpstreamError({ kind: 'not-found', registry: '127.0.0.1:5000', repository: 'library/alpine', reference: '3.20', detail: 'manifest unknown', status: 404 });
    expect(e.message).toBe('docker://127.0.0.1:5000/library/alpine:3.20: manifest unknown (404)');
    expect(e).toBeInstanceOf(Error);
    expect(e.kind).toBe('not-found');
  });
});

describe('describeNetworkError', async () => {
  const { describeNetworkError } = await import('./retry.js');
  it('digs the socket error out of fetch and keeps OpenSSL noise out', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(describeNetworkError(new TypeError('fetch failed', { cause: refused }))).toBe('connect ECONNREFUSED 127.0.0.1:1');
    expect(describeNetworkError(new TypeError('fetch failed', { cause: new AggregateError([refused]) }))).toBe('connect ECONNREFUSED 127.0.0.1:1');
    const ssl = Object.assign(new Error('80:error:0A00010B:SSL routines:wrong version number:../deps/x.c:350:'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' });
    expect(describeNetworkError(new TypeError('fetch failed', { cause: ssl }))).toBe('TLS handshake failed (ERR_SSL_WRONG_VERSION_NUMBER)');
    const cert = Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    expect(describeNetworkError(new TypeError('fetch failed', { cause: cert }))).toBe('self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)');
    expect(describeNetworkError(new TypeError('neither https nor http answered', { cause: refused }))).toBe('neither https nor http answered');
  });
});
