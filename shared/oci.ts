// OCI and Docker media types, and the grammars from the OCI distribution spec.
import { createHash } from 'node:crypto';

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  ociLayoutHeader: 'application/vnd.oci.image.layout.v1+json',
} as const;

/** The manifest media types derrick stores and serves. */
export const MANIFEST_TYPES: readonly string[] = [
  MediaType.ociManifest,
  MediaType.ociIndex,
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
];

export const INDEX_TYPES: readonly string[] = [MediaType.ociIndex, MediaType.dockerManifestList];

export function isIndexType(mediaType: string): boolean {
  return INDEX_TYPES.includes(mediaType);
}

export function isManifestType(mediaType: string): boolean {
  return MANIFEST_TYPES.includes(mediaType);
}

/** Accept header a client sends to receive any of the manifest types derrick handles. */
export const ACCEPT_ALL_MANIFESTS = MANIFEST_TYPES.join(', ');

// distribution-spec: <name> components, separated by '/', whole name at most 255 chars.
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
export const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
export const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const DIGEST_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
export const SHA256_DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
export const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

/** A digest derrick can verify: only sha256 is supported for content. */
export function isSha256Digest(digest: string): boolean {
  return SHA256_DIGEST_RE.test(digest);
}

export function isDigestSyntax(ref: string): boolean {
  return DIGEST_RE.test(ref);
}

export function sha256Digest(data: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

export function digestHex(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

/** The parts of an image manifest or index that derrick needs. */
export interface ParsedManifest {
  mediaType: string;
  /** Children of an index, with their platforms. */
  manifests: Descriptor[];
  /** Config and layers of an image manifest. */
  blobs: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export class ManifestParseError extends Error {}

/**
 * Parses manifest bytes. The media type comes from the transport (Content-Type or descriptor)
 * and falls back to the manifest's own mediaType field, as OCI permits an absent one.
 */
export function parseManifest(bytes: Uint8Array, transportType?: string): ParsedManifest {
  let doc: any;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new ManifestParseError('manifest is not valid JSON');
  }
  if (!doc || typeof doc !== 'object') throw new ManifestParseError('manifest is not a JSON object');
  let mediaType: string | undefined = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (!mediaType && transportType && isManifestType(transportType)) mediaType = transportType;
  if (!mediaType) mediaType = Array.isArray(doc.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
  if (!isManifestType(mediaType)) throw new ManifestParseError(`unsupported manifest media type ${mediaType}`);
  const descriptors = (list: unknown): Descriptor[] => {
    if (!Array.isArray(list)) return [];
    return list.map((d) => {
      if (!d || typeof d.digest !== 'string' || !isDigestSyntax(d.digest) || typeof d.size !== 'number') {
        throw new ManifestParseError('manifest holds a malformed descriptor');
      }
      return d as Descriptor;
    });
  };
  if (isIndexType(mediaType)) {
    return {
      mediaType,
      manifests: descriptors(doc.manifests),
      blobs: [],
      subject: doc.subject,
      artifactType: doc.artifactType,
      annotations: doc.annotations,
    };
  }
  if (!doc.config) throw new ManifestParseError('image manifest has no config');
  return {
    mediaType,
    manifests: [],
    blobs: [...descriptors([doc.config]), ...descriptors(doc.layers)],
    subject: doc.subject,
    artifactType: doc.artifactType ?? doc.config?.mediaType,
    annotations: doc.annotations,
  };
}

/** Picks linux/amd64 from an index, as crane's amd64 fallback did. */
export function amd64Child<T extends { platform?: { os: string; architecture: string } }>(manifests: readonly T[]): T | undefined {
  return manifests.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64');
}

/**
 * Tags that name a subject by its digest instead of naming an image: the OCI referrers tag
 * schema (`sha256-<hex>`, an index of the subject's referrers) and cosign's conventions
 * (`sha256-<hex>.sig`, `.att`, `.sbom`, a signature, attestation or SBOM of the subject).
 */
export const REFERRER_TAG_RE = /^sha256-([a-f0-9]{64})(?:\.(sig|att|sbom))?$/;

/** The subject digest a referrer tag names, and whether it is the tag schema's index or one of cosign's. */
export function parseReferrerTag(tag: string): { subject: string; kind: 'index' | 'sig' | 'att' | 'sbom' } | undefined {
  const m = REFERRER_TAG_RE.exec(tag);
  if (!m) return undefined;
  return { subject: `sha256:${m[1]}`, kind: (m[2] as 'sig' | 'att' | 'sbom' | undefined) ?? 'index' };
}

/** The referrer tags a source may hold for a subject, in the order they are looked for. */
export function referrerTagsOf(digest: string): string[] {
  if (!isSha256Digest(digest)) return [];
  const base = `sha256-${digestHex(digest)}`;
  return [base, `${base}.sig`, `${base}.att`, `${base}.sbom`];
}

/** The descriptor a referrers index lists for a manifest: its artifactType and annotations go with it. */
export function referrerDescriptor(digest: string, size: number, parsed: ParsedManifest): Omit<Descriptor, 'platform'> {
  return {
    mediaType: parsed.mediaType,
    digest,
    size,
    ...(parsed.artifactType ? { artifactType: parsed.artifactType } : {}),
    ...(parsed.annotations ? { annotations: parsed.annotations } : {}),
  };
}
