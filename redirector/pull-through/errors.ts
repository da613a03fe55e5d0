// An upstream's failure as the client should see it: one mapping, in one place.
import { RegistryError } from '../../shared/errors.js';
import { UpstreamError } from '../../shared/registry/errors.js';
import { FillWaitTimeout } from './fill-lock.js';

/** Failures after which a cached copy may be served stale. */
export function isUpstreamDown(err: unknown): boolean {
  if (err instanceof UpstreamError) return err.kind === 'network' || err.kind === 'unavailable' || err.kind === 'too-many-requests';
  return (err as Error)?.name === 'TimeoutError' || (err as Error)?.name === 'AbortError';
}

/** derrick's own disk failing (a full or read-only store): not the upstream's fault. */
const LOCAL_FS_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EMFILE', 'ENFILE', 'EACCES', 'EPERM']);

function isLocalFsError(err: unknown): err is NodeJS.ErrnoException {
  const e = err as NodeJS.ErrnoException;
  return e instanceof Error && typeof e.code === 'string' && typeof e.syscall === 'string' && LOCAL_FS_CODES.has(e.code);
}

export function upstreamToRegistryError(err: unknown, upstream: string, what: 'manifest' | 'blob' | 'tags', name: string, ref: string): RegistryError {
  if (err instanceof RegistryError) return err;
  if ((err as Error)?.name === 'TimeoutError') {
    return new RegistryError('UNAVAILABLE', `upstream ${upstream} timed out`, { name, reference: ref }, 504);
  }
  if (err instanceof FillWaitTimeout) {
    return new RegistryError('UNAVAILABLE', `${err.message}; retry later`, { name, reference: ref }, 503, { 'Retry-After': '5' });
  }
  if (isLocalFsError(err)) {
    return new RegistryError('UNAVAILABLE', `derrick's store failed: ${err.message}`, { name, reference: ref }, 503);
  }
  if (!(err instanceof UpstreamError)) {
    return new RegistryError('UNAVAILABLE', `upstream ${upstream} failed: ${(err as Error)?.message ?? String(err)}`, { name, reference: ref }, 502);
  }
  switch (err.kind) {
    case 'not-found':
      if (what === 'tags') return new RegistryError('NAME_UNKNOWN', 'repository unknown to upstream', { name });
      return what === 'blob'
        ? new RegistryError('BLOB_UNKNOWN', 'blob unknown to upstream', { name, digest: ref })
        : new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to upstream', { name, reference: ref });
    case 'too-many-requests':
      return new RegistryError('TOOMANYREQUESTS', `upstream ${upstream} is rate limiting`, { name, reference: ref }, 429, err.retryAfter ? { 'Retry-After': err.retryAfter } : {});
    case 'network':
      return new RegistryError('UNAVAILABLE', `upstream ${upstream} is unreachable: ${err.message}`, { name, reference: ref }, 503);
    case 'unauthorized':
    case 'denied':
      return new RegistryError('UNAVAILABLE', `upstream ${upstream} refused derrick's credentials: ${err.message}`, { name, reference: ref }, 502);
    default:
      return new RegistryError('UNAVAILABLE', `upstream ${upstream} failed: ${err.message}`, { name, reference: ref }, 502);
  }
}
