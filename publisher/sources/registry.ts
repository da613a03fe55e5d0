// A repository on a Registry v2 / OCI distribution registry as a Source (docker://HOST/REPO).
// The shared client does auth, retries and verification of manifests; this only adapts shapes.
import type { Readable } from 'node:stream';
import { type Descriptor, isManifestType } from '../../shared/oci.js';
import { createRegistryClient, type RegistryClient, type RegistryClientOptions } from '../../shared/registry/client.js';
import type { FetchedManifest, Source } from './source.js';

export interface RegistrySourceRef {
  /** host[:port] */
  registry: string;
  repository: string;
}

export type RegistrySourceOptions = Omit<RegistryClientOptions, 'registry'> & {
  /** An existing client to share (its concurrency bound then covers every source using it). */
  client?: RegistryClient;
};

export function registrySource(ref: RegistrySourceRef, opts: RegistrySourceOptions = {}): Source {
  const { client: given, ...clientOpts } = opts;
  const client = given ?? createRegistryClient({ ...clientOpts, registry: ref.registry });
  const repo = ref.repository;

  const getManifest = (reference: string): Promise<FetchedManifest> => client.getManifest(repo, reference);
  // A registry without the referrers API says so on the first ask; the rest of the run doesn't ask again.
  let noReferrersApi = false;

  return {
    description: `docker://${ref.registry}/${repo}`,

    listTags: () => client.listTags(repo),

    async resolveTag(tag: string): Promise<Descriptor> {
      // HEAD is cheap and, on Docker Hub, does not count against the pull rate limit; but not every
      // registry sends Docker-Content-Digest (or a usable type and length), so GET when it is short.
      const head = await client.headManifest(repo, tag);
      if (head.digest && head.size !== undefined && isManifestType(head.mediaType)) {
        return { mediaType: head.mediaType, digest: head.digest, size: head.size };
      }
      const m = await getManifest(tag);
      return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
    },

    getManifest,

    async openBlob(desc: Descriptor): Promise<Readable> {
      return (await client.getBlob(repo, desc.digest)).body;
    },

    async referrers(digest: string): Promise<Descriptor[] | undefined> {
      if (noReferrersApi) return undefined;
      const found = await client.getReferrers(repo, digest);
      if (!found) noReferrersApi = true;
      return found;
    },
  };
}
