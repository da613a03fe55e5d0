// Structural verification of an OCI image layout, for tests.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { MediaType, digestHex, isIndexType, isManifestType, type Descriptor } from '../../shared/oci.js';

export const REF_NAME = 'org.opencontainers.image.ref.name';

export interface LayoutIndexJson {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
}

export async function readIndexJson(layoutDir: string): Promise<LayoutIndexJson> {
  return JSON.parse(await fs.readFile(path.join(layoutDir, 'index.json'), 'utf8')) as LayoutIndexJson;
}

/** The index.json descriptor for a tag, or undefined. */
export async function tagDescriptor(layoutDir: string, tag: string): Promise<Descriptor | undefined> {
  return (await readIndexJson(layoutDir)).manifests.find((d) => d.annotations?.[REF_NAME] === tag);
}

export function blobPath(layoutDir: string, digest: string): string {
  return path.join(layoutDir, 'blobs', 'sha256', digestHex(digest));
}

export async function readBlob(layoutDir: string, digest: string): Promise<Buffer> {
  return fs.readFile(blobPath(layoutDir, digest));
}

export async function readJsonBlob<T = any>(layoutDir: string, digest: string): Promise<T> {
  return JSON.parse((await readBlob(layoutDir, digest)).toString('utf8')) as T;
}

async function hashFile(file: string, gunzip = false): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  const sink = async (src: AsyncIterable<Buffer>) => {
    for await (const c of src) {
      h.update(c);
      size += c.length;
    }
  };
  if (gunzip) await pipeline(createReadStream(file), zlib.createGunzip(), sink);
  else await pipeline(createReadStream(file), sink);
  return { digest: 'sha256:' + h.digest('hex'), size };
}

const GZIP_LAYERS: readonly string[] = [MediaType.ociLayerGzip, MediaType.dockerLayerGzip];

export interface LayoutReport {
  /** Tag -> descriptor from index.json. */
  tags: Map<string, Descriptor>;
  /** Every verified blob digest (manifests, indexes, configs, layers). */
  blobs: Set<string>;
}

/**
 * Checks an OCI image layout: the oci-layout marker, index.json, and for everything reachable
 * from it that the blob exists, has the descriptor's size and hashes to its name; manifests'
 * mediaType fields match their descriptors; configs' diff_ids match the (uncompressed) layers.
 * Throws an Error describing the first problem.
 */
export async function verifyLayout(layoutDir: string): Promise<LayoutReport> {
  const marker = JSON.parse(await fs.readFile(path.join(layoutDir, 'oci-layout'), 'utf8'));
  if (marker.imageLayoutVersion !== '1.0.0') throw new Error(`oci-layout: unexpected ${JSON.stringify(marker)}`);
  const index = await readIndexJson(layoutDir);
  if (index.schemaVersion !== 2 || !Array.isArray(index.manifests)) throw new Error('index.json is not a schemaVersion 2 index');
  const tags = new Map<string, Descriptor>();
  const blobs = new Set<string>();

  const checkBlob = async (d: Descriptor, what: string) => {
    if (blobs.has(d.digest)) return;
    let st;
    try {
      st = await fs.stat(blobPath(layoutDir, d.digest));
    } catch {
      throw new Error(`${what} ${d.digest} is referenced but missing`);
    }
    if (st.size !== d.size) throw new Error(`${what} ${d.digest}: descriptor size ${d.size}, file size ${st.size}`);
    const { digest } = await hashFile(blobPath(layoutDir, d.digest));
    if (digest !== d.digest) throw new Error(`${what} ${d.digest} hashes to ${digest}`);
    blobs.add(d.digest);
  };

  const checkManifest = async (d: Descriptor, where: string): Promise<void> => {
    if (!isManifestType(d.mediaType)) throw new Error(`${where}: unexpected manifest media type ${d.mediaType}`);
    await checkBlob(d, `${where} manifest`);
    const doc = await readJsonBlob(layoutDir, d.digest);
    if (doc.schemaVersion !== 2) throw new Error(`${where}: schemaVersion ${doc.schemaVersion}`);
    if (doc.mediaType !== undefined && doc.mediaType !== d.mediaType) {
      throw new Error(`${where}: descriptor says ${d.mediaType}, manifest says ${doc.mediaType}`);
    }
    if (isIndexType(d.mediaType)) {
      for (const [i, child] of (doc.manifests as Descriptor[]).entries()) await checkManifest(child, `${where}.manifests[${i}]`);
      return;
    }
    const config = doc.config as Descriptor;
    const layers = doc.layers as Descriptor[];
    await checkBlob(config, `${where} config`);
    for (const l of layers) await checkBlob(l, `${where} layer`);
    const cfg = await readJsonBlob(layoutDir, config.digest);
    const diffIds = cfg?.rootfs?.diff_ids;
    if (cfg?.rootfs?.type !== 'layers' || !Array.isArray(diffIds) || diffIds.length !== layers.length) {
      throw new Error(`${where}: config rootfs does not list one diff_id per layer`);
    }
    for (const [i, l] of layers.entries()) {
      const gz = GZIP_LAYERS.includes(l.mediaType);
      const diffId = gz ? (await hashFile(blobPath(layoutDir, l.digest), true)).digest : l.digest;
      if (diffIds[i] !== diffId) throw new Error(`${where}: diff_ids[${i}] is ${diffIds[i]}, layer uncompresses to ${diffId}`);
    }
  };

  for (const [i, d] of index.manifests.entries()) {
    const tag = d.annotations?.[REF_NAME];
    if (tag !== undefined) {
      if (tags.has(tag)) throw new Error(`index.json lists tag ${tag} twice`);
      tags.set(tag, d);
    }
    await checkManifest(d, `index.json manifests[${i}]${tag ? ` (${tag})` : ''}`);
  }
  return { tags, blobs };
}

export interface TarEntry {
  name: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  type: string;
  data: Buffer;
}

/** Parses a (small, in-memory) ustar archive, verifying each header checksum. */
export function parseTar(tar: Buffer): TarEntry[] {
  const entries: TarEntry[] = [];
  let off = 0;
  const str = (b: Buffer) => b.toString('utf8').replace(/\0.*$/s, '');
  const oct = (b: Buffer) => parseInt(str(b).trim() || '0', 8);
  while (off + 512 <= tar.length) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (sum !== oct(h.subarray(148, 156))) throw new Error(`bad tar checksum at offset ${off}`);
    if (str(h.subarray(257, 263)) !== 'ustar') throw new Error(`not a ustar header at offset ${off}`);
    const prefix = str(h.subarray(345, 500));
    const base = str(h.subarray(0, 100));
    const size = oct(h.subarray(124, 136));
    entries.push({
      name: prefix ? `${prefix}/${base}` : base,
      size,
      mode: oct(h.subarray(100, 108)),
      uid: oct(h.subarray(108, 116)),
      gid: oct(h.subarray(116, 124)),
      mtime: oct(h.subarray(136, 148)),
      type: String.fromCharCode(h[156]!),
      data: tar.subarray(off + 512, off + 512 + size),
    });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}
