// Every path derrick reads or writes, derived from `root`. This file is the filesystem
// contract between the publisher and the redirector.
import path from 'node:path';
import { digestHex } from './oci.js';
import { MediaType } from './oci.js';

/** Prefix of every temporary name derrick creates; anything with it is debris after a crash. */
export const TMP_PREFIX = '.tmp-';

/** File name of the redirect file inside a master directory. */
export const REDIRECT_FILE_NAME = 'redirect.json';

/**
 * The redirect file's binary index, beside it in the master (shared/redirect-index.ts): the same
 * tables, ready to use, so a cold repo is loaded without parsing JSON. Optional: a master without
 * one (an older publish, a crane tree) is served from redirect.json.
 */
export const REDIRECT_INDEX_NAME = 'redirect.idx';

/** The files of a master that describe it and are never served. */
export const MASTER_META_FILES: readonly string[] = [REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME];

/**
 * Repo names may nest ("a" and "a/b" can both exist), so a name is flattened into one path
 * segment. '~' is URL-unreserved and never appears in an OCI repository name, so the mapping
 * is reversible and needs no escaping in nginx, a CDN or a URL.
 */
export function repoKey(name: string): string {
  return name.replaceAll('/', '~');
}

export function repoNameFromKey(key: string): string {
  return key.replaceAll('~', '/');
}

/** Master directory names: UTC time to the millisecond plus a sequence, so they sort in time order. */
export const MASTER_NAME_RE = /^\d{8}T\d{6}\.\d{3}Z-\d{3}$/;

export function masterName(date: Date, seq = 0): string {
  const iso = date.toISOString(); // 2026-11-24T09:48:00.123Z
  const compact = iso.replace(/[-:]/g, ''); // 20261124T094800.123Z
  return `${compact}-${String(seq).padStart(3, '0')}`;
}

export function masterNameDate(name: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z/.exec(name);
  if (!m) throw new Error(`not a master directory name: ${name}`);
  return new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
}

/** The manifests/ sub-directory for each media type; crane reads 2/ and list/. */
export const MANIFEST_DIR: Record<string, string> = {
  [MediaType.dockerManifest]: '2',
  [MediaType.dockerManifestList]: 'list',
  [MediaType.ociManifest]: 'oci',
  [MediaType.ociIndex]: 'oci-index',
};

export function manifestDir(mediaType: string): string {
  const dir = MANIFEST_DIR[mediaType];
  if (!dir) throw new Error(`no manifest directory for media type ${mediaType}`);
  return dir;
}

/** Path of a manifest or blob inside a master directory, relative to it; also its URL suffix. */
export function manifestRelPath(mediaType: string, ref: string): string {
  return `manifests/${manifestDir(mediaType)}/${ref}`;
}

export function blobRelPath(digest: string): string {
  return `blobs/${digest}`;
}

export const TAGS_LIST_REL_PATH = 'tags/list';

export interface Layout {
  root: string;
  storeDir: string;
  storeBlobsDir: string;
  repoStateDir: string;
  /** When each cached tag was last pulled (pull-through LRU), kept across serve restarts. */
  cacheAccessFile: string;
  /** Pull-through: per cached repo, the digests its upstream was seen to have (design invariant 9). */
  cacheProofDir: string;
  locksDir: string;
  /** `derrick push`: each target's last result, and the metrics textfile for node-exporter. */
  pushDir: string;
  /** serve: the names a crane data dir's files serve, by file stat, so a restart reads no unchanged file. */
  craneNamesDir: string;
  publishedDir: string;
  masterRoot: string;
  webDir: string;
  appDir: string;
  storeBlob(digest: string): string;
  repoState(name: string): string;
  cacheProof(name: string): string;
  repoLock(name: string): string;
  storeLock: string;
  masterDir(name: string): string;
  master(name: string, masterName: string): string;
  web(name: string): string;
  app(name: string): string;
  /** Path of a master relative to the published dir, as URLs and symlinks use it. */
  masterUrlPath(name: string, masterName: string): string;
}

export function layout(root: string): Layout {
  const abs = path.resolve(root);
  const storeDir = path.join(abs, 'store');
  const storeBlobsDir = path.join(storeDir, 'blobs', 'sha256');
  const repoStateDir = path.join(storeDir, 'repos');
  const locksDir = path.join(abs, 'locks');
  const publishedDir = path.join(abs, 'published');
  const masterRoot = path.join(publishedDir, 'master');
  const webDir = path.join(publishedDir, 'web');
  const appDir = path.join(publishedDir, 'app');
  return {
    root: abs,
    storeDir,
    storeBlobsDir,
    repoStateDir,
    cacheAccessFile: path.join(storeDir, 'cache-access.json'),
    cacheProofDir: path.join(storeDir, 'cache-proof'),
    craneNamesDir: path.join(storeDir, 'crane-names'),
    locksDir,
    pushDir: path.join(abs, 'push'),
    publishedDir,
    masterRoot,
    webDir,
    appDir,
    storeBlob: (digest) => path.join(storeBlobsDir, digestHex(digest)),
    repoState: (name) => path.join(repoStateDir, `${repoKey(name)}.json`),
    cacheProof: (name) => path.join(storeDir, 'cache-proof', `${repoKey(name)}.json`),
    repoLock: (name) => path.join(locksDir, `repo-${repoKey(name)}.lock`),
    storeLock: path.join(locksDir, 'store.lock'),
    masterDir: (name) => path.join(masterRoot, repoKey(name)),
    master: (name, m) => path.join(masterRoot, repoKey(name), m),
    web: (name) => path.join(webDir, repoKey(name)),
    app: (name) => path.join(appDir, `${repoKey(name)}.json`),
    masterUrlPath: (name, m) => `master/${repoKey(name)}/${m}/`,
  };
}
