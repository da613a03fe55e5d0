// The embedded blob/file server: serves <root>/published at `${prefix}/` with the same URL layout,
// headers and signed-URL check as the nginx config printed by nginx-conf.ts, so either can sit
// behind the redirector (and the same signed URL works on both).
//
//   ${prefix}/master/<key>/<ts>/blobs/<digest>                  application/octet-stream
//   ${prefix}/master/<key>/<ts>/manifests/<2|list|oci|oci-index>/<digest|tag>   media type by dir
//   ${prefix}/master/<key>/<ts>/tags/list, *.json               application/json
//   ${prefix}/web/<key>/...  (symlink to the current master)
//
// master/ is immutable (Cache-Control: public, max-age=31536000, immutable); web/ is `no-cache`.
// Who may read what is access.ts's decision (credentials or an nginx secure_link signature);
// app/ (the redirect files) and anything outside master/<key>/ and web/<key>/ is never served.
import { constants as fsc } from 'node:fs';
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Context } from 'hono';
import { MANIFEST_DIR } from '../shared/layout.js';
import { RegistryError } from '../shared/errors.js';
import { decideFileAccess, type CredentialCheck, type FileDecision, type ProtectionLookup } from './access.js';
import { FileRange } from './file-body.js';
import { toResponse, type Reply } from './reply.js';

export interface FileServerOptions {
  /** Absolute (or cwd-relative) path of <root>/published. */
  publishedDir: string;
  /** URL prefix the handler is mounted at, e.g. '/published' (no trailing slash; '' for the root). */
  prefix: string;
  /** With a secret, the signature is the proof: every master/ URL, and web/ of a repo that needs proof. */
  signingSecret?: string;
  /** Who may read a repo's files (access.ts): no default, so a caller can't forget protection. */
  access: {
    /** serve.anonymous: when false, every repo needs proof. */
    anonymous: boolean;
    isProtected: ProtectionLookup;
    /** Basic credentials, the proof when signing is off. */
    auth?: CredentialCheck;
  };
  /** Clock for signature expiry (tests). */
  now?: () => number;
}

export const IMMUTABLE_CACHE_CONTROL = 'public, max-age=31536000, immutable';
export const MUTABLE_CACHE_CONTROL = 'no-cache';
export const OCTET_STREAM = 'application/octet-stream';
export const JSON_TYPE = 'application/json';

/**
 * A file name that is a digest (the distribution-spec digest grammar). Also the PCRE used by the
 * nginx config, so both servers agree on which files get Docker-Content-Digest.
 */
export const DIGEST_NAME_PATTERN = '[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+';
const DIGEST_NAME_RE = new RegExp(`^${DIGEST_NAME_PATTERN}$`);

/** manifests/<dir>/ -> media type (MANIFEST_DIR inverted). */
export const MANIFEST_DIR_TYPES: Readonly<Record<string, string>> = Object.freeze(
  Object.fromEntries(Object.entries(MANIFEST_DIR).map(([type, dir]) => [dir, type])),
);

export type FileKind = 'blob' | 'manifest' | 'json' | 'other';

export interface FileClass {
  kind: FileKind;
  contentType: string;
  /** The file name when it is a digest (blobs and manifests by digest only). */
  digest?: string;
}

/**
 * What a published path (segments relative to the published dir, or the URL path) serves as.
 * The rules look only at the last three segments, in this order (the nginx config uses the same
 * order of regex locations):
 *   .../blobs/<name>                          octet-stream (+ digest if <name> is one)
 *   .../manifests/<2|list|oci|oci-index>/<name>   the media type (+ digest if <name> is one)
 *   .../tags/list, *.json                     application/json
 *   anything else                             octet-stream
 */
export function classifyPath(segments: readonly string[]): FileClass {
  const n = segments.length;
  const name = segments[n - 1] ?? '';
  const parent = segments[n - 2];
  const grand = segments[n - 3];
  const digest = DIGEST_NAME_RE.test(name) ? name : undefined;
  if (parent === 'blobs') return { kind: 'blob', contentType: OCTET_STREAM, ...(digest ? { digest } : {}) };
  if (grand === 'manifests' && parent !== undefined && Object.hasOwn(MANIFEST_DIR_TYPES, parent)) {
    return { kind: 'manifest', contentType: MANIFEST_DIR_TYPES[parent]!, ...(digest ? { digest } : {}) };
  }
  if ((parent === 'tags' && name === 'list') || name.endsWith('.json')) return { kind: 'json', contentType: JSON_TYPE };
  return { kind: 'other', contentType: OCTET_STREAM };
}

/** Registry error code for a 404 on this URL path: BLOB_UNKNOWN, MANIFEST_UNKNOWN or NAME_UNKNOWN. */
export function notFoundCode(urlPath: string): string {
  if (/\/blobs\/[^/]*$/.test(urlPath)) return 'BLOB_UNKNOWN';
  if (/\/manifests\//.test(urlPath)) return 'MANIFEST_UNKNOWN';
  return 'NAME_UNKNOWN';
}

function errorReply(status: number, code: string, message: string, detail: unknown, head: boolean): Reply {
  const body = JSON.stringify({ errors: [{ code, message, detail }] });
  const headers: Record<string, string> = {
    'Content-Type': JSON_TYPE,
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': MUTABLE_CACHE_CONTROL,
  };
  return { status, headers, body: head ? null : body };
}

/** A refusal from the access decision (401 with its challenge, 403 for signatures); it echoes nothing. */
function refused(err: RegistryError, head: boolean): Reply {
  const r = errorReply(err.status, err.code, err.message, err.detail ?? null, head);
  Object.assign(r.headers, err.headers);
  return r;
}

function notFound(urlPath: string, head: boolean, why = 'not found'): Reply {
  return errorReply(404, notFoundCode(urlPath), why, { path: urlPath }, head);
}

/**
 * The request path as sent, still percent-encoded. @hono/node-server (like any WHATWG URL parser)
 * resolves `..` and `%2e%2e` before routing, so when its bindings are there the request-target
 * from the wire is used instead: a path nginx refuses is refused here too.
 */
function requestPath(c: Context): string {
  const incoming = (c.env as { incoming?: { url?: unknown } } | undefined)?.incoming;
  if (incoming && typeof incoming.url === 'string' && incoming.url.startsWith('/')) return rawPathOf(incoming.url);
  return rawPathOf(c.req.url);
}

/** The path part of a request target or URL, still percent-encoded. */
export function rawPathOf(url: string): string {
  let start = 0;
  if (!url.startsWith('/')) {
    const schemeEnd = url.indexOf('://');
    start = url.indexOf('/', schemeEnd === -1 ? 0 : schemeEnd + 3);
    if (start === -1) return '/';
  }
  let end = url.length;
  for (const ch of ['?', '#']) {
    const i = url.indexOf(ch, start);
    if (i !== -1 && i < end) end = i;
  }
  return url.slice(start, end);
}

export type ParsedRequestPath =
  | { ok: true; uri: string; segments: string[] }
  | { ok: false; uri: string; reason: string };

/**
 * Decodes a raw request path once and splits the part after `prefix` into segments, refusing
 * anything that is not a plain, canonical path: encoded slashes or backslashes, NUL or control
 * characters, backslashes, empty, '.' or '..' segments, and any segment starting with '.' (temp
 * names `.tmp-*`, dot-files). `uri` is the decoded path as nginx's $uri would see it.
 */
export function parseRequestPath(rawPath: string, prefix: string): ParsedRequestPath {
  let uri: string;
  if (/%(2f|5c|00)/i.test(rawPath)) return { ok: false, uri: rawPath, reason: 'encoded slash, backslash or NUL in path' };
  try {
    uri = decodeURIComponent(rawPath);
  } catch {
    return { ok: false, uri: rawPath, reason: 'malformed percent-encoding' };
  }
  if (/[\u0000-\u001f\u007f\\]/.test(uri)) return { ok: false, uri, reason: 'control character or backslash in path' };
  if (!uri.startsWith(prefix + '/')) return { ok: false, uri, reason: 'outside the published prefix' };
  const rel = uri.slice(prefix.length + 1);
  const segments = rel.split('/');
  for (const s of segments) {
    if (s === '') return { ok: false, uri, reason: 'empty path segment' };
    if (s.startsWith('.')) return { ok: false, uri, reason: 'dot segment or hidden file' };
  }
  return { ok: true, uri, segments };
}

/** Weak comparison of an If-None-Match list against our ETag. */
function noneMatch(header: string, etag: string): boolean {
  const strip = (t: string) => t.trim().replace(/^W\//, '');
  const ours = strip(etag);
  return header.split(',').some((t) => t.trim() === '*' || strip(t) === ours);
}

export type RangeResult = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/**
 * One `Range` header against a file of `size` bytes, the way nginx (with max_ranges 1) reads it:
 * no header / not `bytes=` / several ranges -> full; a single satisfiable range -> partial
 * (inclusive end, clamped); a malformed, inverted or unsatisfiable single range -> 416.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (!header) return { kind: 'full' };
  const m = /^\s*bytes\s*=(.*)$/i.exec(header);
  if (!m) return { kind: 'full' };
  const spec = m[1]!;
  if (spec.includes(',')) return { kind: 'full' };
  const r = /^\s*(\d*)\s*-\s*(\d*)\s*$/.exec(spec);
  if (!r || (r[1] === '' && r[2] === '')) return { kind: 'unsatisfiable' };
  if (r[1] === '') {
    const n = Number(r[2]);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(r[1]);
  const end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1);
  if (!Number.isSafeInteger(start) || start >= size || start > end) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end };
}

/** A request to the file server, whatever answers it (Hono, or serve's node fast path). */
export interface FileRequest {
  method: string;
  /** The request path as sent, still percent-encoded, without the query. */
  rawPath: string;
  header(name: string): string | undefined;
  query(name: string): string | undefined;
  remoteAddress?: () => string | undefined;
}

/** A file handler as a Hono handler for `${prefix}/*` (GET and HEAD). */
export function honoFileServer(handle: (req: FileRequest) => Promise<Reply>): (c: Context) => Promise<Response> {
  return async (c: Context) =>
    toResponse(await handle({ method: c.req.method, rawPath: requestPath(c), header: (n) => c.req.header(n), query: (n) => c.req.query(n) }));
}

/** The Hono handler for `${prefix}/*` (GET and HEAD). */
export function createFileServer(opts: FileServerOptions): (c: Context) => Promise<Response> {
  return honoFileServer(createFileHandler(opts));
}

/**
 * The file server for `${prefix}/*` as a plain function. See the file comment for the contract.
 */
export function createFileHandler(opts: FileServerOptions): (req: FileRequest) => Promise<Reply> {
  const publishedDir = path.resolve(opts.publishedDir);
  const prefix = opts.prefix.replace(/\/+$/, '');
  const access = { ...opts.access, signingSecret: opts.signingSecret, now: opts.now };
  let realRoot: string | undefined;

  return async (req: FileRequest): Promise<Reply> => {
    const method = req.method;
    const head = method === 'HEAD';
    const rawPath = req.rawPath;
    if (method !== 'GET' && !head) {
      const res = errorReply(405, 'UNSUPPORTED', `method ${method} not allowed`, null, false);
      res.headers.Allow = 'GET, HEAD';
      return res;
    }
    const parsed = parseRequestPath(rawPath, prefix);
    if (!parsed.ok) return notFound(parsed.uri, head, parsed.reason);
    const { uri, segments } = parsed;
    const immutable = segments[0] === 'master';

    // Before any disk access: a refused request learns nothing about what exists.
    let decision: FileDecision;
    try {
      decision = await decideFileAccess(access, { uri, segments, header: req.header, query: req.query, remoteAddress: req.remoteAddress });
    } catch (err) {
      if (!(err instanceof RegistryError)) throw err;
      decision = err;
    }
    if (decision === 'hidden') return notFound(uri, head, 'not served');
    if (decision !== 'ok') return refused(decision, head);

    // Resolve symlinks (web/ and app/ links), and stay inside the published dir.
    let real: string;
    try {
      realRoot ??= await fs.realpath(publishedDir);
      real = await fs.realpath(path.join(publishedDir, ...segments));
    } catch {
      realRoot = undefined; // the published dir may appear later
      return notFound(uri, head);
    }
    const relReal = path.relative(realRoot, real);
    if (relReal === '' || relReal.startsWith('..') || path.isAbsolute(relReal) || relReal.split(path.sep).some((s) => s.startsWith('.'))) {
      return notFound(uri, head, 'outside the published tree');
    }

    let fh: FileHandle;
    try {
      fh = await fs.open(real, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch {
      return notFound(uri, head);
    }
    let handedOff = false;
    try {
      const st = await fh.stat();
      if (!st.isFile()) return notFound(uri, head, 'not a file');
      const size = st.size;
      const cls = classifyPath(segments);
      const lastModified = new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString();
      const etag = cls.digest ? `"${cls.digest}"` : `W/"${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
      const headers: Record<string, string> = {
        'Accept-Ranges': 'bytes',
        'Cache-Control': immutable ? IMMUTABLE_CACHE_CONTROL : MUTABLE_CACHE_CONTROL,
        ETag: etag,
        'Last-Modified': lastModified,
      };
      if (cls.digest) headers['Docker-Content-Digest'] = cls.digest;

      const inm = req.header('if-none-match');
      const ims = req.header('if-modified-since');
      const notModified =
        inm !== undefined ? noneMatch(inm, etag) : ims !== undefined && !Number.isNaN(Date.parse(ims)) && Math.floor(st.mtimeMs / 1000) * 1000 <= Date.parse(ims);
      if (notModified) return { status: 304, headers, body: null };

      headers['Content-Type'] = cls.contentType;
      let range = parseRange(req.header('range'), size);
      const ifRange = req.header('if-range');
      if (range.kind !== 'full' && ifRange !== undefined) {
        const t = ifRange.trim();
        const matches = t.startsWith('"') || t.startsWith('W/') ? !etag.startsWith('W/') && t === etag : t === lastModified;
        if (!matches) range = { kind: 'full' };
      }
      if (range.kind === 'unsatisfiable') {
        headers['Content-Range'] = `bytes */${size}`;
        headers['Content-Length'] = '0';
        return { status: 416, headers, body: null };
      }
      const start = range.kind === 'partial' ? range.start : 0;
      const end = range.kind === 'partial' ? range.end : size - 1;
      const length = end - start + 1;
      headers['Content-Length'] = String(length);
      const status = range.kind === 'partial' ? 206 : 200;
      if (range.kind === 'partial') headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
      if (head || length === 0) return { status, headers, body: head ? null : '' };
      handedOff = true;
      return { status, headers, body: new FileRange(fh, start, end) };
    } finally {
      if (!handedOff) await fh.close().catch(() => undefined);
    }
  };
}
