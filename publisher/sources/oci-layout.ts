// An OCI image layout directory as a Source: index.json names the tags through the
// org.opencontainers.image.ref.name annotation; blobs/<alg>/<hex> holds everything.
import fs from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { type Descriptor, isDigestSyntax, isManifestType, isValidTag, parseManifest, referrerDescriptor, sha256Digest } from '../../shared/oci.js';
import type { FetchedManifest, Source } from './source.js';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export class LayoutError extends Error {}

export function ociLayoutSource(dir: string): Source {
  const description = `oci:${dir}`;
  let index: Promise<Map<string, Descriptor>> | undefined;
  let entries: Descriptor[] = [];
  let bySubject: Promise<Map<string, Descriptor[]>> | undefined;

  const blobPath = (digest: string) => {
    if (!isDigestSyntax(digest)) throw new LayoutError(`${description}: malformed digest ${digest}`);
    const [alg, hex] = digest.split(':') as [string, string];
    return path.join(dir, 'blobs', alg, hex);
  };

  // One read of index.json per sync: tags resolve from memory after that.
  const loadIndex = () =>
    (index ??= (async () => {
      let doc: { manifests?: Descriptor[] };
      try {
        doc = JSON.parse(await fs.readFile(path.join(dir, 'index.json'), 'utf8'));
      } catch (err) {
        throw new LayoutError(`${description}: cannot read index.json: ${(err as Error).message}`);
      }
      const tags = new Map<string, Descriptor>();
      entries = (doc.manifests ?? []).filter((d) => d && isDigestSyntax(d.digest) && isManifestType(d.mediaType));
      for (const d of doc.manifests ?? []) {
        const ref = d.annotations?.[REF_NAME_ANNOTATION];
        // A ref name may be a full reference in other tools; only plain tags name tags here.
        if (ref && isValidTag(ref) && isManifestType(d.mediaType)) tags.set(ref, d);
      }
      return tags;
    })());

  const resolveTag = async (tag: string) => {
    const d = (await loadIndex()).get(tag);
    if (!d) throw new LayoutError(`${description}:${tag}: tag not found in index.json`);
    return d;
  };

  const getManifest = async (ref: string): Promise<FetchedManifest> => {
    const desc = isDigestSyntax(ref) ? undefined : await resolveTag(ref);
    const digest = desc?.digest ?? ref;
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(blobPath(digest));
    } catch {
      throw new LayoutError(`${description}@${digest}: manifest blob missing`);
    }
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new LayoutError(`${description}@${digest}: manifest hashes to ${actual}`);
    let mediaType = desc?.mediaType;
    if (!mediaType) {
      const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: string; manifests?: unknown };
      mediaType = doc.mediaType ?? (doc.manifests ? 'application/vnd.oci.image.index.v1+json' : 'application/vnd.oci.image.manifest.v1+json');
    }
    return { bytes, mediaType, digest };
  };

  // The layout's referrers: every manifest index.json lists (tagged or not) that has a subject.
  // Read once per run; a layout has no referrers API, so this stands in for one.
  const loadReferrers = () =>
    (bySubject ??= (async () => {
      await loadIndex();
      const map = new Map<string, Descriptor[]>();
      for (const d of entries) {
        const m = await getManifest(d.digest);
        let parsed;
        try {
          parsed = parseManifest(m.bytes, d.mediaType);
        } catch (err) {
          throw new LayoutError(`${description}@${d.digest}: ${(err as Error).message}`);
        }
        if (!parsed.subject?.digest) continue;
        const list = map.get(parsed.subject.digest) ?? [];
        if (!list.some((x) => x.digest === d.digest)) list.push(referrerDescriptor(d.digest, m.bytes.length, parsed));
        map.set(parsed.subject.digest, list);
      }
      return map;
    })());

  return {
    description,
    referrers: async (digest: string) => (await loadReferrers()).get(digest) ?? [],
    listTags: async () => [...(await loadIndex()).keys()],
    resolveTag,
    getManifest,
    openBlob: async (d: Descriptor): Promise<Readable> => {
      const p = blobPath(d.digest);
      await fs.access(p).catch(() => {
        throw new LayoutError(`${description}: blob ${d.digest} missing`);
      });
      return createReadStream(p);
    },
  };
}
