// How an upstream's failure reaches the client (one mapping, errors.ts): the spec code, the
// status, the headers and the words on the wire, and which failures let a cached copy be served.
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../shared/errors.js';
import { UpstreamError, type UpstreamErrorKind } from '../../shared/registry/errors.js';
import { isUpstreamDown, upstreamToRegistryError } from './errors.js';
import { FillWaitTimeout } from './fill-lock.js';

const UP = 'http://up.example';
const upstream = (kind: UpstreamErrorKind, extra: { retryAfter?: string; status?: number } = {}) =>
  new UpstreamError({ kind, registry: 'up.example', repository: 'lib/app', reference: 'v1', detail: 'it broke', ...extra });
const named = (name: string, message: string) => Object.assign(new Error(message), { name });
const fsError = (code: string, syscall?: string) => Object.assign(new Error(`${code}: it broke`), { code, ...(syscall ? { syscall } : {}) });

const wire = (e: RegistryError) => ({ code: e.code, status: e.status, message: e.message, detail: e.detail, headers: e.headers });

describe('upstreamToRegistryError', () => {
  const where = { name: 'hub/lib/app', reference: 'v1' };
  it.each([
    ['not-found, manifest', upstream('not-found'), 'manifest', { code: 'MANIFEST_UNKNOWN', status: 404, message: 'manifest unknown to upstream', detail: where, headers: {} }],
    ['not-found, blob', upstream('not-found'), 'blob', { code: 'BLOB_UNKNOWN', status: 404, message: 'blob unknown to upstream', detail: { name: 'hub/lib/app', digest: 'v1' }, headers: {} }],
    ['not-found, tags', upstream('not-found'), 'tags', { code: 'NAME_UNKNOWN', status: 404, message: 'repository unknown to upstream', detail: { name: 'hub/lib/app' }, headers: {} }],
    ['429 with Retry-After', upstream('too-many-requests', { retryAfter: '7' }), 'manifest', { code: 'TOOMANYREQUESTS', status: 429, message: `upstream ${UP} is rate limiting`, detail: where, headers: { 'Retry-After': '7' } }],
    ['429 without Retry-After', upstream('too-many-requests'), 'manifest', { code: 'TOOMANYREQUESTS', status: 429, message: `upstream ${UP} is rate limiting`, detail: where, headers: {} }],
    ['network', upstream('network'), 'manifest', { code: 'UNAVAILABLE', status: 503, message: `upstream ${UP} is unreachable: docker://up.example/lib/app:v1: it broke`, detail: where, headers: {} }],
    ['unauthorized', upstream('unauthorized', { status: 401 }), 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} refused derrick's credentials: docker://up.example/lib/app:v1: it broke (401)`, detail: where, headers: {} }],
    ['denied', upstream('denied'), 'blob', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} refused derrick's credentials: docker://up.example/lib/app:v1: it broke`, detail: where, headers: {} }],
    ['unavailable (5xx)', upstream('unavailable', { status: 500 }), 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: docker://up.example/lib/app:v1: it broke (500)`, detail: where, headers: {} }],
    ['invalid', upstream('invalid'), 'tags', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: docker://up.example/lib/app:v1: it broke`, detail: where, headers: {} }],
    ['timeout', named('TimeoutError', 'The operation was aborted due to timeout'), 'manifest', { code: 'UNAVAILABLE', status: 504, message: `upstream ${UP} timed out`, detail: where, headers: {} }],
    ['another worker still filling', new FillWaitTimeout('sha256:aa', 42), 'blob', { code: 'UNAVAILABLE', status: 503, message: 'another derrick process (pid 42) is still fetching sha256:aa; retry later', detail: where, headers: { 'Retry-After': '5' } }],
    ['a full disk', fsError('ENOSPC', 'write'), 'blob', { code: 'UNAVAILABLE', status: 503, message: "derrick's store failed: ENOSPC: it broke", detail: where, headers: {} }],
    ['a read-only store', fsError('EROFS', 'open'), 'manifest', { code: 'UNAVAILABLE', status: 503, message: "derrick's store failed: EROFS: it broke", detail: where, headers: {} }],
    // Not a syscall's failure (no syscall), or a code that is not the disk's: the upstream's fault.
    ['an ENOSPC without a syscall', fsError('ENOSPC'), 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: ENOSPC: it broke`, detail: where, headers: {} }],
    ['a refused connection (not the disk)', fsError('ECONNREFUSED', 'connect'), 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: ECONNREFUSED: it broke`, detail: where, headers: {} }],
    ['any other error', new TypeError('fetch failed'), 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: fetch failed`, detail: where, headers: {} }],
    ['nothing at all', undefined, 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: undefined`, detail: where, headers: {} }],
    ['a thrown string', 'boom', 'manifest', { code: 'UNAVAILABLE', status: 502, message: `upstream ${UP} failed: boom`, detail: where, headers: {} }],
  ] as const)('%s', (_what, err, what, want) => {
    expect(wire(upstreamToRegistryError(err, UP, what, 'hub/lib/app', 'v1'))).toEqual(want);
  });

  it('a registry error is passed on as it is', () => {
    const own = new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { name: 'x' });
    expect(upstreamToRegistryError(own, UP, 'manifest', 'hub/lib/app', 'v1')).toBe(own);
  });

  it('every code the disk can fail with is the store, not the upstream', () => {
    for (const code of ['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EMFILE', 'ENFILE', 'EACCES', 'EPERM']) {
      expect(upstreamToRegistryError(fsError(code, 'write'), UP, 'blob', 'hub/lib/app', 'v1').message, code).toBe(`derrick's store failed: ${code}: it broke`);
    }
    // A code that is not a string is no errno error.
    const odd = Object.assign(new Error('odd'), { code: 28, syscall: 'write' });
    expect(upstreamToRegistryError(odd, UP, 'blob', 'hub/lib/app', 'v1').status).toBe(502);
    // Nor is a plain object that only looks like one.
    expect(upstreamToRegistryError({ code: 'ENOSPC', syscall: 'write', message: 'x' }, UP, 'blob', 'hub/lib/app', 'v1').message).toBe(`upstream ${UP} failed: x`);
  });
});

describe('isUpstreamDown: the failures after which a cached copy is served stale', () => {
  it.each([
    ['network', upstream('network'), true],
    ['5xx', upstream('unavailable'), true],
    ['429', upstream('too-many-requests'), true],
    ['404', upstream('not-found'), false],
    ['401', upstream('unauthorized'), false],
    ['403', upstream('denied'), false],
    ['a bad answer', upstream('invalid'), false],
    ['a timeout', named('TimeoutError', 'timed out'), true],
    ['an abort', named('AbortError', 'aborted'), true],
    ['any other error', new Error('no'), false],
    ['nothing', undefined, false],
  ] as const)('%s: %s', (_what, err, down) => {
    expect(isUpstreamDown(err)).toBe(down);
  });
});
