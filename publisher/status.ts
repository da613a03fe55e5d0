// `derrick status`: one row per repo, from the symlinks and redirect files on disk.
import type { Config } from '../shared/config.js';
import { layout as makeLayout, masterNameDate, repoNameFromKey } from '../shared/layout.js';
import { formatBytes } from '../shared/units.js';
import { parseReferrerTag, referrerTagsOf } from '../shared/oci.js';
import type { RedirectFile } from '../shared/redirect-file.js';
import { currentPublish, readMasterRedirect } from '../shared/publish/current.js';
import { readdirOrEmpty } from '../shared/publish/fsutil.js';
import { readRepoState } from '../shared/publish/repo-state.js';

export interface StatusRow {
  repo: string;
  /** Image tags: referrer tags (`sha256-<hex>.sig`, ...) are counted in `signed`, not here. */
  tags: number;
  /** Image tags whose image (or one of its platform images) has a signature published with it. */
  signed: number;
  published: string;
  size: number;
  state: string;
  /** Published by derrick serve's pull-through cache, not by `derrick publish`. */
  cache: boolean;
}

export interface CacheUsage {
  images: number;
  /** Distinct manifest and blob bytes of the cached repos' current publishes. */
  bytes: number;
  maxSize?: number;
}

export async function repoStatus(config: Config): Promise<StatusRow[]> {
  const l = makeLayout(config.root);
  const names = new Set(config.repos.map((r) => r.name));
  for (const key of await readdirOrEmpty(l.masterRoot)) names.add(repoNameFromKey(key));
  const rows: StatusRow[] = [];
  for (const name of [...names].sort()) {
    const cur = await currentPublish(l, name);
    const file = cur.web ? await readMasterRedirect(l, name, cur.web) : undefined;
    const synced = await readRepoState(l, name).catch(() => undefined);
    const d = file?.derrick;
    const size = d ? Object.values(d.blobs).reduce((a, b) => a + b, 0) + Object.values(d.manifests).reduce((a, m) => a + m.size, 0) : 0;
    let state = 'ok';
    if (!cur.web) state = synced ? 'synced, not published' : 'never published';
    else if (!d) state = 'broken: unreadable redirect file';
    else if (cur.app !== cur.web) state = 'app behind web (interrupted swap; next publish completes it)';
    const cache = config.upstreams.some((u) => name.startsWith(u.prefix + '/'));
    if (cache) state += ' (pull-through cache)';
    else if (!config.repos.some((r) => r.name === name)) state += ' (not in config)';
    rows.push({
      repo: name,
      ...(d ? signedCount(d) : { tags: 0, signed: 0 }),
      published: cur.web ? masterNameDate(cur.web).toISOString() : '-',
      size,
      state,
      cache,
    });
  }
  return rows;
}

/** Signature artifact types: cosign's (OCI 1.1 mode) and notation's. */
const SIGNATURE_TYPE_RE = /^application\/vnd\.(dev\.cosign\.artifact\.sig|cncf\.notary\.signature)/;

/** A repo's image tags, and how many of them are signed: a cosign `.sig` tag or a signature referrer. */
export function signedCount(d: NonNullable<RedirectFile['derrick']>): { tags: number; signed: number } {
  const isSigned = (digest: string) =>
    referrerTagsOf(digest).some((t) => t.endsWith('.sig') && d.tags[t] !== undefined) ||
    (d.referrers[digest] ?? []).some((r) => SIGNATURE_TYPE_RE.test(r.artifactType ?? ''));
  let tags = 0;
  let signed = 0;
  for (const [tag, digest] of Object.entries(d.tags)) {
    if (parseReferrerTag(tag)) continue;
    tags++;
    if (isSigned(digest) || (d.manifests[digest]?.children ?? []).some((c) => isSigned(c.digest))) signed++;
  }
  return { tags, signed };
}

/** What the pull-through cache holds, counted as eviction counts it: shared blobs once. */
export async function cacheUsage(config: Config, rows: StatusRow[]): Promise<CacheUsage> {
  const l = makeLayout(config.root);
  const sizes = new Map<string, number>();
  let images = 0;
  for (const r of rows.filter((x) => x.cache)) {
    const cur = await currentPublish(l, r.repo);
    const d = cur.web ? (await readMasterRedirect(l, r.repo, cur.web))?.derrick : undefined;
    if (!d) continue;
    images += signedCount(d).tags;
    for (const [dg, m] of Object.entries(d.manifests)) sizes.set(dg, m.size);
    for (const [dg, n] of Object.entries(d.blobs)) sizes.set(dg, n);
  }
  let bytes = 0;
  for (const n of sizes.values()) bytes += n;
  return { images, bytes, maxSize: config.cache['max-size'] };
}

export function formatStatusTable(rows: StatusRow[]): string {
  const head = ['REPO', 'TAGS', 'SIGNED', 'PUBLISHED', 'SIZE', 'STATE'];
  const body = rows.map((r) => [r.repo, String(r.tags), String(r.signed), r.published, r.size ? formatBytes(r.size) : '-', r.state]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cols: string[]) => cols.map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(head), ...body.map(fmt)].join('\n');
}

export interface TargetStatusRow {
  target: string;
  /** When the last push to it ended, or '-' when there was none. */
  lastPush: string;
  result: string;
  lagSeconds?: number;
  lastSuccess?: string;
}

/** One row per configured target, from the state the last push left under <root>/push/. */
export async function targetStatus(config: Config): Promise<TargetStatusRow[]> {
  const { readPushState } = await import('./push/push-state.js');
  const l = makeLayout(config.root);
  const rows: TargetStatusRow[] = [];
  for (const t of config.targets) {
    const s = await readPushState(l, t.name);
    if (!s) {
      rows.push({ target: t.name, lastPush: '-', result: 'never pushed' });
      continue;
    }
    const result = s.ok ? `ok: ${s.sent} sent, ${s.unchanged} up to date` : `failed: ${s.errors[0] ?? 'unknown error'}`;
    rows.push({ target: t.name, lastPush: s.at, result, lagSeconds: s.lagSeconds, lastSuccess: s.lastSuccess });
  }
  return rows;
}

export function formatTargetTable(rows: TargetStatusRow[]): string {
  const head = ['TARGET', 'LAST PUSH', 'LAG', 'RESULT'];
  const body = rows.map((r) => [r.target, r.lastPush, r.lagSeconds === undefined ? '-' : `${r.lagSeconds}s`, r.result]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cols: string[]) => cols.map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(head), ...body.map(fmt)].join('\n');
}
