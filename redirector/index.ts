// The repo index, lazy and bounded (design invariant 7): names come from the app dir's listing
// (and a crane data dir's), a repo is read on its first request and kept in a bounded LRU, and
// fs.watch hints plus a periodic rescan re-check only what is remembered. A file that fails to
// parse or verify is logged, and that repo keeps its last good version (invariant 6).
import { watch, type FSWatcher } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Layout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { createCatalog } from './index/catalog.js';
import { createCraneNames } from './index/crane-names.js';
import { appFileName, eachLimited, listAppDir } from './index/listing.js';
import { createLoader } from './index/loader.js';
import { worthKeeping } from './index/known.js';
import { createManifestBytes } from './index/manifest-bytes.js';
import type { IndexEvents, IndexedRepo, RepoIndex } from './index/types.js';

export type { IndexEvents, IndexedManifest, IndexedRepo, RepoIndex, RepoVersion } from './index/types.js';

export interface IndexOptions {
  layout: Layout;
  craneData?: string;
  graceMs: number;
  rescanMs: number;
  /** serve.index-memory: the redirect-file bytes of the repos kept loaded. */
  memoryBound?: number;
  /** serve.manifest-cache: bytes of hot manifests kept in memory. */
  manifestCache?: number;
  /** serve.max-redirect-file: a larger app entry is refused without being read. */
  maxFileSize?: number;
  /** repos[].protected of the config: hidden from an anonymous _catalog without a read. */
  protectedNames?: ReadonlySet<string>;
  watch?: boolean;
  log: Logger;
  events?: IndexEvents;
}

/** How many files a rescan or a catalog look-up works on at once: libuv has 4 threads for everyone. */
const WIDTH = 4;

export async function createRepoIndex(opts: IndexOptions): Promise<RepoIndex> {
  const { layout: l, log } = opts;
  await fs.mkdir(l.appDir, { recursive: true });
  let started = false;
  const maxFileSize = opts.maxFileSize ?? 8 * 1024 * 1024;
  const loader = createLoader({
    layout: l, realRoot: await fs.realpath(l.root), realAppDir: await fs.realpath(l.appDir), maxFileSize,
    memoryBound: opts.memoryBound ?? 8 * 1024 * 1024, graceMs: opts.graceMs, log, events: opts.events, started: () => started,
  });
  const bytes = createManifestBytes(opts.manifestCache ?? 8 * 1024 * 1024, loader.countRead);
  let appNames = await listAppDir(l.appDir);
  let sorted: string[] | undefined;
  const crane = createCraneNames(opts.craneData, maxFileSize, log, loader.countRead, () => (sorted = undefined), l.craneNamesDir);
  started = true;

  const flights = new Map<string, Promise<IndexedRepo | undefined>>();
  const once = (name: string, fn: () => Promise<IndexedRepo | undefined>) => {
    let p = flights.get(name);
    if (!p) flights.set(name, (p = fn().finally(() => flights.delete(name))));
    return p;
  };
  const loadCold = async (name: string) => {
    if (appNames.has(name)) return loader.loadApp(name, l.app(name));
    const c = await crane.find(name);
    return c ? loader.loadCrane(name, c.file, crane.root()) : undefined;
  };
  const load = (name: string) => {
    const hit = loader.lru.get(name);
    return hit ? Promise.resolve(hit) : once(name, () => loadCold(name));
  };

  /** Re-checks what is remembered about one name; reloads it only when it is in memory and changed. */
  const revalidate = async (name: string): Promise<boolean | undefined> => {
    // A load in flight may have resolved the entry before this change: let it land, then compare.
    await flights.get(name)?.catch(() => undefined);
    const loaded = loader.lru.peek(name);
    if (loaded?.kind === 'crane') {
      if (appNames.has(name)) loader.lru.delete(name); // derrick's own publish wins
      return undefined;
    }
    if (!loaded && !loader.known.has(name)) return undefined;
    const file = l.app(name);
    const e = await loader.probe(name, file).catch(() => null);
    if (e === undefined) {
      loader.forget(name);
      return false;
    }
    if (e && loaded && e.real !== loaded.real) await once(name, () => loader.loadApp(name, file, loaded, e));
    return true;
  };

  const setListed = (name: string, present: boolean) => {
    if (present === appNames.has(name)) return;
    if (present) appNames.add(name);
    else appNames.delete(name);
    sorted = undefined;
  };

  const hint = async (file: string) => {
    const name = appFileName(path.basename(file));
    if (!name) return;
    const present = (await revalidate(name)) ?? (await fs.lstat(file).then(() => true, () => false));
    setListed(name, present);
  };

  const rescan = async () => {
    const next = await listAppDir(l.appDir);
    for (const name of appNames) if (!next.has(name)) loader.forget(name);
    if (next.size !== appNames.size || [...next].some((n) => !appNames.has(n))) sorted = undefined;
    appNames = next;
    const remembered = new Set([...loader.known.keys(), ...[...loader.lru.values()].map((r) => r.name)]);
    await eachLimited([...remembered], WIDTH, async (n) => void (await revalidate(n)));
    for (const [name, k] of loader.known) if (!loader.lru.peek(name) && !worthKeeping(k)) loader.known.delete(name);
  };

  const names = () => (sorted ??= [...new Set([...appNames, ...crane.names()])].sort());
  const visible = createCatalog({
    loader, protectedNames: opts.protectedNames, isApp: (n) => appNames.has(n), appFile: l.app, crane: crane.get, width: WIDTH,
  });

  let watcher: FSWatcher | undefined;
  if (opts.watch !== false) {
    try {
      watcher = watch(l.appDir, { persistent: false }, (_event, base) => {
        if (base) void hint(path.join(l.appDir, String(base))).catch((err) => log.warn({ err: String(err) }, 'reload hint failed'));
      });
      watcher.on('error', (err) => log.warn({ err: String(err) }, 'watcher error; the periodic rescan covers it'));
    } catch (err) {
      log.warn({ err: String(err) }, 'cannot watch the app dir; the periodic rescan covers it');
    }
  }
  const timer = setInterval(() => void rescan().catch((err) => log.warn({ err: String(err) }, 'rescan failed')), opts.rescanMs);
  timer.unref();

  return {
    peek: (name) => loader.lru.get(name),
    has: (name) => appNames.has(name) || crane.has(name),
    load,
    names,
    visibleNames: (authed, among) => (crane.pending() ? crane.ready.then(() => visible(among ?? names(), authed)) : visible(among ?? names(), authed)),
    cachedManifest: bytes.cached,
    readManifest: bytes.read,
    size: () => (crane.names().length ? names().length : appNames.size),
    loadedCount: () => loader.lru.size(),
    tagCount: () => {
      let n = 0;
      for (const r of loader.lru.values()) n += r.tags.size;
      return n;
    },
    filesRead: loader.reads,
    reload: (file) => (file ? hint(file) : rescan()),
    close: async () => {
      clearInterval(timer);
      watcher?.close();
      await crane.done();
    },
  };
}
