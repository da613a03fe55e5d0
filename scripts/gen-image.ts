// Deterministic test-image generator: writes real, valid images into an OCI image layout
// without downloading anything. Tests, the demo and the benchmarks use it.
//
//   node dist/scripts/gen-image.js --out DIR --tag T [--layers 1048576,2048] [--format docker]
//        [--platforms linux/amd64,linux/arm64] [--seed S] [--no-gzip]
//
// Same options => byte-identical blobs, manifests and index.json entries.
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';
import { MediaType, digestHex, isValidTag, type Descriptor, type Platform } from '../shared/oci.js';

export type ImageFormat = 'oci' | 'docker';

export interface GenerateImageOptions {
  /** OCI image layout directory; created if missing, appended to if present. */
  layoutDir: string;
  /** Tag, stored as the org.opencontainers.image.ref.name annotation in index.json. */
  tag: string;
  /** Seeds the layer content; defaults to the tag. */
  seed?: string;
  /** Sizes in bytes of the uncompressed file inside each layer; default [1024, 4096]. */
  layers?: number[];
  /** 'oci' (default) or 'docker' (schema2 manifest, config and layer types; manifest list). */
  format?: ImageFormat;
  /** e.g. ['linux/amd64', 'linux/arm/v7']: one image per platform plus an index / manifest list. */
  platforms?: string[];
  /** gzip the layers (zlib level 1); default true. */
  gzip?: boolean;
}

export interface GeneratedManifest {
  digest: string;
  mediaType: string;
  size: number;
  /** 'os/arch[/variant]'; only on the children of an index. */
  platform?: string;
  /** Config digest. */
  config: string;
  /** Layer digests, in manifest order. */
  layers: string[];
}

export interface GeneratedImage {
  /** Digest of what the tag points at: the image manifest, or the index / manifest list. */
  digest: string;
  mediaType: string;
  size: number;
  /** The image manifests: one for a single-platform image, else the index children in order. */
  manifests: GeneratedManifest[];
  /** Every config and layer digest (deduplicated, in generation order). */
  blobs: string[];
  /** Bytes of every distinct blob of the image: index, manifests, configs and layers. */
  totalBytes: number;
}

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** Uncompressed Docker layer; not in shared/oci.ts because derrick never needs to branch on it. */
const DOCKER_LAYER_TAR = 'application/vnd.docker.image.rootfs.diff.tar';
const DEFAULT_PLATFORM = 'linux/amd64';
const EPOCH = '1970-01-01T00:00:00Z';
/** At or below this uncompressed size a layer is built in memory; above, it is streamed. */
const IN_MEMORY_LIMIT = 4 * 1024 * 1024;
const CHUNK = 1024 * 1024;
const GZIP_LEVEL = 1;

// ---------------------------------------------------------------------------------------------
// Platforms

export function parsePlatform(spec: string): Platform {
  const parts = spec.split('/');
  const [os, architecture, variant] = parts;
  if (parts.length < 2 || parts.length > 3 || !os || !architecture || (parts.length === 3 && !variant)) {
    throw new Error(`invalid platform "${spec}": expected os/arch[/variant]`);
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

// ---------------------------------------------------------------------------------------------
// Tar (ustar) writing

function writeString(buf: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar field too long: ${value}`);
  bytes.copy(buf, offset);
}

function writeOctal(buf: Buffer, offset: number, length: number, value: number): void {
  // length-1 octal digits, zero padded, NUL terminated.
  const s = value.toString(8).padStart(length - 1, '0');
  if (s.length > length - 1) throw new Error(`tar numeric field overflow: ${value}`);
  writeString(buf, offset, length, s + '\0');
}

/** One 512-byte ustar header: mtime 0, uid/gid 0, owner root. */
export function tarHeader(name: string, size: number, type: 'file' | 'dir'): Buffer {
  const h = Buffer.alloc(512);
  let prefix = '';
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error(`tar name too long: ${name}`);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  writeString(h, 0, 100, base);
  writeOctal(h, 100, 8, type === 'dir' ? 0o755 : 0o644);
  writeOctal(h, 108, 8, 0); // uid
  writeOctal(h, 116, 8, 0); // gid
  writeOctal(h, 124, 12, type === 'dir' ? 0 : size);
  writeOctal(h, 136, 12, 0); // mtime
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h[156] = type === 'dir' ? 0x35 /* '5' */ : 0x30 /* '0' */;
  writeString(h, 257, 6, 'ustar\0');
  writeString(h, 263, 2, '00');
  writeString(h, 265, 32, 'root');
  writeString(h, 297, 32, 'root');
  writeOctal(h, 329, 8, 0); // devmajor
  writeOctal(h, 337, 8, 0); // devminor
  writeString(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  writeString(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return h;
}

function fileNameFor(seed: string, index: number): string {
  let safe = seed.replace(/[^A-Za-z0-9._-]/g, '_');
  if (safe.length > 80) safe = safe.slice(0, 40) + '_' + createHash('sha256').update(seed).digest('hex').slice(0, 16);
  return `data/${safe}-${index}.bin`;
}

/** Deterministic pseudo-random stream: the AES-256-CTR keystream under a key derived from the inputs. */
function keystream(seed: string, platform: string, index: number): (n: number) => Buffer {
  const key = createHash('sha256').update(`derrick-gen-image\0${seed}\0${platform}\0${index}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  let zeros = Buffer.alloc(0);
  return (n: number) => {
    if (zeros.length < n) zeros = Buffer.alloc(n);
    return cipher.update(n === zeros.length ? zeros : zeros.subarray(0, n));
  };
}

/** The uncompressed tar of one layer, as chunks. */
function* tarChunks(fileName: string, size: number, next: (n: number) => Buffer): Generator<Buffer> {
  yield tarHeader('data/', 0, 'dir');
  yield tarHeader(fileName, size, 'file');
  let left = size;
  while (left > 0) {
    const n = Math.min(left, CHUNK);
    yield next(n);
    left -= n;
  }
  const pad = (512 - (size % 512)) % 512;
  yield Buffer.alloc(pad + 1024); // padding, then the two zero end-of-archive blocks
}

interface BlobInfo {
  digest: string;
  size: number;
}

interface LayerInfo extends BlobInfo {
  diffId: string;
}

async function writeBlobBytes(layoutDir: string, bytes: Buffer): Promise<BlobInfo> {
  const hex = createHash('sha256').update(bytes).digest('hex');
  const file = path.join(layoutDir, 'blobs', 'sha256', hex);
  if (!(await sameSizeExists(file, bytes.length))) {
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
    await fs.writeFile(tmp, bytes);
    await fs.rename(tmp, file);
  }
  return { digest: `sha256:${hex}`, size: bytes.length };
}

async function sameSizeExists(file: string, size: number): Promise<boolean> {
  try {
    return (await fs.stat(file)).size === size;
  } catch {
    return false;
  }
}

async function writeLayer(layoutDir: string, seed: string, platform: string, index: number, size: number, gzip: boolean): Promise<LayerInfo> {
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`invalid layer size ${size}`);
  const name = fileNameFor(seed, index);
  const next = keystream(seed, platform, index);
  if (size <= IN_MEMORY_LIMIT) {
    const tar = Buffer.concat([...tarChunks(name, size, next)]);
    const diffId = 'sha256:' + createHash('sha256').update(tar).digest('hex');
    const blob = gzip ? zlib.gzipSync(tar, { level: GZIP_LEVEL }) : tar;
    return { ...(await writeBlobBytes(layoutDir, blob)), diffId };
  }
  // Large layer: stream tar -> (diff_id hash) -> gzip -> (digest hash) -> temp file -> rename.
  const dir = path.join(layoutDir, 'blobs', 'sha256');
  const tmp = path.join(dir, `.tmp-layer-${process.pid}-${randomBytes(6).toString('hex')}`);
  const diffHash = createHash('sha256');
  const blobHash = createHash('sha256');
  let blobSize = 0;
  const tap = (fn: (c: Buffer) => void) =>
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        fn(chunk);
        cb(null, chunk);
      },
    });
  const source = () => Readable.from(tarChunks(name, size, next), { objectMode: false });
  const diffTap = () => tap((c) => diffHash.update(c));
  const blobTap = () =>
    tap((c) => {
      blobHash.update(c);
      blobSize += c.length;
    });
  try {
    if (gzip) {
      await pipeline(source(), diffTap(), zlib.createGzip({ level: GZIP_LEVEL }), blobTap(), createWriteStream(tmp));
    } else {
      await pipeline(source(), diffTap(), blobTap(), createWriteStream(tmp));
    }
    const hex = blobHash.digest('hex');
    await fs.rename(tmp, path.join(dir, hex));
    return { digest: `sha256:${hex}`, size: blobSize, diffId: 'sha256:' + diffHash.digest('hex') };
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Image documents

function mediaTypes(format: ImageFormat, gzip: boolean) {
  return format === 'docker'
    ? {
        manifest: MediaType.dockerManifest,
        index: MediaType.dockerManifestList,
        config: MediaType.dockerConfig,
        layer: gzip ? MediaType.dockerLayerGzip : DOCKER_LAYER_TAR,
      }
    : {
        manifest: MediaType.ociManifest,
        index: MediaType.ociIndex,
        config: MediaType.ociConfig,
        layer: gzip ? MediaType.ociLayerGzip : MediaType.ociLayer,
      };
}

function configJson(platform: Platform, seed: string, layers: LayerInfo[]): Buffer {
  const config: Record<string, unknown> = {
    created: EPOCH,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      WorkingDir: '/',
      Labels: { 'dev.derrick.gen-image.seed': seed },
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: EPOCH, created_by: `derrick gen-image layer ${i}` })),
  };
  return Buffer.from(JSON.stringify(config));
}

async function writeImage(
  layoutDir: string,
  seed: string,
  platformSpec: string,
  sizes: number[],
  format: ImageFormat,
  gzip: boolean,
): Promise<{ manifest: GeneratedManifest; blobs: BlobInfo[] }> {
  const types = mediaTypes(format, gzip);
  const platform = parsePlatform(platformSpec);
  const canonical = formatPlatform(platform);
  const layers = await Promise.all(sizes.map((size, i) => writeLayer(layoutDir, seed, canonical, i, size, gzip)));
  const config = await writeBlobBytes(layoutDir, configJson(platform, seed, layers));
  const doc = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: { mediaType: types.config, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: types.layer, digest: l.digest, size: l.size })),
  };
  const written = await writeBlobBytes(layoutDir, Buffer.from(JSON.stringify(doc)));
  return {
    manifest: {
      digest: written.digest,
      mediaType: types.manifest,
      size: written.size,
      platform: canonical,
      config: config.digest,
      layers: layers.map((l) => l.digest),
    },
    blobs: [config, ...layers, written],
  };
}

// ---------------------------------------------------------------------------------------------
// Layout

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  [k: string]: unknown;
}

async function initLayout(layoutDir: string): Promise<void> {
  await fs.mkdir(path.join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  const marker = path.join(layoutDir, 'oci-layout');
  try {
    await fs.access(marker);
  } catch {
    await atomicWrite(marker, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  }
}

async function readLayoutIndex(layoutDir: string): Promise<LayoutIndex> {
  try {
    const doc = JSON.parse(await fs.readFile(path.join(layoutDir, 'index.json'), 'utf8')) as LayoutIndex;
    if (!Array.isArray(doc.manifests)) doc.manifests = [];
    return doc;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
  }
}

async function atomicWrite(file: string, data: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  await fs.writeFile(tmp, data);
  await fs.rename(tmp, file);
}

/** Serialises index.json read-modify-write per layout within this process. */
const indexLocks = new Map<string, Promise<unknown>>();

async function updateIndex(layoutDir: string, entries: Array<{ tag: string; descriptor: Descriptor }>): Promise<void> {
  const key = path.resolve(layoutDir);
  const prev = indexLocks.get(key) ?? Promise.resolve();
  const job = prev.then(async () => {
    const index = await readLayoutIndex(layoutDir);
    const tags = new Set(entries.map((e) => e.tag));
    index.manifests = index.manifests.filter((d) => !tags.has(d.annotations?.[REF_NAME_ANNOTATION] ?? '\0'));
    for (const { tag, descriptor } of entries) {
      index.manifests.push({ ...descriptor, annotations: { ...descriptor.annotations, [REF_NAME_ANNOTATION]: tag } });
    }
    await atomicWrite(path.join(layoutDir, 'index.json'), JSON.stringify(index, null, 2) + '\n');
  });
  const settled = job.catch(() => undefined);
  indexLocks.set(key, settled);
  try {
    await job;
  } finally {
    if (indexLocks.get(key) === settled) indexLocks.delete(key);
  }
}

// ---------------------------------------------------------------------------------------------
// Public API

export async function generateImage(opts: GenerateImageOptions): Promise<GeneratedImage> {
  const { layoutDir, tag } = opts;
  if (!isValidTag(tag)) throw new Error(`invalid tag "${tag}"`);
  const seed = opts.seed ?? tag;
  const sizes = opts.layers ?? [1024, 4096];
  const format = opts.format ?? 'oci';
  if (format !== 'oci' && format !== 'docker') throw new Error(`invalid format "${String(format)}"`);
  const gzip = opts.gzip ?? true;
  if (opts.platforms && opts.platforms.length === 0) throw new Error('platforms must not be empty');
  const platforms = opts.platforms?.map((p) => formatPlatform(parsePlatform(p)));
  if (platforms && new Set(platforms).size !== platforms.length) throw new Error('duplicate platform');
  const types = mediaTypes(format, gzip);

  await initLayout(layoutDir);
  const images = await Promise.all(
    (platforms ?? [DEFAULT_PLATFORM]).map((p) => writeImage(layoutDir, seed, p, sizes, format, gzip)),
  );

  const blobSizes = new Map<string, number>();
  const configAndLayers: string[] = [];
  for (const img of images) {
    for (const b of img.blobs) blobSizes.set(b.digest, b.size);
    for (const d of [img.manifest.config, ...img.manifest.layers]) if (!configAndLayers.includes(d)) configAndLayers.push(d);
  }

  let top: { digest: string; mediaType: string; size: number };
  let manifests: GeneratedManifest[];
  if (platforms) {
    const indexDoc = {
      schemaVersion: 2,
      mediaType: types.index,
      manifests: images.map(({ manifest: m }) => ({
        mediaType: m.mediaType,
        digest: m.digest,
        size: m.size,
        platform: parsePlatform(m.platform!),
      })),
    };
    const written = await writeBlobBytes(layoutDir, Buffer.from(JSON.stringify(indexDoc)));
    blobSizes.set(written.digest, written.size);
    top = { digest: written.digest, mediaType: types.index, size: written.size };
    manifests = images.map((i) => i.manifest);
  } else {
    const { platform: _p, ...m } = images[0]!.manifest;
    top = { digest: m.digest, mediaType: m.mediaType, size: m.size };
    manifests = [m];
  }

  await updateIndex(layoutDir, [{ tag, descriptor: { mediaType: top.mediaType, digest: top.digest, size: top.size } }]);
  let totalBytes = 0;
  for (const s of blobSizes.values()) totalBytes += s;
  return { ...top, manifests, blobs: configAndLayers, totalBytes };
}

export interface GenerateManyTagsOptions {
  layoutDir: string;
  count: number;
  prefix: string;
  seed?: string;
  /** Uncompressed size of the one file in each image's layer; default 256. */
  layerSize?: number;
}

export interface GeneratedTag {
  tag: string;
  digest: string;
  mediaType: string;
  size: number;
  /** Config and layer digests. */
  blobs: string[];
}

/**
 * Writes `count` small, distinct single-layer OCI images tagged `<prefix>0` .. `<prefix>N-1`
 * into one layout, writing index.json once at the end.
 */
export async function generateManyTags(opts: GenerateManyTagsOptions): Promise<GeneratedTag[]> {
  const { layoutDir, count, prefix } = opts;
  const seed = opts.seed ?? prefix;
  const layerSize = opts.layerSize ?? 256;
  if (!Number.isSafeInteger(count) || count < 0) throw new Error(`invalid count ${count}`);
  if (count > 0 && !isValidTag(`${prefix}${count - 1}`)) throw new Error(`invalid tag prefix "${prefix}"`);
  await initLayout(layoutDir);
  const results: GeneratedTag[] = new Array(count);
  const concurrency = 32;
  let nextIndex = 0;
  const worker = async () => {
    while (nextIndex < count) {
      const i = nextIndex++;
      const { manifest } = await writeImage(layoutDir, `${seed}-${i}`, DEFAULT_PLATFORM, [layerSize], 'oci', true);
      results[i] = {
        tag: `${prefix}${i}`,
        digest: manifest.digest,
        mediaType: manifest.mediaType,
        size: manifest.size,
        blobs: [manifest.config, ...manifest.layers],
      };
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  await updateIndex(
    layoutDir,
    results.map((r) => ({ tag: r.tag, descriptor: { mediaType: r.mediaType, digest: r.digest, size: r.size } })),
  );
  return results;
}

/** Path of a blob inside a layout. */
export function layoutBlobPath(layoutDir: string, digest: string): string {
  return path.join(layoutDir, 'blobs', 'sha256', digestHex(digest));
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: gen-image --out DIR --tag T [--layers 1048576,2048] [--format oci|docker]
                 [--platforms linux/amd64,linux/arm64] [--seed S] [--no-gzip]
       gen-image --out DIR --many N [--prefix tag-] [--seed S]`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      tag: { type: 'string' },
      layers: { type: 'string' },
      format: { type: 'string' },
      platforms: { type: 'string' },
      seed: { type: 'string' },
      'no-gzip': { type: 'boolean' },
      many: { type: 'string' },
      prefix: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (!values.out || (!values.tag && !values.many)) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  if (values.many !== undefined) {
    const tags = await generateManyTags({
      layoutDir: values.out,
      count: Number(values.many),
      prefix: values.prefix ?? 'tag-',
      ...(values.seed !== undefined ? { seed: values.seed } : {}),
    });
    process.stdout.write(`${tags.length} tags\n`);
    return 0;
  }
  const format = values.format ?? 'oci';
  if (format !== 'oci' && format !== 'docker') {
    process.stderr.write(`--format must be oci or docker\n`);
    return 2;
  }
  const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
  const layers = values.layers !== undefined ? list(values.layers).map(Number) : undefined;
  if (layers?.some((n) => !Number.isSafeInteger(n) || n < 0)) {
    process.stderr.write(`--layers must be comma-separated byte counts\n`);
    return 2;
  }
  const img = await generateImage({
    layoutDir: values.out,
    tag: values.tag!,
    format,
    gzip: !values['no-gzip'],
    ...(values.seed !== undefined ? { seed: values.seed } : {}),
    ...(layers ? { layers } : {}),
    ...(values.platforms !== undefined ? { platforms: list(values.platforms) } : {}),
  });
  process.stdout.write(img.digest + '\n');
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`gen-image: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
