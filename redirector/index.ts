// The repo index, lazy and bounded (design invariant 7): names come from the app dir's listing
// (and a crane data dir's), a repo is read on its first request and kept in a bounded LRU, and
// fs.watch hints plus a periodic rescan re-check only what is remembered. A file that fails to
// parse or verify is logged, and that repo keeps its last good version (invariant 6).
import { watch, type FSWatcher } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Layout } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { readEntry } from './index/app-entry.js';
import { scanHead } from './index/head-scan.js';
import { appFileName, eachLimited, listAppDir, scanCraneDir, type CraneEntry } from './index/listing.js';
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
    layout: l, realRoot: await fs.realpath(l.root), maxFileSize, memoryBound: opts.memoryBound ?? 32 * 1024 * 1024,
    graceMs: opts.graceMs, log, events: opts.events, started: () => started,
  });
  const bytes = createManifestBytes(opts.manifestCache ?? 8 * 1024 * 1024, loader.countRead);
  let appFiles = await listAppDir(l.appDir);
  let crane = new Map<string, CraneEntry>();
  let craneRoot = '';
  let cranePending = !!opts.craneData;
  let sorted: string[] | undefined;
  const craneReady = opts.craneData
    ? Promise.all([fs.realpath(opts.craneData).catch(() => ''), scanCraneDir(opts.craneData, maxFileSize, log, loader.countRead)]).then(([root, found]) => {
        craneRoot = root;
        crane = found;
        cranePending = false;
        sorted = undefined;
      })
    : Promise.resolve();
  started = true;

  const flights = new Map<string, Promise<IndexedRepo | undefined>>();
  const once = (name: string, fn: () => Promise<IndexedRepo | undefined>) => {
    let p = flights.get(name);
    if (!p) {
      p = fn().finally(() => flights.delete(name));
      flights.set(name, p);
    }
    return p;
  };
  const loadCold = async (name: string) => {
    const file = appFiles.get(name);
    if (file) return loader.loadApp(name, file);
    await craneReady;
    const c = crane.get(name);
    return c ? loader.loadCrane(name, c.file, craneRoot) : undefined;
  };
  const load = (name: string) => {
    const hit = loader.lru.get(name);
    return hit ? Promise.resolve(hit) : once(name, () => loadCold(name));
  };

  /** Re-checks what is remembered about one name; reloads it only when it is in memory and changed. */
  const revalidate = async (name: string) => {
    // A load in flight may have resolved the entry before this change: let it land, then compare.
    await flights.get(name)?.catch(() => undefined);
    const loaded = loader.lru.peek(name);
    if (loaded?.kind === 'crane') {
      if (appFiles.has(name)) loader.lru.delete(name); // derrick's own publish wins
      return;
    }
    if (!loaded && !loader.known.has(name)) return;
    const file = l.app(name);
    const e = await loader.probe(name, file).catch(() => null);
    if (e === undefined) return void loader.forget(name);
    if (e && loaded && e.real !== loaded.real) await once(name, () => loader.loadApp(name, file, loaded));
  };

  const setListed = (name: string, file: string | undefined) => {
    if (file ? appFiles.get(name) === file : !appFiles.has(name)) return;
    if (file) appFiles.set(name, file);
    else appFiles.delete(name);
    sorted = undefined;
  };

  const hint = async (file: string) => {
    const name = appFileName(path.basename(file));
    if (!name) return;
    const present = await fs.lstat(file).then(() => true, () => false);
    setListed(name, present ? file : undefined);
    await revalidate(name);
  };

  const rescan = async () => {
    const next = await listAppDir(l.appDir);
    for (const name of appFiles.keys()) if (!next.has(name)) loader.forget(name);
    if (next.size !== appFiles.size || [...next.keys()].some((n) => !appFiles.has(n))) sorted = undefined;
    appFiles = next;
    const remembered = new Set([...loader.known.keys(), ...[...loader.lru.values()].map((r) => r.name)]);
    await eachLimited([...remembered], WIDTH, revalidate);
    for (const [name, k] of loader.known) if (!loader.lru.peek(name) && !worthKeeping(k)) loader.known.delete(name);
  };

  const names = () => (sorted ??= [...new Set([...appFiles.keys(), ...crane.keys()])].sort());

  /** true/false when known without a read; undefined when the file's head must be read. */
  const protectionOf = (name: string): boolean | undefined => {
    if (opts.protectedNames?.has(name)) return true;
    const loaded = loader.lru.peek(name);
    if (loaded) return loaded.protected;
    if (appFiles.has(name)) return loader.known.get(name)?.protected;
    return crane.get(name)?.protected ?? true;
  };

  /** One read of the file's head, remembered until the entry changes. Fails closed. */
  const learnProtection = async (name: string) => {
    const file = appFiles.get(name);
    if (!file) return;
    const k = loader.knownOf(name);
    try {
      const e = await loader.probe(name, file);
      if (!e || k.seenBad) return void (k.protected = true);
      loader.countRead();
      const buf = await readEntry(e);
      const head = scanHead(buf, ['protected', 'repo-registry-id']) ?? new Map(Object.entries(JSON.parse(buf.toString('utf8')) as object));
      k.protected = head.get('repo-registry-id') !== name || (head.has('protected') && head.get('protected') !== false);
    } catch {
      k.protected = true;
    }
  };

  const visibleNames = (authed: boolean): string[] | Promise<string[]> => {
    if (cranePending) return craneReady.then(() => visibleNames(authed));
    const all = names();
    if (authed) return all;
    const unknown = all.filter((n) => protectionOf(n) === undefined);
    if (!unknown.length) return all.filter((n) => protectionOf(n) === false);
    return eachLimited(unknown, WIDTH, learnProtection).then(() => all.filter((n) => protectionOf(n) === false));
  };

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
    has: (name) => appFiles.has(name) || crane.has(name) || cranePending,
    load,
    names,
    visibleNames,
    cachedManifest: bytes.cached,
    readManifest: bytes.read,
    size: () => names().length,
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
      await craneReady;
    },
  };
}
