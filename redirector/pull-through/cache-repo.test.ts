// What a cache repo may publish (invariant 9): only blobs in the store that its own upstream was
// seen to have; a foreign layer is left to its URLs, neither required nor published.
import { describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { addManifest, cachedManifest, committedState, describeBlob, newCacheRepo } from './cache-repo.js';

const d = (s: string) => sha256Digest(s);
const CONFIG = d('config');
const LAYER = d('layer');
const FOREIGN = d('foreign');

function imageRepo(extraLayers: object[] = []) {
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.dockerManifest,
    config: { mediaType: MediaType.dockerConfig, digest: CONFIG, size: 6 },
    layers: [{ mediaType: MediaType.dockerLayerGzip, digest: LAYER, size: 5 }, ...extraLayers],
  };
  const bytes = Buffer.from(JSON.stringify(doc));
  const digest = sha256Digest(bytes);
  const repo = newCacheRepo('hub/x', 'x');
  addManifest(repo, digest, cachedManifest(bytes, MediaType.dockerManifest));
  repo.tags.set('v1', { digest, checkedAt: Date.now() });
  return { repo, digest };
}

describe('committedState and provenance', () => {
  it('a manifest fetched from the upstream is proven; its blobs are not until fetched or confirmed', () => {
    const { repo, digest } = imageRepo();
    expect(repo.proven.has(digest)).toBe(true);
    expect(repo.proven.has(LAYER)).toBe(false);
  });

  it('a tag whose blobs are in the store but unproven is not published', () => {
    const { repo } = imageRepo();
    expect(committedState(repo, () => true)).toBeUndefined();
    repo.proven.add(CONFIG);
    expect(committedState(repo, () => true)).toBeUndefined();
  });

  it('once every blob is proven and stored, the tag is published with them', () => {
    const { repo, digest } = imageRepo();
    repo.proven.add(CONFIG).add(LAYER);
    const state = committedState(repo, () => true)!;
    expect(state.tags).toEqual({ v1: digest });
    expect(state.blobs).toEqual({ [CONFIG]: 6, [LAYER]: 5 });
  });

  it('a proven blob missing from the store still holds the tag back', () => {
    const { repo } = imageRepo();
    repo.proven.add(CONFIG).add(LAYER);
    expect(committedState(repo, (x) => x !== LAYER)).toBeUndefined();
  });

  it('a foreign layer is neither required nor published, and is described as foreign', () => {
    const { repo, digest } = imageRepo([{ mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: FOREIGN, size: 9, urls: ['https://example.invalid/f'] }]);
    repo.proven.add(CONFIG).add(LAYER);
    const state = committedState(repo, (x) => x !== FOREIGN)!;
    expect(state.tags).toEqual({ v1: digest });
    expect(state.blobs[FOREIGN]).toBeUndefined();
    expect(state.manifestBlobs[digest]).toEqual([CONFIG, LAYER]);
    expect(describeBlob(repo, FOREIGN)).toEqual({ foreign: true });
    expect(describeBlob(repo, LAYER)).toEqual({ size: 5, foreign: false });
    expect(describeBlob(repo, d('unknown'))).toEqual({ foreign: false });
  });

  it('a digest named both as a foreign and as an ordinary layer is an ordinary blob', () => {
    const { repo } = imageRepo([{ mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: LAYER, size: 5, urls: ['https://example.invalid/l'] }]);
    expect(describeBlob(repo, LAYER)).toEqual({ size: 5, foreign: false });
  });
});
