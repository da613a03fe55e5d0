// Typed errors, each mapped to one distribution-spec error code and HTTP status, in one place.

export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  PAGINATION_NUMBER_INVALID: 400,
  UNAVAILABLE: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class RegistryError extends Error {
  /** HTTP status; defaults to the code's usual one but an upstream failure may pick 502/504. */
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    status?: number,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'RegistryError';
    this.status = status ?? ERROR_STATUS[code];
  }

  toJSON() {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail ?? null }] };
  }
}

export const errors = {
  nameUnknown: (name: string) => new RegistryError('NAME_UNKNOWN', 'repository name not known to registry', { name }),
  nameInvalid: (name: string) => new RegistryError('NAME_INVALID', 'invalid repository name', { name }),
  manifestUnknown: (name: string, reference: string) =>
    new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { name, reference }),
  blobUnknown: (name: string, digest: string) => new RegistryError('BLOB_UNKNOWN', 'blob unknown to registry', { name, digest }),
  digestInvalid: (digest: string, why = 'provided digest did not match uploaded content') =>
    new RegistryError('DIGEST_INVALID', why, { digest }),
  /** A 405; `allow` lists what the resource does answer (empty for the upload endpoints). */
  unsupported: (method: string, path: string, allow = 'GET, HEAD') =>
    new RegistryError('UNSUPPORTED', 'the operation is unsupported: this registry is read-only', { method, path }, undefined, { Allow: allow }),
  /**
   * A malformed request (two Host headers, an invalid Host, a target that is neither a path nor
   * an absolute URL). The spec has no code of its own for it; UNSUPPORTED covers "an invalid set
   * of parameters", and the status says 400.
   */
  badRequest: (why: string, detail?: unknown) => new RegistryError('UNSUPPORTED', why, detail, 400, { Connection: 'close' }),
  unauthorized: (realm: string, detail?: unknown) =>
    new RegistryError('UNAUTHORIZED', 'authentication required', detail, 401, {
      'WWW-Authenticate': `Basic realm="${realm}", charset="UTF-8"`,
    }),
  denied: (why: string) => new RegistryError('DENIED', why),
  paginationInvalid: (n: string) => new RegistryError('PAGINATION_NUMBER_INVALID', 'invalid number of results requested', { n }),
  tooManyRequests: (retryAfter?: string) =>
    new RegistryError('TOOMANYREQUESTS', 'too many requests', undefined, 429, retryAfter ? { 'Retry-After': retryAfter } : {}),
};
