// A read-only Registry v2 / OCI distribution client on fetch, shared by the publisher's registry
// source and the pull-through cache. Retries, auth and concurrency live here so callers only see
// bytes or an UpstreamError that names the image.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { ACCEPT_ALL_MANIFESTS, type Descriptor, MediaType, isDigestSyntax, isManifestType, isValidName, isValidTag, parseManifest, sha256Digest } from '../oci.js';
import { createAuthenticator, parseWwwAuthenticate, pullScope, type AuthContext } from './auth.js';
import { UpstreamError, isUpstreamError, type UpstreamErrorKind } from './errors.js';
import { createLimiter } from './limiter.js';
import { backoffMs, describeNetworkError, isAbortError, isNetworkError, isRetryableStatus, parseRetryAfter, sleep } from './retry.js';
import { createTransport, fetchFollowingRedirects } from './transport.js';

export interface RegistryClientOptions {
  /** host[:port], as in docker://HOST/REPO. */
  registry: string;
  /** false: accept any certificate and fall back to plain http, as skopeo's --tls-verify=false. */
  tlsVerify?: boolean;
  /** Fixes the scheme instead of detecting it (an upstream configured by URL). */
  scheme?: 'http' | 'https';
  username?: string;
  password?: string;
  /** Requests open at once; a blob GET holds its slot until its body ends. */
  concurrency?: number;
  userAgent?: string;
  /** Further attempts after the first for 5xx, 429 and network failures. */
  retries?: number;
  retryBaseMs?: number;
  extraHeaders?: Record<string, string>;
}

export interface RequestOptions {
  signal?: AbortSignal;
  /** Per-request headers, e.g. X-Forwarded-For for a pull-through client. */
  headers?: Record<string, string>;
}

export interface ManifestHead {
  /** From Docker-Content-Digest, or the reference itself when that was a digest. */
  digest?: string;
  /** Content-Type without parameters; '' when the registry sent none. */
  mediaType: string;
  /** Content-Length; absent when the registry sent none. */
  size?: number;
}

export interface ManifestResponse {
  bytes: Buffer;
  mediaType: string;
  /** sha256 of bytes, already checked against the reference and Docker-Content-Digest. */
  digest: string;
}

export interface BlobResponse {
  /**
   * The blob's bytes, NOT verified here: the store hashes them as it writes, which costs no
   * second pass. Consume or destroy it: the client's concurrency slot is held until it closes.
   */
  body: Readable;
  /** Content-Length of the final (possibly redirected) response. */
  size?: number;
  headers: Headers;
}

export interface BlobHead {
  size?: number;
  digest?: string;
}

export interface RegistryClient {
  readonly registry: string;
  ping(opts?: RequestOptions): Promise<void>;
  listTags(repository: string, opts?: RequestOptions): Promise<string[]>;
  headManifest(repository: string, reference: string, opts?: RequestOptions): Promise<ManifestHead>;
  getManifest(repository: string, reference: string, opts?: RequestOptions): Promise<ManifestResponse>;
  getBlob(repository: string, digest: string, opts?: RequestOptions): Promise<BlobResponse>;
  headBlob(repository: string, digest: string, opts?: RequestOptions): Promise<BlobHead>;
  /**
   * The referrers API's index for a digest, or undefined when the registry has no referrers API
   * (404, or an answer that is not an OCI index, as docker-registry 2.8 and many mirrors give).
   */
  getReferrers(repository: string, digest: string, opts?: RequestOptions): Promise<Descriptor[] | undefined>;
}

/** Larger manifests are refused rather than buffered: containerd and distribution use 4 MiB too. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const TAG_PAGE_SIZE = 1000;
const MAX_TAG_PAGES = 10_000;

type What = 'ping' | 'tags' | 'manifest' | 'blob' | 'referrers';

interface Call {
  method: 'GET' | 'HEAD';
  /** Path and query, starting with /v2/. */
  path: string;
  what: What;
  repository: string;
  reference?: string;
  accept?: string;
  signal?: AbortSignal;
  headers?: Record<string, string>;
}

const NOT_FOUND: Record<What, string> = {
  ping: 'no registry API at /v2/',
  tags: 'repository name not known to registry',
  manifest: 'manifest unknown',
  blob: 'blob unknown',
  referrers: 'no referrers API',
};

export function createRegistryClient(opts: RegistryClientOptions): RegistryClient {
  const registry = opts.registry;
  const userAgent = opts.userAgent ?? 'derrick/0.1';
  const retries = opts.retries ?? 4;
  const retryBaseMs = opts.retryBaseMs ?? 200;
  const transport = createTransport({ registry, tlsVerify: opts.tlsVerify ?? true, userAgent, scheme: opts.scheme });
  const limiter = createLimiter(opts.concurrency ?? 4);
  const authenticator = createAuthenticator({
    registry,
    username: opts.username,
    password: opts.password,
    fetch: transport.fetch,
    userAgent,
    retries,
    retryBaseMs,
  });

  const fail = (
    call: Pick<Call, 'repository' | 'reference'>,
    kind: UpstreamErrorKind,
    detail: string,
    extra: { status?: number; retryAfter?: string; cause?: unknown } = {},
  ) => new UpstreamError({ kind, registry, repository: call.repository, reference: call.reference, detail, ...extra });

  function check(call: Pick<Call, 'repository' | 'reference'>, kind: 'tag-or-digest' | 'digest' | 'none') {
    if (!isValidName(call.repository)) throw fail(call, 'invalid', 'invalid repository name');
    const ref = call.reference ?? '';
    if (kind === 'digest' && !isDigestSyntax(ref)) throw fail(call, 'invalid', 'invalid digest');
    if (kind === 'tag-or-digest' && !isDigestSyntax(ref) && !isValidTag(ref)) throw fail(call, 'invalid', 'invalid tag or digest');
  }

  /** The registry's own words for a failure ({"errors":[{"message"}]}), if it sent any. */
  async function errorMessage(res: Response): Promise<string | undefined> {
    try {
      const text = await res.text();
      const msg = (JSON.parse(text) as { errors?: Array<{ message?: unknown }> }).errors?.[0]?.message;
      return typeof msg === 'string' && msg ? msg.slice(0, 200) : undefined;
    } catch {
      return undefined;
    }
  }

  function statusError(call: Call, status: number, message: string | undefined, retryAfter: string | undefined): UpstreamError {
    switch (status) {
      case 401:
        return fail(call, 'unauthorized', message ?? 'authentication required', { status });
      case 403:
        return fail(call, 'denied', message ?? 'access denied', { status });
      case 404:
        return fail(call, 'not-found', message ?? NOT_FOUND[call.what], { status });
      case 429:
        return fail(call, 'too-many-requests', message ?? 'too many requests', { status, retryAfter });
    }
    if (status >= 500) return fail(call, 'unavailable', message ?? 'registry unavailable', { status });
    return fail(call, 'invalid', message ?? 'unexpected response', { status });
  }

  /**
   * Why a 401 stands after derrick answered the challenge with its own credentials. "authentication
   * required" alone reads as if no credentials were configured, when the password is wrong or the
   * token server granted this user nothing for the repository.
   */
  function unauthorizedDetail(res: Response, sent: string | undefined, message: string | undefined): string | undefined {
    if (!sent || opts.username === undefined) return message;
    const suffix = message ? `: ${message}` : '';
    if (/^bearer\s/i.test(sent)) {
      const challenge = parseWwwAuthenticate(res.headers.get('www-authenticate') ?? '').find((c) => c.scheme === 'bearer');
      const why = challenge?.scheme === 'bearer' && challenge.error ? ` (${challenge.error})` : '';
      return `registry refused the token issued to user ${opts.username}${why}${suffix}`;
    }
    return `registry rejected the credentials of user ${opts.username}${suffix}`;
  }

  /**
   * One logical request: auth, retries and redirects. Resolves with a 2xx response while holding a
   * concurrency slot; the caller must call release once it is done with the body.
   */
  async function send(call: Call): Promise<{ res: Response; release: () => void }> {
    const release = await limiter.acquire(call.signal);
    try {
      return { res: await attempt(call), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  async function attempt(call: Call): Promise<Response> {
    const scope = call.repository ? pullScope(call.repository) : undefined;
    const ctx: AuthContext = { repository: call.repository, reference: call.reference, signal: call.signal };
    let authorization = await authenticator.headerFor(scope, ctx);
    let authRetried = false;
    for (let n = 0; ; ) {
      const last = n >= retries;
      let res: Response;
      try {
        const base = await transport.baseUrl(call.signal);
        const headers: Record<string, string> = { ...opts.extraHeaders, ...call.headers, 'User-Agent': userAgent };
        if (call.accept) headers.Accept = call.accept;
        if (authorization) headers.Authorization = authorization;
        res = await fetchFollowingRedirects(transport.fetch, base + call.path, { method: call.method, headers, signal: call.signal });
      } catch (err) {
        if (call.signal?.aborted || isAbortError(err)) throw err;
        const why = describeNetworkError(err);
        if (!isNetworkError(err)) throw fail(call, 'invalid', why, { cause: err });
        if (last) throw fail(call, 'network', `cannot reach registry: ${why}`, { cause: err });
        await sleep(backoffMs(n++, retryBaseMs), call.signal);
        continue;
      }
      if (res.ok) return res;

      const message = await errorMessage(res);
      if (res.status === 401 && !authRetried) {
        // A 401 is a question, not an answer: learn the challenge and ask once more with a token
        // (or Basic). The retry is not counted against the retry budget.
        authRetried = true;
        const next = await authenticator.onUnauthorized(res.headers.get('www-authenticate'), scope, authorization, ctx);
        if (next) {
          authorization = next;
          continue;
        }
      }
      if (res.status === 401) throw statusError(call, 401, unauthorizedDetail(res, authorization, message), undefined);
      const retryAfter = res.headers.get('retry-after') ?? undefined;
      if (!last && (res.status === 429 || isRetryableStatus(res.status))) {
        const wait = res.status === 429 ? (parseRetryAfter(retryAfter) ?? backoffMs(n, retryBaseMs)) : backoffMs(n, retryBaseMs);
        n++;
        await sleep(wait, call.signal);
        continue;
      }
      throw statusError(call, res.status, message, retryAfter);
    }
  }

  /** Reads a small body (manifest, tag page) whole, refusing anything beyond `max`. */
  async function readLimited(call: Call, res: Response, max: number): Promise<Buffer> {
    const declared = Number(res.headers.get('content-length'));
    if (declared > max) {
      await res.body?.cancel().catch(() => {});
      throw fail(call, 'invalid', `${call.what} of ${declared} bytes exceeds the ${max}-byte limit`);
    }
    if (!res.body) return Buffer.alloc(0);
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        total += chunk.byteLength;
        if (total > max) throw fail(call, 'invalid', `${call.what} exceeds the ${max}-byte limit`);
        chunks.push(Buffer.from(chunk));
      }
    } catch (err) {
      if (err instanceof UpstreamError || call.signal?.aborted || isAbortError(err)) throw err;
      throw fail(call, 'network', `connection lost while reading the ${call.what}: ${(err as Error).message}`, { cause: err });
    }
    return Buffer.concat(chunks);
  }

  function verifyDigest(call: Call, bytes: Buffer, computed: string, claimed: string, claimedBy: string, required: boolean) {
    const algo = claimed.slice(0, claimed.indexOf(':'));
    let actual: string;
    if (algo === 'sha256') actual = computed;
    else if (algo === 'sha384' || algo === 'sha512') actual = `${algo}:${createHash(algo).update(bytes).digest('hex')}`;
    else if (required) throw fail(call, 'invalid', `cannot verify ${claimedBy} ${claimed}: unsupported digest algorithm`);
    else return;
    if (actual !== claimed) {
      throw fail(call, 'invalid', `manifest digest mismatch: ${claimedBy} is ${claimed} but the content hashes to ${actual}`);
    }
  }

  const mediaTypeOf = (res: Response) => (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const lengthOf = (res: Response) => {
    const v = res.headers.get('content-length');
    return v !== null && /^\d+$/.test(v) ? Number(v) : undefined;
  };

  /** A manifest request accepting every manifest type, checked before it is sent. */
  function manifestCall(method: 'GET' | 'HEAD', repository: string, reference: string, o: RequestOptions): Call {
    const call: Call = {
      method,
      path: `/v2/${repository}/manifests/${reference}`,
      what: 'manifest',
      repository,
      reference,
      accept: ACCEPT_ALL_MANIFESTS,
      signal: o.signal,
      headers: o.headers,
    };
    check(call, 'tag-or-digest');
    return call;
  }

  return {
    registry,

    async ping(o = {}) {
      const call: Call = { method: 'GET', path: '/v2/', what: 'ping', repository: '', signal: o.signal, headers: o.headers };
      const { res, release } = await send(call);
      try {
        await res.body?.cancel().catch(() => {});
      } finally {
        release();
      }
    },

    async listTags(repository, o = {}) {
      const first: Call = { method: 'GET', path: `/v2/${repository}/tags/list?n=${TAG_PAGE_SIZE}`, what: 'tags', repository, signal: o.signal, headers: o.headers };
      check(first, 'none');
      const tags: string[] = [];
      const seen = new Set<string>();
      for (let path: string | undefined = first.path, page = 0; path && page < MAX_TAG_PAGES; page++) {
        seen.add(path);
        const call: Call = { ...first, path };
        const { res, release } = await send(call);
        let body: Buffer;
        try {
          body = await readLimited(call, res, MAX_MANIFEST_BYTES);
        } finally {
          release();
        }
        let doc: { tags?: unknown };
        try {
          doc = JSON.parse(body.toString('utf8')) as typeof doc;
        } catch (err) {
          throw fail(call, 'invalid', 'tag list is not valid JSON', { cause: err });
        }
        // distribution answers "tags": null for a repository whose tags were all deleted.
        if (Array.isArray(doc.tags)) for (const t of doc.tags) if (typeof t === 'string') tags.push(t);
        const next = nextLink(res.headers.get('link'), path);
        path = next && !seen.has(next) ? next : undefined;
      }
      return tags;
    },

    async headManifest(repository, reference, o = {}) {
      const call = manifestCall('HEAD', repository, reference, o);
      const { res, release } = await send(call);
      release();
      const head: ManifestHead = { mediaType: mediaTypeOf(res) };
      const digest = res.headers.get('docker-content-digest') ?? (isDigestSyntax(reference) ? reference : undefined);
      if (digest) head.digest = digest;
      const size = lengthOf(res);
      if (size !== undefined) head.size = size;
      return head;
    },

    async getManifest(repository, reference, o = {}) {
      const call = manifestCall('GET', repository, reference, o);
      const { res, release } = await send(call);
      let bytes: Buffer;
      try {
        bytes = await readLimited(call, res, MAX_MANIFEST_BYTES);
      } finally {
        release();
      }
      const digest = sha256Digest(bytes);
      if (isDigestSyntax(reference)) verifyDigest(call, bytes, digest, reference, 'requested digest', true);
      const header = res.headers.get('docker-content-digest');
      if (header) verifyDigest(call, bytes, digest, header.trim(), 'Docker-Content-Digest', false);

      // Some registries send application/json or octet-stream; the manifest's own field is better then.
      let mediaType = mediaTypeOf(res);
      if (!isManifestType(mediaType)) {
        try {
          const field = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
          if (typeof field === 'string' && field) mediaType = field;
        } catch {
          // Not JSON: leave it to the caller's parser to reject with its own message.
        }
      }
      return { bytes, mediaType, digest };
    },

    async getBlob(repository, digest, o = {}) {
      const call: Call = { method: 'GET', path: `/v2/${repository}/blobs/${digest}`, what: 'blob', repository, reference: digest, signal: o.signal, headers: o.headers };
      check(call, 'digest');
      const { res, release } = await send(call);
      const body = res.body ? Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>) : Readable.from([]);
      // 'close' follows 'end', 'error' and destroy() alike, so the slot comes back however the
      // consumer finishes with the stream.
      body.once('close', release);
      const out: BlobResponse = { body, headers: res.headers };
      const size = lengthOf(res);
      if (size !== undefined) out.size = size;
      return out;
    },

    async getReferrers(repository, digest, o = {}) {
      const call: Call = {
        method: 'GET', path: `/v2/${repository}/referrers/${digest}`, what: 'referrers', repository, reference: digest,
        accept: MediaType.ociIndex, signal: o.signal, headers: o.headers,
      };
      check(call, 'digest');
      let sent;
      try {
        sent = await send(call);
      } catch (err) {
        // No such route: 404 from most, 400 or 405 from some, 401 or 403 from those that guard
        // every unknown path. Outages and rate limits stay errors: they are not an answer.
        const noRoute = isUpstreamError(err) && (
          err.kind === 'not-found' || err.kind === 'unauthorized' || err.kind === 'denied' ||
          (err.kind === 'invalid' && (err.status === 400 || err.status === 405)));
        if (noRoute) return undefined;
        throw err;
      }
      let body: Buffer;
      try {
        body = await readLimited(call, sent.res, MAX_MANIFEST_BYTES);
      } finally {
        sent.release();
      }
      try {
        const doc = JSON.parse(body.toString('utf8')) as { manifests?: unknown };
        return Array.isArray(doc.manifests) ? parseManifest(body, MediaType.ociIndex).manifests : undefined;
      } catch {
        return undefined;
      }
    },

    async headBlob(repository, digest, o = {}) {
      const call: Call = { method: 'HEAD', path: `/v2/${repository}/blobs/${digest}`, what: 'blob', repository, reference: digest, signal: o.signal, headers: o.headers };
      check(call, 'digest');
      const { res, release } = await send(call);
      release();
      const head: BlobHead = {};
      const size = lengthOf(res);
      if (size !== undefined) head.size = size;
      const d = res.headers.get('docker-content-digest');
      if (d) head.digest = d;
      return head;
    },
  };
}

/**
 * The rel="next" target of a Link header as a path on this registry. Registries behind proxies
 * sometimes send an absolute URL with an internal host; only its path and query are used, so the
 * next page goes to the host we trust with our token.
 */
export function nextLink(header: string | null, currentPath: string): string | undefined {
  if (!header) return undefined;
  for (const m of header.matchAll(/<([^>]*)>([^,]*(?:,(?!\s*<)[^,]*)*)/g)) {
    // rel may list several space-separated relation types: rel="next last".
    if (!/;\s*rel\s*=\s*"?(?:[^";,]*\s)?next(?=[\s";,]|$)/i.test(m[2] ?? '')) continue;
    const u = new URL(m[1]!, `http://registry.invalid${currentPath}`);
    return u.pathname + u.search;
  }
  return undefined;
}
