// Small display helpers shared by the pages.
import { formatBytes } from '../units.js';

/** "sha256:0123456789ab" from a full digest: enough to tell tags apart by eye. */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return colon < 0 ? digest.slice(0, 12) : digest.slice(0, colon + 13);
}

export function sizeText(n: number | undefined): string {
  return n === undefined ? 'not published' : formatBytes(n);
}

/** "2026-12-02 13:05 UTC" */
export function timeText(iso: string): string {
  return iso.slice(0, 16).replace('T', ' ') + ' UTC';
}

/** The URL path of a repo's page; names are [a-z0-9._/-] by the spec's grammar. */
export function repoHref(name: string): string {
  return `/ui/r/${name.split('/').map(encodeURIComponent).join('/')}/`;
}

export function pageHref(page: number, query: string): string {
  const base = page <= 1 ? '/ui/' : `/ui/page/${page}/`;
  return query ? `${base}?q=${encodeURIComponent(query)}` : base;
}
