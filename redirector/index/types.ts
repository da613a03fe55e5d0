// What the redirector knows about a published repo once it is loaded, and the index's interface.
import type { Descriptor } from '../../shared/oci.js';
import type { AnyRedirectFile, ManifestEntry } from '../../shared/redirect-file.js';

/** A manifest's facts from the redirect file; its bytes stay on disk (see manifest-bytes.ts). */
export type IndexedManifest = ManifestEntry;

/** One published version of a repo, as a redirect file described it. */
export interface RepoVersion {
  /** Base URL of this version's files (absolute, or relative to the published tree). */
  url: string;
  master?: string;
  /** The master directory on disk (derrick files only): manifest bytes are read from it. */
  dir?: string;
  /** A ManifestTable (compact.ts) for derrick files. */
  manifests: ReadonlyMap<string, IndexedManifest>;
  /** Config and layer digests (a DigestSet). Sizes are not kept: a redirect needs membership only. */
  blobs: ReadonlySet<string>;
}

export interface IndexedRepo {
  name: string;
  kind: 'derrick' | 'crane';
  /** The app file (or crane data file) it came from. */
  file: string;
  /** The redirect file it resolved to: the master's redirect.json for an app symlink. */
  real: string;
  protected: boolean;
  current: RepoVersion;
  /** A TagTable (compact.ts) for derrick files. */
  tags: ReadonlyMap<string, string>;
  /** Sorted; shared with the TagTable, never changed. */
  sortedTags: string[];
  referrers: Record<string, Descriptor[]>;
  /** crane v2-v4 data, for crane-style redirects. */
  crane?: AnyRedirectFile;
  /** Versions replaced less than `grace` ago: their blobs still redirect. */
  previous: Array<{ until: number; version: RepoVersion }>;
  /** What it counts against serve.index-memory: the size of the redirect files it came from. */
  cost: number;
  /** Loaded through the master's redirect.idx rather than by parsing its JSON. */
  viaIndex?: boolean;
}

export interface IndexEvents {
  onLoaded?(repo: IndexedRepo, swapToServedMs: number | undefined): void;
  onError?(file: string, err: Error): void;
  onRemoved?(name: string): void;
}

/**
 * The lazy, bounded index (design invariant 7). Names come from directory listings; a repo is
 * read on its first request and kept in a bounded LRU. `peek` is the synchronous fast path.
 */
export interface RepoIndex {
  /** A loaded repo, or undefined when it is not in memory (or not published). Never reads. */
  peek(name: string): IndexedRepo | undefined;
  /** Whether the name is published (app dir or crane data listing). Never reads a file. */
  has(name: string): boolean;
  /** Loads a repo (single-flight); undefined when it is not published or has no good version. */
  load(name: string): Promise<IndexedRepo | undefined>;
  /** Every published name, sorted. */
  names(): string[];
  /**
   * The names an (un)authenticated client may see in _catalog; a Promise while some are unknown.
   * `among`: only these (sorted, published) names, so a page of the catalog page learns the
   * protection of the names it shows rather than of every name.
   */
  visibleNames(authenticated: boolean, among?: string[]): string[] | Promise<string[]>;
  /** A manifest's bytes when they are in the byte cache. */
  cachedManifest(version: RepoVersion, digest: string): Buffer | undefined;
  /** A manifest's bytes from the master (verified against the digest on the way in). */
  readManifest(version: RepoVersion, digest: string): Promise<Buffer>;
  /** Published names. */
  size(): number;
  /** Repos in memory. */
  loadedCount(): number;
  /** Tags of the repos in memory. */
  tagCount(): number;
  /** Redirect files read so far (tests prove that a rejected file is not re-read). */
  filesRead(): number;
  /** Re-checks one app file (a watch hint) or, without an argument, the whole listing. */
  reload(file?: string): Promise<void>;
  close(): Promise<void>;
}
