// Loading one repo: the app file (or crane file) -> a compact IndexedRepo in the bounded LRU.
// Single-flight per name; a bad file keeps the last good version (invariant 6), even for a
// repo that was evicted, and a file refused once is not read again while it is unchanged.
import path from 'node:path';
import { REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME, repoKey, type Layout } from '../../shared/layout.js';
import { RedirectIndexMismatch } from '../../shared/redirect-index.js';
import type { Logger } from '../../shared/log.js';
import { BadFileError, probeEntry, readEntry, readRegularFileSync, type Entry } from './app-entry.js';
import { newKnown, noteEntry, type Known } from './known.js';
import { createLru, type Lru } from './lru.js';
import { craneRepo, derrickRepo, parseDerrickFile, parseDerrickIndex } from './parse.js';
import type { IndexEvents, IndexedRepo, RepoVersion } from './types.js';

export interface LoaderOptions {
  layout: Layout;
  /** realpath(root): app entries must resolve inside it. */
  realRoot: string;
  /** realpath(appDir): a regular file listed there needs no realpath of its own. */
  realAppDir: string;
  maxFileSize: number;
  memoryBound: number;
  graceMs: number;
  log: Logger;
  events?: IndexEvents;
  /** Set once the first listing is done: only swaps seen while running measure reload latency. */
  started: () => boolean;
}

export interface Loader {
  lru: Lru<string, IndexedRepo>;
  known: Map<string, Known>;
  /** Loads the app file `file` for `name`; with `old` (the loaded version), reloads it. `probed`: its entry, just probed. */
  loadApp(name: string, file: string, old?: IndexedRepo, probed?: Entry): Promise<IndexedRepo | undefined>;
  /** `within`: the crane data dir (realpath); its files must stay inside it. */
  loadCrane(name: string, file: string, within: string): Promise<IndexedRepo | undefined>;
  /** Probes an entry and records what changed. undefined: gone; a BadFileError is recorded too. */
  probe(name: string, file: string): Promise<Entry | undefined>;
  forget(name: string): void;
  knownOf(name: string): Known;
  reads(): number;
  countRead(): void;
}

export function createLoader(o: LoaderOptions): Loader {
  const known = new Map<string, Known>();
  const lru = createLru<string, IndexedRepo>(o.memoryBound);
  let reads = 0;
  const knownOf = (name: string) => {
    let k = known.get(name);
    if (!k) known.set(name, (k = newKnown()));
    return k;
  };

  const probe = async (name: string, file: string) => {
    const k = knownOf(name);
    try {
      const e = await probeEntry(file, o.realRoot, o.maxFileSize, o.realAppDir);
      if (e) noteEntry(k, e.identity, e.real, o.graceMs);
      return e;
    } catch (err) {
      if (err instanceof BadFileError && err.identity !== undefined) {
        if (noteEntry(k, err.identity, undefined, o.graceMs)) reject(file, err);
        k.seenBad = true;
      }
      throw err;
    }
  };

  const reject = (file: string, err: Error) => {
    o.log.error({ file, err: err.message }, 'redirect file rejected; keeping the last good version');
    o.events?.onError?.(file, err);
  };

  /**
   * Reads one derrick redirect file that must describe `name`: through the master's redirect.idx
   * when it is there and made from these bytes (no parse), else by parsing the JSON.
   */
  const readVersion = async (name: string, e: Entry) => {
    reads++;
    const json = await readEntry(e);
    const idx = readIndexOf(e.real);
    if (idx) {
      try {
        return parseDerrickIndex(idx, json, e.real, repoKey(name));
      } catch (err) {
        if (!(err instanceof RedirectIndexMismatch)) throw err;
        // Harmless (the JSON serves), and `derrick verify` names it: not worth a warning per load.
        o.log.debug({ file: e.real, why: err.message }, 'redirect index not used');
      }
    }
    return parseDerrickFile(json, e.real, repoKey(name));
  };

  /** The index beside a master's redirect.json; undefined when there is none or it can't be read. */
  const readIndexOf = (real: string) => {
    try {
      return readRegularFileSync(path.join(path.dirname(real), REDIRECT_INDEX_NAME), undefined, undefined, o.maxFileSize).buf;
    } catch {
      return undefined;
    }
  };

  /** The versions still in their grace period, reusing those already in memory. */
  const previousOf = async (name: string, k: Known, current: string, old?: IndexedRepo) => {
    const inMemory = new Map<string, RepoVersion>();
    if (old?.kind === 'derrick') for (const v of [old.current, ...old.previous.map((p) => p.version)]) if (v.dir) inMemory.set(v.dir, v);
    const out: IndexedRepo['previous'] = [];
    for (const p of k.previous) {
      if (p.real === current || p.until <= Date.now()) continue;
      let v = inMemory.get(path.dirname(p.real));
      if (!v) {
        const e = await probeEntry(p.real, o.realRoot, o.maxFileSize).catch(() => undefined);
        v = e && (await readVersion(name, e).catch(() => undefined))?.version;
      }
      if (v) out.push({ until: p.until, version: v });
    }
    return out;
  };

  const install = async (name: string, file: string, e: Entry, old: IndexedRepo | undefined, swapMs: number | undefined) => {
    const p = await readVersion(name, e);
    const k = knownOf(name);
    const repo = derrickRepo(p, file, e.real, e.size);
    repo.previous = await previousOf(name, k, e.real, old);
    repo.cost += repo.previous.length * e.size;
    k.good = e.real;
    k.protected = repo.protected;
    lru.set(name, repo, repo.cost);
    o.events?.onLoaded?.(repo, swapMs);
    return repo;
  };

  /** A bad app file: the last good master in memory or on disk, else the master web/ points at. */
  const lastGood = async (name: string, file: string, k: Known) => {
    const candidates = [k.good, path.join(o.layout.web(name), REDIRECT_FILE_NAME)];
    for (const real of candidates) {
      if (!real) continue;
      const e = await probeEntry(real, o.realRoot, o.maxFileSize).catch(() => undefined);
      if (!e) continue;
      const repo = await install(name, file, e, undefined, undefined).catch(() => undefined);
      if (repo) return repo;
    }
    return undefined;
  };

  const loadApp: Loader['loadApp'] = async (name, file, old, probed) => {
    const k = knownOf(name);
    try {
      const e = probed ?? (await probe(name, file));
      if (!e) {
        forget(name);
        return undefined;
      }
      if (k.seenBad) return old ?? (await lastGood(name, file, k));
      if (old && old.real === e.real) return old;
      const swapMs = old && o.started() ? Date.now() - e.swappedAt : undefined;
      return await install(name, file, e, old, swapMs);
    } catch (err) {
      const bad = err instanceof BadFileError ? err : new BadFileError((err as Error).message);
      if (!k.seenBad) reject(file, bad);
      k.seenBad = true;
      return old ?? (await lastGood(name, file, k));
    }
  };

  const loadCrane: Loader['loadCrane'] = async (name, file, within) => {
    try {
      const e = await probeEntry(file, within, o.maxFileSize, path.dirname(file));
      if (!e) return undefined;
      reads++;
      const repo = craneRepo((await readEntry(e)).toString('utf8'), file, e.size);
      if (repo.name !== name) throw new BadFileError(`now serves ${repo.name}, not ${name}`);
      lru.set(name, repo, repo.cost);
      o.events?.onLoaded?.(repo, undefined);
      return repo;
    } catch (err) {
      reject(file, err as Error);
      return undefined;
    }
  };

  const forget = (name: string) => {
    known.delete(name);
    if (lru.delete(name)) o.events?.onRemoved?.(name);
  };

  return { lru, known, loadApp, loadCrane, probe, forget, knownOf, reads: () => reads, countRead: () => void reads++ };
}
