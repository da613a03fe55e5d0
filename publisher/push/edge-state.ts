// What an edge serves now, read with one rsync listing of its published/ tree (two levels under
// master/, so no master's contents). On an edge a master is two entries: the directory
// master/<key>/<ts>.d with the files, and the symlink master/<key>/<ts> -> <ts>.d that makes it
// visible under its real name, in one atomic step (see push-target.ts).
import { MASTER_NAME_RE, REDIRECT_FILE_NAME } from '../../shared/layout.js';
import { rsync } from './rsync.js';
import type { Transport } from './transport.js';

/** Suffix of the directory that holds an edge master's files. */
export const EDGE_DIR_SUFFIX = '.d';

export interface EdgeRepo {
  /** Masters visible under their real name (symlinks to their .d directory), sorted. */
  masters: string[];
  /** When each master's symlink was made on the edge: when it could first be served there. */
  linkedAt: Map<string, Date>;
  /** Master directories present (complete or not), by master name. */
  dirs: string[];
  /** Temp names rsync leaves when killed (.<name>.<random>), relative to published/. */
  debris: string[];
  web?: string;
  app?: string;
}

export interface EdgeState {
  /** By repo key. */
  repos: Map<string, EdgeRepo>;
  /** Temp names in web/ and app/, relative to published/. */
  debris: string[];
}

function repoOf(state: EdgeState, key: string): EdgeRepo {
  let r = state.repos.get(key);
  if (!r) state.repos.set(key, (r = { masters: [], linkedAt: new Map(), dirs: [], debris: [] }));
  return r;
}

/** The master a web or app link names, when it has the form derrick writes. */
function linkMaster(target: string, key: string, app: boolean): string | undefined {
  const prefix = `../master/${key}/`;
  const suffix = app ? `/${REDIRECT_FILE_NAME}` : '';
  if (!target.startsWith(prefix) || !target.endsWith(suffix)) return undefined;
  const m = target.slice(prefix.length, target.length - suffix.length);
  return MASTER_NAME_RE.test(m) ? m : undefined;
}

/** Parses `rsync --list-only -rl` lines: "<mode> <size> <date> <time> <path>[ -> <target>]". */
export function parseListing(text: string): EdgeState {
  const state: EdgeState = { repos: new Map(), debris: [] };
  for (const line of text.split('\n')) {
    const m = /^(\S)\S*\s+\S+\s+(\d{4})\/(\d\d)\/(\d\d) (\d\d:\d\d:\d\d)\s+(.+?)(?: -> (.+))?$/.exec(line);
    if (!m) continue;
    const [, type, y, mo, d, hms, rel, target] = m;
    // rsync prints the mtime in this host's local time zone.
    const mtime = new Date(`${y}-${mo}-${d}T${hms}`);
    const parts = rel!.split('/');
    if (parts[0] === 'master' && parts.length === 3) {
      const r = repoOf(state, parts[1]!);
      const name = parts[2]!;
      if (name.startsWith('.')) r.debris.push(rel!);
      else if (type === 'l' && MASTER_NAME_RE.test(name) && target === name + EDGE_DIR_SUFFIX) {
        r.masters.push(name);
        r.linkedAt.set(name, mtime);
      }
      else if (type === 'd' && name.endsWith(EDGE_DIR_SUFFIX) && MASTER_NAME_RE.test(name.slice(0, -EDGE_DIR_SUFFIX.length))) {
        r.dirs.push(name.slice(0, -EDGE_DIR_SUFFIX.length));
      }
    } else if ((parts[0] === 'web' || parts[0] === 'app') && parts.length === 2) {
      const name = parts[1]!;
      if (name.startsWith('.')) state.debris.push(rel!);
      else if (type === 'l' && parts[0] === 'web') repoOf(state, name).web = linkMaster(target ?? '', name, false);
      else if (type === 'l' && name.endsWith('.json')) {
        const key = name.slice(0, -'.json'.length);
        repoOf(state, key).app = linkMaster(target ?? '', key, true);
      }
    }
  }
  for (const r of state.repos.values()) {
    r.masters.sort();
    r.dirs.sort();
  }
  return state;
}

/** Reads an edge's state; a root that doesn't exist yet is an empty edge. */
export async function readEdgeState(t: Transport, what: string): Promise<EdgeState> {
  const r = await rsync(['--list-only', '-rl', '--exclude=/master/*/*/*', ...t.args, `${t.root}/published/`], {
    what: `${what}: list`,
    okCodes: [23],
  });
  // 23 with nothing listed: published/ is missing (a new edge); with a listing: some entry vanished mid-listing.
  return parseListing(r.stdout);
}
