// What a cache repo may publish (invariant 9): only blobs in the store that its own upstream was
// seen to have; a foreign layer is left to its URLs, neither required nor published.
import { describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { addManifest, cacheRepoFromState, cachedManifest, committedState, describeBlob, newCacheRepo } from './cache-repo.js';

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

/** Puts a manifest document into the repo as fetched from its upstream; returns its digest. */
function add(repo: ReturnType<typeof newCacheRepo>, doc: object): string {
  const bytes = Buffer.from(JSON.stringify(doc));
  const digest = sha256Digest(bytes);
  addManifest(repo, digest, cachedManifest(bytes, (doc as { mediaType: string }).mediaType));
  return digest;
}
const image = (config: string, layer: string, extra: object = {}) => ({
  schemaVersion: 2, mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: config, size: 6 },
  layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer, size: 5 }],
  ...extra,
});
const tagged = (repo: ReturnType<typeof newCacheRepo>, tag: string, digest: string) => repo.tags.set(tag, { digest, checkedAt: 1 });

describe('cachedManifest', () => {
  it('keeps what a referrers answer and an index need: children with their platforms, subject, artifactType, annotations', () => {
    const subject = { mediaType: MediaType.ociManifest, digest: d('subject'), size: 3 };
    const child = { mediaType: MediaType.ociManifest, digest: d('amd64'), size: 4, platform: { os: 'linux', architecture: 'amd64' } };
    const bytes = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociIndex, artifactType: 'application/x-t', subject, annotations: { a: 'b' },
      manifests: [child, { mediaType: MediaType.ociManifest, digest: d('bare'), size: 5 }],
    }));
    expect(cachedManifest(bytes, MediaType.ociIndex)).toEqual({
      mediaType: MediaType.ociIndex, size: bytes.length, bytes, blobs: [],
      children: [{ digest: d('amd64'), platform: { os: 'linux', architecture: 'amd64' } }, { digest: d('bare') }],
      subject, artifactType: 'application/x-t', annotations: { a: 'b' },
    });
  });

  it('an image without a subject or annotations has neither, and no children', () => {
    const bytes = Buffer.from(JSON.stringify({ ...image(CONFIG, LAYER), annotations: 'not an object' }));
    const m = cachedManifest(bytes, MediaType.ociManifest);
    expect(Object.keys(m).sort()).toEqual(['artifactType', 'blobs', 'bytes', 'mediaType', 'size']);
    expect(m.artifactType).toBe(MediaType.ociConfig);
    expect(m.blobs.map((b) => b.digest)).toEqual([CONFIG, LAYER]);
  });
});

describe('committedState: indexes and referrers', () => {
  it('publishes an index with the children that are complete; a child nobody pulled is left for its first request', () => {
    const repo = newCacheRepo('hub/x', 'x');
    const amd = add(repo, image(CONFIG, LAYER));
    const armConfig = d('arm config');
    const arm = add(repo, image(armConfig, d('arm layer')));
    const index = add(repo, {
      schemaVersion: 2, mediaType: MediaType.ociIndex,
      manifests: [
        { mediaType: MediaType.ociManifest, digest: amd, size: 1, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MediaType.ociManifest, digest: arm, size: 1, platform: { os: 'linux', architecture: 'arm64' } },
      ],
    });
    tagged(repo, 'v1', index);
    repo.proven.add(CONFIG).add(LAYER).add(armConfig);
    const state = committedState(repo, () => true)!;
    expect(state.tags).toEqual({ v1: index });
    expect(Object.keys(state.manifests).sort()).toEqual([amd, index].sort());
    expect(state.manifests[index]!.children!.map((c) => c.digest)).toEqual([amd, arm]);
    expect(state.manifests[amd]).toEqual({ mediaType: MediaType.ociManifest, size: repo.manifests.get(amd)!.size });
    expect(state.blobs).toEqual({ [CONFIG]: 6, [LAYER]: 5 });
    expect(state.manifestBlobs).toEqual({ [index]: [], [amd]: [CONFIG, LAYER] });
    expect(state).toMatchObject({ name: 'hub/x', source: 'pull-through:x', etags: {}, referrers: {} });
    expect(Date.parse(state.lastSync)).toBeGreaterThan(Date.now() - 60_000);
    // The index itself must be in the store.
    expect(committedState(repo, (x) => x !== index)).toBeUndefined();
  });

  it('tags, manifests and blobs come out sorted, whatever order they were pulled in', () => {
    const repo = newCacheRepo('hub/x', 'x');
    const one = add(repo, image(d('c1'), d('l1')));
    const two = add(repo, image(d('c2'), d('l2')));
    tagged(repo, 'zz', one);
    tagged(repo, 'aa', two);
    for (const x of ['c1', 'l1', 'c2', 'l2']) repo.proven.add(d(x));
    const state = committedState(repo, () => true)!;
    expect(Object.keys(state.tags)).toEqual(['aa', 'zz']);
    expect(Object.keys(state.manifests)).toEqual([one, two].sort());
    expect(Object.keys(state.blobs)).toEqual([d('c1'), d('l1'), d('c2'), d('l2')].sort());
  });

  it('a referrer tag is published only beside its subject, and a signature of an SBOM follows the SBOM', () => {
    const repo = newCacheRepo('hub/x', 'x');
    const subject = add(repo, image(CONFIG, LAYER));
    tagged(repo, 'v1', subject);
    const hex = (x: string) => x.slice('sha256:'.length);
    const sbomLayer = d('sbom layer');
    const sbom = add(repo, image(d('empty'), sbomLayer, { artifactType: 'application/spdx+json', annotations: { k: 'v' }, subject: { mediaType: MediaType.ociManifest, digest: subject, size: 1 } }));
    const sig = add(repo, image(d('sig config'), d('sig payload')));
    const sbomSig = add(repo, image(d('sig2 config'), d('sig2 payload')));
    const refIndex = add(repo, { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ mediaType: MediaType.ociManifest, digest: sbom, size: 1 }] });
    tagged(repo, `sha256-${hex(subject)}.sig`, sig);
    tagged(repo, `sha256-${hex(sbom)}.sig`, sbomSig);
    tagged(repo, `sha256-${hex(subject)}`, refIndex);
    // A signature of something this repo does not publish stays out.
    const orphan = add(repo, image(d('o config'), d('o payload')));
    tagged(repo, `sha256-${hex(d('elsewhere'))}.sig`, orphan);
    for (const x of [CONFIG, LAYER, d('empty'), sbomLayer, d('sig config'), d('sig payload'), d('sig2 config'), d('sig2 payload'), d('o config'), d('o payload')]) repo.proven.add(x);

    // The SBOM is reached by digest only (as a referrer), so it is published through the index.
    const state = committedState(repo, () => true)!;
    expect(Object.keys(state.tags).sort()).toEqual([`sha256-${hex(sbom)}.sig`, `sha256-${hex(subject)}`, `sha256-${hex(subject)}.sig`, 'v1'].sort());
    expect(state.manifests[orphan]).toBeUndefined();
    expect(state.manifests[sbom]).toBeDefined();
    const sigEntry = (digest: string) => ({ mediaType: MediaType.ociManifest, digest, size: repo.manifests.get(digest)!.size, artifactType: MediaType.ociConfig });
    expect(state.referrers[subject]).toEqual(expect.arrayContaining([sigEntry(sig), { mediaType: MediaType.ociManifest, digest: sbom, size: repo.manifests.get(sbom)!.size, artifactType: 'application/spdx+json', annotations: { k: 'v' } }]));
    expect(state.referrers[subject]).toHaveLength(2);
    expect(state.referrers[sbom]).toEqual([sigEntry(sbomSig)]);

    // Without its subject's image complete, none of them is published.
    repo.proven.delete(LAYER);
    expect(committedState(repo, () => true)).toBeUndefined();
  });
});

describe('cacheRepoFromState', () => {
  it('takes the tags back unconfirmed, with the last sync as their last pull; manifests proven, bytes where the store has them', () => {
    const bytes = Buffer.from(JSON.stringify(image(CONFIG, LAYER)));
    const digest = sha256Digest(bytes);
    const gone = d('manifest no longer stored');
    const repo = cacheRepoFromState({
      name: 'hub/x', source: 'pull-through:x', lastSync: '2026-01-02T03:04:05.000Z', etags: {},
      tags: { v1: digest, v0: gone },
      manifests: { [digest]: { mediaType: MediaType.ociManifest, size: bytes.length }, [gone]: { mediaType: MediaType.ociManifest, size: 9 } },
      blobs: { [CONFIG]: 6, [LAYER]: 5 }, referrers: {}, manifestBlobs: {},
    }, 'x', (x) => (x === digest ? bytes : undefined));
    expect(repo.name).toBe('hub/x');
    expect(repo.upstreamRepo).toBe('x');
    expect(repo.tags.get('v1')).toEqual({ digest, checkedAt: 0 });
    expect(repo.tags.get('v0')).toEqual({ digest: gone, checkedAt: 0 });
    expect(repo.access.get('v1')).toBe(Date.parse('2026-01-02T03:04:05.000Z'));
    expect([...repo.proven].sort()).toEqual([digest, gone].sort());
    expect([...repo.manifests.keys()]).toEqual([digest]);
    expect(repo.manifests.get(digest)!.blobs.map((b) => b.digest)).toEqual([CONFIG, LAYER]);
  });

  it('an unreadable lastSync counts as long ago', () => {
    const repo = cacheRepoFromState({
      name: 'hub/x', source: 'pull-through:x', lastSync: 'not a date', etags: {}, tags: { v1: d('m') }, manifests: {}, blobs: {}, referrers: {}, manifestBlobs: {},
    }, 'x', () => undefined);
    expect(repo.access.get('v1')).toBe(0);
  });
});

describe('cache-repo details a publish depends on', () => {
  it('an index without artifactType has none; a layer with an empty urls list is an ordinary layer', () => {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] }));
    expect(Object.keys(cachedManifest(bytes, MediaType.ociIndex)).sort()).toEqual(['blobs', 'bytes', 'mediaType', 'size']);
    const { repo } = imageRepo([{ mediaType: MediaType.dockerLayerGzip, digest: FOREIGN, size: 9, urls: [] }]);
    expect(describeBlob(repo, FOREIGN)).toEqual({ size: 9, foreign: false });
  });

  it('a cosign-tagged manifest that also names its subject is listed once; referrers come in tag order; tags come out sorted', () => {
    const repo = newCacheRepo('hub/x', 'x');
    const subject = add(repo, image(CONFIG, LAYER));
    const hex = subject.slice('sha256:'.length);
    const subjectRef = { subject: { mediaType: MediaType.ociManifest, digest: subject, size: 1 } };
    const sig = add(repo, image(d('s config'), d('s payload'), subjectRef));
    const att = add(repo, image(d('a config'), d('a payload')));
    // Pulled in this order: the tag last pulled is not the first published.
    tagged(repo, 'v1', subject);
    tagged(repo, `sha256-${hex}.sig`, sig);
    tagged(repo, `sha256-${hex}.att`, att);
    for (const x of ['s config', 's payload', 'a config', 'a payload']) repo.proven.add(d(x));
    repo.proven.add(CONFIG).add(LAYER);
    const state = committedState(repo, () => true)!;
    expect(state.referrers[subject]!.map((r) => r.digest)).toEqual([att, sig]);
    expect(Object.keys(state.tags)).toEqual([`sha256-${hex}.att`, `sha256-${hex}.sig`, 'v1']);
  });
});
