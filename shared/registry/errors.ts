// Failures talking to an upstream registry. Kept apart from shared/errors.ts (what derrick itself
// answers) so a caller maps upstream trouble to its own status deliberately, never by accident.
import { isDigestSyntax } from '../oci.js';

export type UpstreamErrorKind =
  | 'unauthorized'
  | 'denied'
  | 'not-found'
  | 'too-many-requests'
  | 'unavailable'
  | 'network'
  | 'invalid';

export interface UpstreamErrorInit {
  kind: UpstreamErrorKind;
  /** host[:port] */
  registry: string;
  /** Empty for registry-wide calls such as the /v2/ ping. */
  repository: string;
  /** Tag or digest. */
  reference?: string;
  /** What went wrong, without the location: "manifest unknown". */
  detail: string;
  status?: number;
  /** Raw Retry-After header of the last 429, to pass on to our own clients. */
  retryAfter?: string;
  cause?: unknown;
}

/** Names the image the way skopeo does, so operators can paste it back: docker://host/repo:tag. */
export function describeImage(registry: string, repository: string, reference?: string): string {
  let s = `docker://${registry}`;
  if (repository) s += `/${repository}`;
  if (reference) s += (isDigestSyntax(reference) ? '@' : ':') + reference;
  return s;
}

export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  // declare: no own property at all when absent, so logs and toEqual do not show `undefined`s.
  declare readonly status?: number;
  declare readonly retryAfter?: string;
  readonly registry: string;
  readonly repository: string;
  declare readonly reference?: string;

  constructor(init: UpstreamErrorInit) {
    const where = describeImage(init.registry, init.repository, init.reference);
    super(`${where}: ${init.detail}${init.status !== undefined ? ` (${init.status})` : ''}`, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = 'UpstreamError';
    this.kind = init.kind;
    this.registry = init.registry;
    this.repository = init.repository;
    const self = this as { status?: number; retryAfter?: string; reference?: string };
    if (init.status !== undefined) self.status = init.status;
    if (init.retryAfter !== undefined) self.retryAfter = init.retryAfter;
    if (init.reference !== undefined) self.reference = init.reference;
  }
}

export function isUpstreamError(err: unknown, kind?: UpstreamErrorKind): err is UpstreamError {
  return err instanceof UpstreamError && (kind === undefined || err.kind === kind);
}
