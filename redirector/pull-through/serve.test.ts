// The pull-through cache in process: startServer with a route to a real docker-registry, pulled
// like a client (tag -> manifest -> every blob). The e2e tests drive the built CLI; this one runs
// the modules themselves, so `npm run mutate` can see what they do.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../../scripts/gen-image.js';
import { pushImage } from '../../scripts/soak/upstream.js';
import { parseConfig } from '../../shared/config.js';
import { layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType } from '../../shared/oci.js';
import { requireTool } from '../../test/helpers/proc.js';
import { startRegistry, type Registry } from '../../test/helpers/registry.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { startServer, type RunningServer } from '../serve.js';

const hasTools = requireTool('docker-registry', 'the in-process pull-through tests are skipped');
const ACCEPT = `${MediaType.ociManifest}, ${MediaType.dockerManifest}`;

describe.skipIf(!hasTools)('pull-through in process, from a real docker-registry', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let server: RunningServer;
  let img: GeneratedImage;
  let root: string;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-pt-inproc');
    reg = await startRegistry();
    const gen = path.join(tmp.dir, 'gen');
    img = await generateImage({ layoutDir: gen, tag: 'v1', layers: [300_000, 20_000] });
    await pushImage(reg.url, 'lib/app', gen, img, 'v1');
    root = path.join(tmp.dir, 'var');
    const yaml = ['root: ./var', 'grace: 10m', 'upstreams:', '  - prefix: hub', `    url: ${JSON.stringify(reg.url)}`, '    tls-verify: false', '    tag-ttl: 1m', ''].join('\n');
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
  });
  afterAll(async () => {
    await server?.close();
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('serves a tag and every blob from the upstream, then commits the image as a publish', async () => {
    const m = await fetch(`${server.url}/v2/hub/lib/app/manifests/v1`, { headers: { Accept: ACCEPT } });
    const body = Buffer.from(await m.arrayBuffer());
    expect(m.status).toBe(200);
    expect(m.headers.get('docker-content-digest')).toBe(img.digest);
    expect(m.headers.get('content-type')).toBe(img.mediaType);
    expect('sha256:' + createHash('sha256').update(body).digest('hex')).toBe(img.digest);
    const manifest = JSON.parse(body.toString()) as { config: { digest: string }; layers: Array<{ digest: string; size: number }> };
    for (const d of [manifest.config.digest, ...manifest.layers.map((x) => x.digest)]) {
      const b = await fetch(`${server.url}/v2/hub/lib/app/blobs/${d}`);
      const bytes = Buffer.from(await b.arrayBuffer());
      expect(b.status, d).toBe(200);
      expect('sha256:' + createHash('sha256').update(bytes).digest('hex')).toBe(d);
    }
    await server.pullThrough!.committer.idle();
    const l = layout(root);
    const redirect = JSON.parse(await fs.readFile(l.app('hub/lib/app'), 'utf8')) as { derrick: { tags: Record<string, string>; blobs: Record<string, number> } };
    expect(redirect.derrick.tags).toEqual({ v1: img.digest });
    expect(Object.keys(redirect.derrick.blobs).sort()).toEqual([manifest.config.digest, ...manifest.layers.map((x) => x.digest)].sort());

    // Cached now: HEAD by digest and by tag answer without a body, with the digest.
    const head = await fetch(`${server.url}/v2/hub/lib/app/manifests/${img.digest}`, { method: 'HEAD', headers: { Accept: ACCEPT } });
    expect(head.status).toBe(200);
    expect(head.headers.get('docker-content-digest')).toBe(img.digest);
    expect(Number(head.headers.get('content-length'))).toBe(body.length);
  });

  it('lists the tags of the upstream repo', async () => {
    const r = await fetch(`${server.url}/v2/hub/lib/app/tags/list`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ name: 'hub/lib/app', tags: ['v1'] });
  });

  it('an unknown tag upstream is exactly MANIFEST_UNKNOWN, an unknown blob BLOB_UNKNOWN, and neither is cached', async () => {
    const m = await fetch(`${server.url}/v2/hub/lib/app/manifests/nope`, { headers: { Accept: ACCEPT } });
    expect(m.status).toBe(404);
    expect(((await m.json()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code)).toEqual(['MANIFEST_UNKNOWN']);
    const missing = `sha256:${'ab'.repeat(32)}`;
    const b = await fetch(`${server.url}/v2/hub/lib/app/blobs/${missing}`);
    expect(b.status).toBe(404);
    expect(((await b.json()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code)).toEqual(['BLOB_UNKNOWN']);
    await server.pullThrough!.committer.idle();
    const redirect = JSON.parse(await fs.readFile(layout(root).app('hub/lib/app'), 'utf8')) as { derrick: { tags: Record<string, string> } };
    expect(Object.keys(redirect.derrick.tags)).toEqual(['v1']);
  });

  it('a repo the upstream does not have answers a registry error, not a 5xx', async () => {
    const m = await fetch(`${server.url}/v2/hub/lib/none/manifests/v1`, { headers: { Accept: ACCEPT } });
    expect(m.status).toBeGreaterThanOrEqual(400);
    expect(m.status).toBeLessThan(500);
    const codes = ((await m.json()) as { errors: Array<{ code: string }> }).errors.map((e) => e.code);
    expect(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN']).toContain(codes[0]);
  });
});
