import { describe, it, expect, afterEach } from 'vitest';
import { text } from 'node:stream/consumers';
import { MediaType } from '../../shared/oci.js';
import { UpstreamError } from '../../shared/registry/errors.js';
import { fakeImage, registryRoutes, repoOf, startServer, type TestServer } from '../../shared/registry/testing.js';
import { registrySource } from './registry.js';

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const img = fakeImage('app');
const repos = { 'team/app': repoOf({ v1: img, v2: fakeImage('app-v2') }) };

async function sourceOn(contentDigest: boolean) {
  const s = await startServer(registryRoutes(repos, { contentDigest }));
  servers.push(s);
  // tlsVerify=false so the client falls back to the fixture's plain http.
  return { s, src: registrySource({ registry: s.host, repository: 'team/app' }, { tlsVerify: false, retryBaseMs: 1 }) };
}

const manifestRequests = (s: TestServer) => s.requests.filter((r) => r.url.includes('/manifests/')).map((r) => r.method);

describe('registrySource', () => {
  it('describes itself as skopeo would and lists tags', async () => {
    const { s, src } = await sourceOn(true);
    expect(src.description).toBe(`docker://${s.host}/team/app`);
    expect(await src.listTags()).toEqual(['v1', 'v2']);
  });

  it('resolves a tag with HEAD alone when the registry sends the digest', async () => {
    const { s, src } = await sourceOn(true);
    expect(await src.resolveTag('v1')).toEqual({ mediaType: MediaType.ociManifest, digest: img.manifestDigest, size: img.manifest.length });
    expect(manifestRequests(s)).toEqual(['HEAD']);
  });

  it('falls back to GET, hashing the manifest, when HEAD has no Docker-Content-Digest', async () => {
    const { s, src } = await sourceOn(false);
    expect(await src.resolveTag('v1')).toEqual({ mediaType: MediaType.ociManifest, digest: img.manifestDigest, size: img.manifest.length });
    expect(manifestRequests(s)).toEqual(['HEAD', 'GET']);
  });

  it('gets manifests by tag and digest, and opens blobs', async () => {
    const { src } = await sourceOn(true);
    const byTag = await src.getManifest('v1');
    expect(byTag).toEqual({ bytes: img.manifest, mediaType: MediaType.ociManifest, digest: img.manifestDigest });
    expect((await src.getManifest(img.manifestDigest)).bytes.equals(img.manifest)).toBe(true);
    const body = await src.openBlob({ mediaType: MediaType.ociLayerGzip, digest: img.layerDigest, size: img.layer.length });
    expect(await text(body)).toBe(img.layer.toString());
  });

  it('passes on UpstreamError naming the image for a missing tag', async () => {
    const { s, src } = await sourceOn(true);
    const err = await src.resolveTag('v9').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).kind).toBe('not-found');
    expect((err as UpstreamError).message).toBe(`docker://${s.host}/team/app:v9: manifest unknown (404)`);
  });
});
