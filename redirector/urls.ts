// Where a published file lives on the blob server, and how it is signed.
import { signedQuery } from '../shared/signing.js';

/** Where serve mounts the embedded file server. */
export const FILES_PREFIX = '/published';

export interface UrlOptions {
  /** 'embedded', or the base URL where <root>/published is served. */
  blobs: string;
  /** Path prefix of the embedded file server. */
  filesPrefix: string;
  signing?: { secret: string; ttlMs: number };
}

/**
 * The Location for a file under a version's base URL. A relative base (what the publisher
 * writes when blobs are embedded) resolves against the file server; an absolute one is kept.
 */
export function fileUrl(o: UrlOptions, base: string, rel: string): string {
  let url: string;
  if (/^https?:\/\//.test(base)) url = base + rel;
  else if (o.blobs === 'embedded') url = `${o.filesPrefix}/${base}${rel}`;
  else url = `${o.blobs.replace(/\/+$/, '')}/${base}${rel}`;
  if (!o.signing) return url;
  const pathOnly = url.startsWith('/') ? url : new URL(url).pathname;
  return `${url}?${signedQuery(decodeURIComponent(pathOnly), o.signing.secret, o.signing.ttlMs)}`;
}
