// Whether a manifest has signatures, from what a published repo already holds: cosign's tag
// convention (sha256-<hex>.sig) and referrers whose artifactType is a sigstore/cosign type.
import type { Descriptor } from '../oci.js';

const COSIGN_TAG_RE = /^sha256-([a-f0-9]{64})\.sig$/;
const SIGNATURE_TYPE_RE = /^application\/vnd\.dev\.(sigstore|cosign)\./;

/** The digests that a signature names, by either convention. */
export function signedDigests(tags: Iterable<string>, referrers: Readonly<Record<string, readonly Descriptor[]>>): Set<string> {
  const signed = new Set<string>();
  for (const t of tags) {
    const m = COSIGN_TAG_RE.exec(t);
    if (m) signed.add(`sha256:${m[1]}`);
  }
  for (const [subject, list] of Object.entries(referrers)) {
    if (list.some((d) => typeof d.artifactType === 'string' && SIGNATURE_TYPE_RE.test(d.artifactType))) signed.add(subject);
  }
  return signed;
}
