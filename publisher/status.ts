// `derrick status`: one row per repo, from the symlinks and redirect files on disk.
import type { Config } from '../shared/config.js';
import { layout as makeLayout, masterNameDate, repoNameFromKey } from '../shared/layout.js';
import { formatBytes } from '../shared/units.js';
import { currentPublish, readMasterRedirect } from '../shared/publish/current.js';
import { readdirOrEmpty } from '../shared/publish/fsutil.js';
import { readRepoState } from '../shared/publish/repo-state.js';

export interface StatusRow {
  repo: string;
  tags: number;
  published: string;
  size: number;
  state: string;
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
    if (!config.repos.some((r) => r.name === name)) state += ' (not in config)';
    rows.push({
      repo: name,
      tags: d ? Object.keys(d.tags).length : 0,
      published: cur.web ? masterNameDate(cur.web).toISOString() : '-',
      size,
      state,
    });
  }
  return rows;
}

export function formatStatusTable(rows: StatusRow[]): string {
  const head = ['REPO', 'TAGS', 'PUBLISHED', 'SIZE', 'STATE'];
  const body = rows.map((r) => [r.repo, String(r.tags), r.published, r.size ? formatBytes(r.size) : '-', r.state]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const fmt = (cols: string[]) => cols.map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(head), ...body.map(fmt)].join('\n');
}
