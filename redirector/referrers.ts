// GET /v2/<name>/referrers/<digest>: an OCI index of the manifests whose subject is <digest>;
// an empty index, never a 404, when there are none.
import { MediaType, type Descriptor } from '../shared/oci.js';
import type { IndexedRepo } from './index.js';
import { reply, type Reply } from './reply.js';

export function referrersResponse(repo: IndexedRepo, digest: string, artifactType: string | undefined, method: string): Reply {
  return referrersIndexReply(repo.referrers[digest] ?? [], artifactType, method);
}

/** The referrers index of these descriptors, filtered by artifactType when one is asked for. */
export function referrersIndexReply(descriptors: Descriptor[], artifactType: string | undefined, method: string): Reply {
  let manifests = descriptors;
  const headers: Record<string, string> = { 'Content-Type': MediaType.ociIndex };
  if (artifactType) {
    manifests = manifests.filter((m) => m.artifactType === artifactType);
    headers['OCI-Filters-Applied'] = 'artifactType';
  }
  const body = JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests });
  headers['Content-Length'] = String(Buffer.byteLength(body));
  return reply(method, 200, headers, body);
}
