// Signatures and SBOMs at a registry, in the formats real tools write:
// - a sigstore signature as containers/image writes it with `use-sigstore-attachments: true`
//   (and cosign without OCI 1.1 mode): an OCI manifest at tag `sha256-<hex>.sig` whose layer is
//   the "simple signing" payload, its ECDSA signature in the `dev.cosignproject.cosign/signature`
//   annotation. Used when the local skopeo can't sign (Debian builds it with sigstore disabled).
// - an SBOM artifact with `subject`, plus the referrers tag schema's index at `sha256-<hex>`,
//   as oras and regclient push to a registry without the referrers API.
// - the check a sigstoreSigned policy makes on the client, for the same reason.
import { createHash, sign, verify, type KeyObject } from 'node:crypto';
import { MediaType, digestHex, type Descriptor } from '../../shared/oci.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const SBOM_TYPE = 'application/spdx+json';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

export async function pushBlob(registryUrl: string, repo: string, bytes: Buffer): Promise<Descriptor> {
  const digest = sha(bytes);
  const start = await fetch(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  await start.text();
  if (start.status !== 202) throw new Error(`POST upload to ${repo}: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location')!, registryUrl);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  await put.text();
  if (put.status !== 201) throw new Error(`PUT blob to ${repo}: HTTP ${put.status}`);
  return { mediaType: 'application/octet-stream', digest, size: bytes.length };
}

export async function pushManifest(registryUrl: string, repo: string, ref: string, doc: object): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(doc));
  const mediaType = (doc as { mediaType: string }).mediaType;
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: bytes, headers: { 'Content-Type': mediaType } });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`PUT ${repo}:${ref}: HTTP ${res.status} ${text}`);
  return { mediaType, digest: sha(bytes), size: bytes.length };
}

/** The simple-signing payload that names `digest` as `identity` (host/repo). */
export function signingPayload(identity: string, digest: string): Buffer {
  return Buffer.from(JSON.stringify({
    critical: { identity: { 'docker-reference': identity }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' },
    optional: null,
  }));
}

/** Signs `digest` and pushes the signature to `sha256-<hex>.sig`; `tamper` flips the signature's bytes. */
export async function pushSignature(
  registryUrl: string, repo: string, identity: string, digest: string, key: KeyObject, opts: { tamper?: boolean } = {},
): Promise<Descriptor> {
  const payload = signingPayload(identity, digest);
  const sig = sign('sha256', payload, key);
  if (opts.tamper) sig[sig.length - 1]! ^= 0xff;
  const config = Buffer.from(JSON.stringify({ architecture: '', config: {}, created: '0001-01-01T00:00:00Z', os: '', rootfs: { type: 'layers', diff_ids: [sha(payload)] } }));
  const c = await pushBlob(registryUrl, repo, config);
  const l = await pushBlob(registryUrl, repo, payload);
  return pushManifest(registryUrl, repo, `sha256-${digestHex(digest)}.sig`, {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: c.digest, size: c.size },
    layers: [{ mediaType: SIMPLE_SIGNING, digest: l.digest, size: l.size, annotations: { [SIGNATURE_ANNOTATION]: sig.toString('base64') } }],
  });
}

/**
 * Pushes an SBOM artifact whose subject is `subject`, and adds it to the tag schema's index at
 * `sha256-<subject hex>` (created when missing), with its artifactType and annotations.
 */
export async function pushSbom(registryUrl: string, repo: string, subject: Descriptor, content: object): Promise<Descriptor> {
  const empty = await pushBlob(registryUrl, repo, Buffer.from('{}'));
  const body = await pushBlob(registryUrl, repo, Buffer.from(JSON.stringify(content)));
  const annotations = { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z' };
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    artifactType: SBOM_TYPE,
    config: { mediaType: MediaType.ociEmpty, digest: empty.digest, size: empty.size },
    layers: [{ mediaType: SBOM_TYPE, digest: body.digest, size: body.size }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations,
  };
  const bytes = Buffer.from(JSON.stringify(doc));
  const sbom = await pushManifest(registryUrl, repo, sha(bytes), doc);
  const tag = `sha256-${digestHex(subject.digest)}`;
  const old = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, { headers: { Accept: MediaType.ociIndex } });
  const manifests: Descriptor[] = old.status === 200 ? ((await old.json()) as { manifests: Descriptor[] }).manifests : (await old.text(), []);
  manifests.push({ ...sbom, artifactType: SBOM_TYPE, annotations });
  await pushManifest(registryUrl, repo, tag, { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
  return { ...sbom, artifactType: SBOM_TYPE, annotations };
}

/** What fetching through a registry (here: derrick) returns. */
export interface Fetcher {
  manifest(ref: string): Promise<Buffer | undefined>;
  blob(digest: string): Promise<Buffer>;
}

/**
 * The check of a sigstoreSigned policy with keyPath (and remapIdentity, as a mirror needs): some
 * signature at `sha256-<hex>.sig` must carry a valid signature by `pub` over a payload naming this
 * digest and the `identity` it was signed as at the source. Returns why it refuses, or undefined when the image is accepted.
 */
export async function sigstoreRefusal(f: Fetcher, identity: string, digest: string, pub: KeyObject): Promise<string | undefined> {
  const raw = await f.manifest(`sha256-${digestHex(digest)}.sig`);
  if (!raw) return 'a signature was required, but no signature exists';
  const layers = (JSON.parse(raw.toString()) as { layers?: Array<Descriptor & { annotations?: Record<string, string> }> }).layers ?? [];
  const reasons: string[] = [];
  for (const l of layers) {
    if (l.mediaType !== SIMPLE_SIGNING) continue;
    const payload = await f.blob(l.digest);
    if (sha(payload) !== l.digest) { reasons.push('payload digest mismatch'); continue; }
    const sig = Buffer.from(l.annotations?.[SIGNATURE_ANNOTATION] ?? '', 'base64');
    if (!verify('sha256', payload, pub, sig)) { reasons.push('cryptographic signature verification failed'); continue; }
    const doc = JSON.parse(payload.toString()) as { critical: { identity: { 'docker-reference': string }; image: { 'docker-manifest-digest': string } } };
    if (doc.critical.image['docker-manifest-digest'] !== digest) { reasons.push('signature is for another digest'); continue; }
    if (doc.critical.identity['docker-reference'] !== identity) { reasons.push('signature is for another repository'); continue; }
    return undefined;
  }
  return reasons.join('; ') || 'no simple-signing layer';
}
