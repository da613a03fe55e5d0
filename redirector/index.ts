// The in-memory index of published repos: loaded at start, kept fresh by chokidar hints and a
// periodic rescan. A file that fails to parse or verify is logged, and that repo keeps its last
// good version (invariant 6); the request path never touches the disk for it (invariant 7).
import fs from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { type Layout, TMP_PREFIX, manifestRelPath } from '../shared/layout.js';
import type { Logger } from '../shared/log.js';
import { sha256Digest, type Descriptor } from '../shared/oci.js';
import { type AnyRedirectFile, type ManifestEntry, RedirectFileError, parseRedirectFile } from '../shared/redirect-file.js';

export interface IndexedManifest extends ManifestEntry {
  /** The exact bytes, held so that inline manifests need no disk read. */
  bytes: Buffer;
}

/** One published version of a repo, as a redirect file described it. */
export interface RepoVersion {
  /** Base URL of this version's files (absolute, or relative to the published tree). */
  url: string;
  master?: string;
  manifests: Map<string, IndexedManifest>;
  blobs: Map<string, number>;
}

export interface IndexedRepo {
  name: string;
  kind: 'derrick' | 'crane';
  /** The app file (or crane data file) it came from. */
  file: string;
  /** What the app symlink pointed at when loaded; a rescan compares against it. */
  target: string;
  protected: boolean;
  current: RepoVersion;
  tags: Map<string, string>;
  sortedTags: string[];
  referrers: Record<string, Descriptor[]>;
  /** crane v2-v4 data, for crane-style redirects. */
  crane?: AnyRedirectFile;
  /** Versions replaced less than `grace` ago: their blobs still redirect. */
  previous: Array<{ until: number; version: RepoVersion }>;
}

export interface IndexEvents {
  onLoaded?(repo: IndexedRepo, swapToServedMs: number | undefined): void;
  onError?(file: string, err: Error): void;
  onRemoved?(name: string): void;
}

export interface RepoIndex {
  get(name: string): IndexedRepo | undefined;
  names(): string[];
  size(): number;
  tagCount(): number;
  /** Re-reads one app file (a chokidar hint) or, without an argument, everything. */
  reload(file?: string): Promise<void>;
  close(): Promise<void>;
}

export interface IndexOptions {
  layout: Layout;
  craneData?: string;
  graceMs: number;
  rescanMs: number;
  watch?: boolean;
  log: Logger;
  events?: IndexEvents;
}

class BadFileError extends Error {}

/** `known`: manifests already in memory; a digest names immutable bytes, so those are reused, not re-read. */
async function loadDerrickFile(appFile: string, known?: Map<string, IndexedManifest>): Promise<{ parsed: AnyRedirectFile; version: RepoVersion }> {
  // Resolve the symlink once and read through the target, so a swap in between can't mix versions.
  const target = await fs.readlink(appFile).catch(() => appFile);
  const real = path.resolve(path.dirname(appFile), target);
  const text = await fs.readFile(real, 'utf8');
  const parsed = parseRedirectFile(text);
  if (parsed.version !== 4 || !parsed.derrick) throw new BadFileError('not a derrick redirect file (no derrick data)');
  const masterDir = path.dirname(real);
  const manifests = new Map<string, IndexedManifest>();
  await Promise.all(
    Object.entries(parsed.derrick.manifests).map(async ([digest, m]) => {
      const have = known?.get(digest);
      if (have && have.size === m.size) return void manifests.set(digest, { ...m, bytes: have.bytes });
      const bytes = await fs.readFile(path.join(masterDir, manifestRelPath(m.mediaType, digest)));
      if (sha256Digest(bytes) !== digest || bytes.length !== m.size) throw new BadFileError(`manifest ${digest} in ${masterDir} does not match its digest`);
      manifests.set(digest, { ...m, bytes });
    }),
  );
  return {
    parsed,
    version: { url: parsed.url, master: parsed.derrick.master, manifests, blobs: new Map(Object.entries(parsed.derrick.blobs)) },
  };
}

export async function createRepoIndex(opts: IndexOptions): Promise<RepoIndex> {
  const { layout: l, log } = opts;
  const repos = new Map<string, IndexedRepo>();
  /** file -> repo name, to find what an unlinked file had served. */
  const fileToName = new Map<string, string>();
  const inflight = new Map<string, Promise<void>>();
  let started = false;

  const install = (next: IndexedRepo) => {
    const prev = repos.get(next.name);
    if (prev && prev.file !== next.file && prev.kind === 'derrick' && next.kind === 'crane') return; // derrick's own publish wins
    if (prev && prev.kind === next.kind && prev.current.master !== next.current.master) {
      const now = Date.now();
      next.previous = [{ until: now + opts.graceMs, version: prev.current }, ...prev.previous.filter((p) => p.until > now)];
    } else if (prev) {
      next.previous = prev.previous;
    }
    repos.set(next.name, next);
    fileToName.set(next.file, next.name);
  };

  const loadAppFile = async (file: string) => {
    let swapMs: number | undefined;
    try {
      const st = await fs.lstat(file).catch(() => undefined);
      if (!st) {
        const name = fileToName.get(file);
        fileToName.delete(file);
        if (name && repos.get(name)?.file === file) {
          repos.delete(name);
          opts.events?.onRemoved?.(name);
        }
        return;
      }
      const existing = repos.get(fileToName.get(file) ?? '');
      // A symlink is identified by its target (masters are immutable); a plain file by its stat.
      const identity = st.isSymbolicLink() ? await fs.readlink(file) : `${file}@${st.mtimeMs}:${st.size}`;
      if (existing && existing.file === file && existing.target === identity && existing.kind === 'derrick') return;
      // The symlink's mtime is the swap time; only swaps seen while running measure reload latency.
      if (st.isSymbolicLink() && started) swapMs = Date.now() - st.mtimeMs;
      const { parsed, version } = await loadDerrickFile(file, existing?.current.manifests);
      const d = (parsed as { derrick?: { tags: Record<string, string>; referrers: Record<string, Descriptor[]> } }).derrick!;
      const tags = new Map(Object.entries(d.tags));
      const repo: IndexedRepo = {
        name: parsed['repo-registry-id'],
        kind: 'derrick',
        file,
        target: identity,
        protected: parsed.protected,
        current: version,
        tags,
        sortedTags: [...tags.keys()].sort(),
        referrers: d.referrers,
        previous: [],
      };
      install(repo);
      opts.events?.onLoaded?.(repo, swapMs);
    } catch (err) {
      // Keep serving the last good version of this repo; others are untouched.
      const e = err instanceof RedirectFileError || err instanceof BadFileError ? err : new Error(String((err as Error).message));
      log.error({ file, err: e.message }, 'redirect file rejected; keeping the last good version');
      opts.events?.onError?.(file, e);
    }
  };

  const loadCraneFile = async (file: string) => {
    try {
      const parsed = parseRedirectFile(await fs.readFile(file, 'utf8'));
      if (parsed.version === 1) {
        log.warn({ file }, 'crane v1 redirect file: v1 API only, not served on /v2 (as crane)');
        return;
      }
      const tags = new Map<string, string>();
      const repo: IndexedRepo = {
        name: parsed['repo-registry-id'],
        kind: 'crane',
        file,
        target: file,
        protected: parsed.protected,
        current: { url: parsed.url.endsWith('/') ? parsed.url : parsed.url + '/', manifests: new Map(), blobs: new Map() },
        tags,
        sortedTags: [],
        referrers: {},
        crane: parsed,
        previous: [],
      };
      install(repo);
      opts.events?.onLoaded?.(repo, undefined);
    } catch (err) {
      log.error({ file, err: (err as Error).message }, 'crane redirect file rejected');
      opts.events?.onError?.(file, err as Error);
    }
  };

  /** One load per file at a time; a hint during a load queues one more load after it. */
  const reloadFile = (file: string): Promise<void> => {
    const running = inflight.get(file);
    if (running) return running.then(() => reloadFile(file));
    const p = loadAppFile(file).finally(() => inflight.delete(file));
    inflight.set(file, p);
    return p;
  };

  const appFiles = async () =>
    (await fs.readdir(l.appDir).catch(() => [] as string[]))
      .filter((n) => n.endsWith('.json') && !n.startsWith(TMP_PREFIX))
      .map((n) => path.join(l.appDir, n));

  const rescan = async () => {
    const files = await appFiles();
    await Promise.all(files.map(reloadFile));
    // Files that vanished: unpublished repos.
    const present = new Set(files);
    for (const f of [...fileToName.keys()]) {
      if (f.startsWith(l.appDir + path.sep) && !present.has(f)) await reloadFile(f);
    }
  };

  await fs.mkdir(l.appDir, { recursive: true });
  if (opts.craneData) {
    const files = (await fs.readdir(opts.craneData, { recursive: true }).catch(() => [] as string[]))
      .filter((n) => n.endsWith('.json'))
      .sort()
      .map((n) => path.join(opts.craneData!, n));
    for (const f of files) await loadCraneFile(f);
  }
  await rescan();
  started = true;

  let watcher: FSWatcher | undefined;
  if (opts.watch !== false) {
    watcher = watch(l.appDir, { followSymlinks: false, depth: 0, ignoreInitial: true, atomic: false });
    const hint = (p: string) => {
      const base = path.basename(p);
      if (base.endsWith('.json') && !base.startsWith(TMP_PREFIX)) void reloadFile(path.join(l.appDir, base));
    };
    watcher.on('add', hint).on('change', hint).on('unlink', hint);
    watcher.on('error', (err) => log.warn({ err: String(err) }, 'watcher error; the periodic rescan covers it'));
    await new Promise<void>((resolve) => watcher!.once('ready', () => resolve()));
  }
  const timer = setInterval(() => void rescan().catch((err) => log.warn({ err: String(err) }, 'rescan failed')), opts.rescanMs);
  timer.unref();

  let tagCount = 0;
  const countTags = () => {
    tagCount = 0;
    for (const r of repos.values()) tagCount += r.tags.size;
    return tagCount;
  };

  return {
    get: (name) => repos.get(name),
    names: () => [...repos.keys()].sort(),
    size: () => repos.size,
    tagCount: countTags,
    reload: (file) => (file ? reloadFile(file) : rescan()),
    close: async () => {
      clearInterval(timer);
      await watcher?.close();
    },
  };
}

