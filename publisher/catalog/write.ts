// `derrick publish --catalog` (or `catalog: true`): a static copy of the catalog page, public
// repos only, for nginx or a CDN. Written whole into a temp directory, renamed into
// published/ui.d/<stamp>, then published/ui (a symlink) is swapped to it, like a repo's web/ link:
// a reader sees the old copy or the new one, never a mix. One writer at a time (a lock); the
// two newest copies are kept so a page already being read stays whole.
import fs from 'node:fs/promises';
import path from 'node:path';
import { CSS, JS } from '../../shared/catalog-page/assets.js';
import { describeRepo } from '../../shared/catalog-page/describe.js';
import { listPage } from '../../shared/catalog-page/list-page.js';
import type { PageContext, RouteView } from '../../shared/catalog-page/model.js';
import { pageOf } from '../../shared/catalog-page/paging.js';
import { registryHostOf } from '../../shared/catalog-page/pull-lines.js';
import { repoPage } from '../../shared/catalog-page/repo-page.js';
import type { Config } from '../../shared/config.js';
import { TMP_PREFIX, layout as makeLayout, masterName, type Layout } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { fsyncDir, isPidAlive, mapLimit, tmpName, tmpNamePid, writeNewFileSynced } from '../../shared/publish/fsutil.js';
import { acquireLock } from '../../shared/publish/lock.js';
import { readLink, swapSymlink } from '../../shared/publish/swap.js';
import { publicRepoFacts, publicRepoNames } from './public-repos.js';

/** Copies kept in ui.d: the served one and the one before it. */
const KEEP = 2;

export function catalogPaths(l: Layout) {
  return { link: path.join(l.publishedDir, 'ui'), versions: path.join(l.publishedDir, 'ui.d'), lock: path.join(l.locksDir, 'catalog.lock') };
}

/** The route a cache repo's name falls under (a repos: name never is one, as in routes.ts). */
function routeOf(config: Config, name: string): (RouteView & { upstreamRepo: string }) | undefined {
  if (config.repos.some((r) => r.name === name)) return undefined;
  const u = config.upstreams.filter((x) => name.startsWith(x.prefix + '/')).sort((a, b) => b.prefix.length - a.prefix.length)[0];
  return u && { prefix: u.prefix, upstream: u.url, upstreamRepo: name.slice(u.prefix.length + 1) };
}

export interface StaticCatalogResult {
  /** The copy now served: published/ui.d/<stamp>. */
  dir: string;
  repos: number;
}

export async function writeStaticCatalog(config: Config, log: Logger, waitMs = 0): Promise<StaticCatalogResult> {
  const l = makeLayout(config.root);
  const p = catalogPaths(l);
  const lock = await acquireLock(p.lock, 'the static catalog', waitMs);
  try {
    await fs.mkdir(p.versions, { recursive: true });
    const tmp = tmpName(p.versions, 'ui');
    try {
      const listed = await writeCopy(config, l, tmp);
      const final = path.join(p.versions, masterName(new Date()));
      await fs.rename(tmp, final);
      await fsyncDir(p.versions);
      await swapSymlink(p.link, path.join('ui.d', path.basename(final)));
      await prune(p.versions, path.basename(final), log);
      return { dir: final, repos: listed };
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  } finally {
    await lock.release();
  }
}

/** Writes every page into `dir`; returns how many repos it lists. */
async function writeCopy(config: Config, l: Layout, dir: string): Promise<number> {
  const origin = config.serve['public-url'] ?? `http://${config.serve.listen}`;
  const ctx: PageContext = { ...registryHostOf(origin), canSignIn: false, static: true };
  const dirs = new Set<string>();
  const write = async (rel: string, text: string) => {
    const file = path.join(dir, rel);
    await fs.mkdir(path.dirname(file), { recursive: true });
    dirs.add(path.dirname(file));
    await writeNewFileSynced(file, text, 0o644);
  };
  const names = await publicRepoNames(config, l);
  const shown = await mapLimit(names, 4, async (name) => {
    const facts = await publicRepoFacts(l, name);
    if (!facts) return undefined;
    const view = await describeRepo(facts);
    await write(path.join('r', name, 'index.html'), repoPage(ctx, { ...view, route: routeOf(config, name) }));
    return name;
  });
  const listed = shown.filter((n): n is string => n !== undefined);
  const routes = config.upstreams.map((u) => ({ prefix: u.prefix, upstream: u.url }));
  const { pages } = pageOf(listed, 1);
  for (let i = 1; i <= pages; i++) {
    const html = listPage(ctx, { ...pageOf(listed, i), total: listed.length, query: '', routes });
    await write(i === 1 ? 'index.html' : path.join('page', String(i), 'index.html'), html);
  }
  await write('names.json', JSON.stringify({ repositories: listed }));
  await write(path.join('assets', 'app.css'), CSS);
  await write(path.join('assets', 'app.js'), JS);
  for (const d of dirs) await fsyncDir(d);
  return listed.length;
}

/** Removes copies older than the newest KEEP (never the served one) and dead writers' temps. */
async function prune(versions: string, served: string, log: Logger): Promise<void> {
  const entries = (await fs.readdir(versions)).sort();
  const done = entries.filter((e) => !e.startsWith(TMP_PREFIX));
  const old = done.slice(0, Math.max(0, done.length - KEEP)).filter((e) => e !== served);
  const debris = entries.filter((e) => e.startsWith(TMP_PREFIX) && !isPidAlive(tmpNamePid(e) ?? process.pid));
  for (const e of [...old, ...debris]) {
    await fs.rm(path.join(versions, e), { recursive: true, force: true });
    log.debug({ dir: e }, 'removed an old static catalog');
  }
}

/** Where published/ui points now (tests and `status` read it). */
export async function servedCatalog(config: Config): Promise<string | undefined> {
  return readLink(catalogPaths(makeLayout(config.root)).link);
}
