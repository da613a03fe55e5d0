// GET/HEAD /v2/<name>/manifests/<ref>: Accept negotiation, then inline bytes or a redirect.
import { errors, RegistryError } from '../shared/errors.js';
import { manifestRelPath } from '../shared/layout.js';
import { MediaType, amd64Child, isDigestSyntax, isIndexType, isValidTag } from '../shared/oci.js';
import type { AnyRedirectFile } from '../shared/redirect-file.js';
import type { IndexedManifest, IndexedRepo } from './index.js';
import { reply, type Reply } from './reply.js';
import { fileUrl, type UrlOptions } from './urls.js';

/** Tags may move, so caches hold them briefly; digests never change. */
export const TAG_MAX_AGE_SECONDS = 30;
const IMMUTABLE = 'public, max-age=31536000, immutable';

/** The media types a client accepts, or null when it accepts anything (no header, or a wildcard). */
export function parseAccept(headers: string[]): Set<string> | null {
  const types = new Set<string>();
  for (const h of headers) {
    for (const part of h.split(',')) {
      const t = part.split(';')[0]!.trim().toLowerCase();
      if (t === '*/*' || t === 'application/*') return null;
      if (t) types.add(t);
    }
  }
  return types.size ? types : null;
}

export function validateReference(name: string, ref: string): 'tag' | 'digest' {
  if (ref.includes(':')) {
    if (!isDigestSyntax(ref)) throw errors.digestInvalid(ref, 'invalid digest');
    return 'digest';
  }
  if (!isValidTag(ref)) throw errors.manifestUnknown(name, ref);
  return 'tag';
}

export interface Chosen {
  digest: string;
  manifest: IndexedManifest;
}

/**
 * Picks what to serve. An index goes to clients that accept it; a client that accepts only
 * single manifests gets the linux/amd64 child of a tag, as crane's fallback did. Like
 * distribution, an OCI type is not forced on a client whose Accept lacks it.
 */
export function negotiate(repo: IndexedRepo, ref: string, kind: 'tag' | 'digest', accept: Set<string> | null): Chosen {
  const digest = kind === 'tag' ? repo.tags.get(ref) : ref;
  const manifest = digest ? repo.current.manifests.get(digest) ?? findPrevious(repo, digest) : undefined;
  if (!digest || !manifest) throw errors.manifestUnknown(repo.name, ref);
  // A digest names exact bytes: serving anything else would fail the client's own check.
  if (!accept || kind === 'digest' || accept.has(manifest.mediaType)) return { digest, manifest };
  if (isIndexType(manifest.mediaType)) {
    const child = amd64Child(manifest.children ?? []);
    const cm = child && repo.current.manifests.get(child.digest);
    if (child && cm && accept.has(cm.mediaType)) return { digest: child.digest, manifest: cm };
    throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${ref} is an index and the client accepts neither it nor its linux/amd64 image`, {
      name: repo.name, reference: ref, mediaType: manifest.mediaType,
    });
  }
  if (manifest.mediaType === MediaType.dockerManifest) return { digest, manifest };
  throw new RegistryError('MANIFEST_UNKNOWN', `manifest ${ref} is ${manifest.mediaType}, which the client does not accept`, {
    name: repo.name, reference: ref, mediaType: manifest.mediaType,
  });
}

function findPrevious(repo: IndexedRepo, digest: string): IndexedManifest | undefined {
  const now = Date.now();
  for (const p of repo.previous) if (p.until > now && p.version.manifests.has(digest)) return p.version.manifests.get(digest);
  return undefined;
}

function etagMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  if (ifNoneMatch.trim() === '*') return true;
  return ifNoneMatch.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

export interface ManifestRequest {
  method: string;
  repo: IndexedRepo;
  ref: string;
  kind: 'tag' | 'digest';
  accept: Set<string> | null;
  ifNoneMatch?: string;
  mode: 'inline' | 'redirect';
  redirectStatus: number;
  urls: UrlOptions;
  /** The manifest's bytes, called only when an inline GET needs them (read on demand from the master). */
  bytes(digest: string): Buffer;
}

export interface InlineManifest {
  method: string;
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer | null;
  kind: 'tag' | 'digest';
  /** Seconds a tag may be cached: the remaining tag-ttl for a pull-through tag. */
  tagMaxAge: number;
  ifNoneMatch?: string;
  extra?: Record<string, string>;
}

/** A manifest's exact bytes with its headers, or a 304; shared by published and cached repos. */
export function inlineManifestReply(m: InlineManifest): Reply {
  const etag = `"${m.digest}"`;
  const headers: Record<string, string> = {
    'Content-Type': m.mediaType,
    'Docker-Content-Digest': m.digest,
    ETag: etag,
    'Cache-Control': m.kind === 'digest' ? IMMUTABLE : `public, max-age=${Math.max(0, Math.floor(m.tagMaxAge))}`,
    ...m.extra,
  };
  if (etagMatches(m.ifNoneMatch, etag)) return reply(m.method, 304, headers);
  headers['Content-Length'] = String(m.size);
  return reply(m.method, 200, headers, m.bytes);
}

export function manifestReply(r: ManifestRequest): { reply: Reply; redirected: boolean } {
  const { digest, manifest } = negotiate(r.repo, r.ref, r.kind, r.accept);
  if (etagMatches(r.ifNoneMatch, `"${digest}"`) || r.mode === 'inline' || r.method !== 'GET') {
    const body = r.method === 'GET' && r.mode === 'inline' && !etagMatches(r.ifNoneMatch, `"${digest}"`) ? r.bytes(digest) : null;
    const inline = { method: r.method, digest, mediaType: manifest.mediaType, size: manifest.size, bytes: body, kind: r.kind };
    return { reply: inlineManifestReply({ ...inline, tagMaxAge: TAG_MAX_AGE_SECONDS, ifNoneMatch: r.ifNoneMatch }), redirected: false };
  }
  // Redirect mode, GET only: HEAD needs no bytes, so it is answered from memory in both modes.
  const base = r.repo.current.manifests.has(digest) ? r.repo.current.url : r.repo.previous.find((p) => p.version.manifests.has(digest))!.version.url;
  const location = fileUrl(r.urls, base, manifestRelPath(manifest.mediaType, digest));
  return { reply: reply(r.method, r.redirectStatus, { Location: location, 'Docker-Content-Digest': digest }), redirected: true };
}

/** crane's path choice for its own v2-v4 files (crane/views/v2.py), so crane data is served as crane did. */
export function craneManifestPath(file: AnyRedirectFile, ref: string, accept: Set<string>): string {
  if (file.version === 2) return `manifests/${ref}`;
  const schema2 = (file as { schema2_data?: string[] }).schema2_data ?? [];
  const lists = (file as { manifest_list_data?: string[] }).manifest_list_data ?? [];
  const amd64 = (file as { manifest_list_amd64_tags?: Record<string, [string, number]> }).manifest_list_amd64_tags ?? {};
  if (!schema2.length && !lists.length) return `manifests/1/${ref}`;
  if (accept.has(MediaType.dockerManifestList) && lists.includes(ref)) return `manifests/list/${ref}`;
  const fallback = amd64[ref];
  if (fallback) {
    if (accept.has(MediaType.dockerManifest)) return `manifests/${fallback[1]}/${fallback[0]}`;
    return fallback[1] === 1 ? `manifests/1/${fallback[0]}` : `manifests/1/${ref}`;
  }
  if (accept.has(MediaType.dockerManifest) && schema2.includes(ref)) return `manifests/2/${ref}`;
  return `manifests/1/${ref}`;
}
