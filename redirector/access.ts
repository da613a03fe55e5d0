// The one access decision (design invariant 8). A protected repo's manifests, blobs, tags,
// referrers and published files reach only a request with valid credentials or a valid signature,
// on /v2, on the embedded file server, and (mirrored) in the nginx config of nginx-conf.ts.
//
// The rule, written once:
//   - a repo needs proof when it is protected, when its protection can't be determined (fail
//     closed: a name that is not in the index, a master left on disk by an unpublished repo), or
//     when `serve.anonymous` is false;
//   - /v2 takes Basic credentials as the proof;
//   - the file server: with signing off, the same Basic credentials; with signing on, the
//     signature is the proof: every master/ URL needs one (derrick hands out only signed master
//     URLs), and so does web/<key>/ of a repo that needs proof; web/ of a public repo stays open;
//   - redirect files (app/<key>.json, and the redirect.json and redirect.idx of each master) are
//     internal and never served; nothing outside master/<key>/ and web/<key>/ is either.
import { errors, type RegistryError } from '../shared/errors.js';
import { MASTER_META_FILES, repoNameFromKey } from '../shared/layout.js';
import { checkSignature } from '../shared/signing.js';

/** What the index knows: true/false, or undefined when it can't tell (no such repo, unreadable). */
export type Protection = boolean | undefined;

/**
 * The seam through which the file server learns a repo's protection. Today `serve.ts` answers it
 * from the in-memory index; a lazy index may answer with a Promise.
 */
export type ProtectionLookup = (repoName: string) => Protection | Promise<Protection>;

/** Does a request for this repo's content need proof? Unknown protection counts as protected. */
export function needsProof(anonymous: boolean, protection: Protection): boolean {
  return !anonymous || protection !== false;
}

/** The credential check both routes use (an Authenticator, narrowed to what access needs). */
export interface CredentialCheck {
  readonly realm: string;
  /** The user for a valid Authorization header, else undefined; a Promise when a hash must be checked. */
  check(authorization: string | undefined, client?: string): string | undefined | Promise<string | undefined>;
}

/** The 401 of every route: the same body and challenge whether or not the repo exists. */
export function unauthorized(realm: string, name?: string): RegistryError {
  return errors.unauthorized(realm, name === undefined ? undefined : [{ Type: 'repository', Name: name, Action: 'pull' }]);
}

/** Where a path under the published tree points, by its first two segments. */
export type FileArea =
  | { area: 'master' | 'web'; name: string }
  /** app/ (redirect files) and anything that is not master/<key>/ or web/<key>/: never served. */
  | { area: 'hidden' };

export function fileAreaOf(segments: readonly string[]): FileArea {
  const [top, key] = segments;
  // A master's redirect.json (the file app/<key>.json links to) and its redirect.idx are
  // internal too (only those: manifests/<dir>/redirect.json is a tag of that name).
  const n = segments.length;
  if (MASTER_META_FILES.includes(segments[n - 1]!) && ((top === 'master' && n === 4) || (top === 'web' && n === 3))) return { area: 'hidden' };
  if ((top === 'master' || top === 'web') && key !== undefined && segments.length > 2) return { area: top, name: repoNameFromKey(key) };
  return { area: 'hidden' };
}

export interface FileAccessOptions {
  /** serve.anonymous: when false, every repo needs proof. */
  anonymous: boolean;
  isProtected: ProtectionLookup;
  /** With signing on, the signature is the proof; otherwise Basic credentials are. */
  signingSecret?: string;
  /** Checks Basic credentials (signing off). Without it, a path that needs proof is refused. */
  auth?: CredentialCheck;
  now?: () => number;
}

export interface FileProofRequest {
  /** The decoded path, as nginx's $uri: what a signature covers. */
  uri: string;
  segments: readonly string[];
  header(name: string): string | undefined;
  query(name: string): string | undefined;
  remoteAddress?: () => string | undefined;
}

/** 'ok', 'hidden' (answer 404) or the error to answer with. */
export type FileDecision = 'ok' | 'hidden' | RegistryError;

const SIGNATURE_MESSAGES = { missing: 'signed URL required', invalid: 'invalid signature', expired: 'signed URL expired' } as const;

/** The file server's half of the rule. Synchronous unless a lookup or a password check is. */
export function decideFileAccess(o: FileAccessOptions, req: FileProofRequest): FileDecision | Promise<FileDecision> {
  const where = fileAreaOf(req.segments);
  if (where.area === 'hidden') return 'hidden';
  const secret = o.signingSecret;
  const viaSignature = (): FileDecision => {
    const check = checkSignature(req.uri, req.query('md5'), req.query('expires'), secret!, (o.now ?? Date.now)());
    return check === 'ok' ? 'ok' : errors.denied(SIGNATURE_MESSAGES[check]);
  };
  // Every master/ URL derrick hands out is signed, whatever the repo: no lookup needed.
  if (secret !== undefined && where.area === 'master') return viaSignature();
  const decide = (protection: Protection): FileDecision | Promise<FileDecision> => {
    if (!needsProof(o.anonymous, protection)) return 'ok';
    if (secret !== undefined) return viaSignature();
    const realm = o.auth?.realm ?? 'derrick';
    const user = o.auth?.check(req.header('authorization'), req.remoteAddress?.());
    const verdict = (u: string | undefined): FileDecision => (u !== undefined ? 'ok' : unauthorized(realm, where.name));
    return user instanceof Promise ? user.then(verdict) : verdict(user);
  };
  let protection: Protection | Promise<Protection>;
  try {
    protection = o.isProtected(where.name);
  } catch {
    protection = undefined; // fail closed
  }
  return protection instanceof Promise ? protection.catch(() => undefined).then(decide) : decide(protection);
}
