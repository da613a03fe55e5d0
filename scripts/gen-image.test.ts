import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MediaType } from '../shared/oci.js';
import { blobPath, parseTar, readBlob, readIndexJson, readJsonBlob, tagDescriptor, verifyLayout } from '../test/helpers/layout.js';
import { requireTool, run } from '../test/helpers/proc.js';
import { skopeoInspectText } from '../test/helpers/skopeo.js';
import { tmpDir, type TmpDir } from '../test/helpers/tmp.js';
import { generateImage, generateManyTags, main, tarHeader } from './gen-image.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let tmp: TmpDir;
let n = 0;
const newLayout = () => path.join(tmp.dir, `layout-${n++}`);

beforeAll(async () => {
  tmp = await tmpDir('derrick-gen-image');
});
afterAll(async () => {
  await tmp?.cleanup();
});

/** Every file under dir (relative path -> sha256), for byte-identity comparisons. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const e of await fs.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) await walk(r);
      else out[r] = createHash('sha256').update(await fs.readFile(path.join(dir, r))).digest('hex');
    }
  };
  await walk('');
  return out;
}

describe('generateImage', () => {
  it('is deterministic: same options give byte-identical layouts', async () => {
    const opts = [
      { tag: 'single', layers: [0, 1000, 5 * 1024 * 1024 + 7] }, // the last layer takes the streaming path
      { tag: 'multi', platforms: ['linux/amd64', 'linux/arm64', 'linux/arm/v7'], seed: 'x' },
      { tag: 'dock', format: 'docker' as const, platforms: ['linux/amd64', 'linux/s390x'] },
      { tag: 'plain', gzip: false, layers: [300] },
    ];
    const a = newLayout();
    const b = newLayout();
    const ra = [];
    const rb = [];
    for (const o of opts) ra.push(await generateImage({ layoutDir: a, ...o }));
    for (const o of opts) rb.push(await generateImage({ layoutDir: b, ...o }));
    expect(rb).toEqual(ra);
    const sa = await snapshot(a);
    expect(await snapshot(b)).toEqual(sa);
    expect(Object.keys(sa).some((f) => f.includes('.tmp-'))).toBe(false);
    // Regenerating into the same layout changes nothing.
    for (const o of opts) await generateImage({ layoutDir: a, ...o });
    expect(await snapshot(a)).toEqual(sa);
    // A different seed gives different content.
    const other = await generateImage({ layoutDir: newLayout(), tag: 'single', seed: 'other', layers: [0, 1000, 5 * 1024 * 1024 + 7] });
    expect(other.digest).not.toBe(ra[0]!.digest);
  });

  it('writes a valid single-platform OCI image', async () => {
    const dir = newLayout();
    const img = await generateImage({ layoutDir: dir, tag: 'v1', seed: 's', layers: [10, 2000] });
    expect(JSON.parse(await fs.readFile(path.join(dir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const report = await verifyLayout(dir);
    expect(report.tags.get('v1')).toMatchObject({ digest: img.digest, size: img.size, mediaType: MediaType.ociManifest });
    expect(img.mediaType).toBe(MediaType.ociManifest);
    expect(img.manifests).toHaveLength(1);
    expect(img.manifests[0]!.digest).toBe(img.digest);
    expect(img.manifests[0]!.platform).toBeUndefined();

    const manifest = await readJsonBlob(dir, img.digest);
    expect(manifest.config.mediaType).toBe(MediaType.ociConfig);
    expect(manifest.layers.map((l: any) => l.mediaType)).toEqual([MediaType.ociLayerGzip, MediaType.ociLayerGzip]);
    expect(img.blobs).toEqual([manifest.config.digest, ...manifest.layers.map((l: any) => l.digest)]);
    let total = img.size;
    for (const d of img.blobs) total += (await fs.stat(blobPath(dir, d))).size;
    expect(img.totalBytes).toBe(total);

    const config = await readJsonBlob(dir, manifest.config.digest);
    expect(config).toMatchObject({ architecture: 'amd64', os: 'linux', created: '1970-01-01T00:00:00Z', rootfs: { type: 'layers' } });
    expect(config.rootfs.diff_ids).toHaveLength(2);
    for (const h of config.history) expect(h.created).toBe('1970-01-01T00:00:00Z');

    // The layers are real tars holding data/<seed>-<i>.bin of the requested size.
    for (const [i, size] of [10, 2000].entries()) {
      const tar = zlib.gunzipSync(await readBlob(dir, manifest.layers[i].digest));
      expect('sha256:' + createHash('sha256').update(tar).digest('hex')).toBe(config.rootfs.diff_ids[i]);
      const files = parseTar(tar).filter((e) => e.type === '0');
      expect(files).toHaveLength(1);
      expect(files[0]).toMatchObject({ name: `data/s-${i}.bin`, size, mode: 0o644, uid: 0, gid: 0, mtime: 0 });
      expect(files[0]!.data.length).toBe(size);
    }
  });

  it('writes a multi-arch OCI index with one child per platform', async () => {
    const dir = newLayout();
    const platforms = ['linux/amd64', 'linux/arm64', 'linux/arm/v7'];
    const img = await generateImage({ layoutDir: dir, tag: 'multi', platforms, layers: [100] });
    await verifyLayout(dir);
    expect(img.mediaType).toBe(MediaType.ociIndex);
    const index = await readJsonBlob(dir, img.digest);
    expect(index.mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests.map((m: any) => m.platform)).toEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ]);
    expect(img.manifests.map((m) => m.platform)).toEqual(platforms);
    expect(img.manifests.map((m) => m.digest)).toEqual(index.manifests.map((m: any) => m.digest));
    for (const child of index.manifests) {
      expect(child.mediaType).toBe(MediaType.ociManifest);
      const m = await readJsonBlob(dir, child.digest);
      const cfg = await readJsonBlob(dir, m.config.digest);
      expect({ os: cfg.os, architecture: cfg.architecture, ...(cfg.variant ? { variant: cfg.variant } : {}) }).toEqual(child.platform);
    }
    // Content differs per platform, so no layer is shared.
    expect(new Set(img.blobs).size).toBe(2 * platforms.length);
  });

  it('uses Docker schema2 media types with format docker', async () => {
    const dir = newLayout();
    const single = await generateImage({ layoutDir: dir, tag: 'd1', format: 'docker' });
    const list = await generateImage({ layoutDir: dir, tag: 'd2', format: 'docker', platforms: ['linux/amd64', 'linux/arm64'] });
    const report = await verifyLayout(dir);
    expect(report.tags.get('d1')!.mediaType).toBe(MediaType.dockerManifest);
    expect(report.tags.get('d2')!.mediaType).toBe(MediaType.dockerManifestList);
    expect(single.mediaType).toBe(MediaType.dockerManifest);
    const m = await readJsonBlob(dir, single.digest);
    expect(m.mediaType).toBe(MediaType.dockerManifest);
    expect(m.config.mediaType).toBe(MediaType.dockerConfig);
    expect(m.layers.every((l: any) => l.mediaType === MediaType.dockerLayerGzip)).toBe(true);
    const ml = await readJsonBlob(dir, list.digest);
    expect(ml.mediaType).toBe(MediaType.dockerManifestList);
    expect(ml.manifests.every((c: any) => c.mediaType === MediaType.dockerManifest)).toBe(true);
  });

  it('writes uncompressed layers with gzip: false', async () => {
    const dir = newLayout();
    const img = await generateImage({ layoutDir: dir, tag: 't', gzip: false, layers: [700] });
    await verifyLayout(dir);
    const m = await readJsonBlob(dir, img.digest);
    expect(m.layers[0].mediaType).toBe(MediaType.ociLayer);
    const cfg = await readJsonBlob(dir, m.config.digest);
    expect(cfg.rootfs.diff_ids[0]).toBe(m.layers[0].digest);
    expect(parseTar(await readBlob(dir, m.layers[0].digest)).find((e) => e.type === '0')!.size).toBe(700);
  });

  it('appends to a layout and replaces a descriptor with the same tag', async () => {
    const dir = newLayout();
    const a = await generateImage({ layoutDir: dir, tag: 'a' });
    await generateImage({ layoutDir: dir, tag: 'b' });
    const a2 = await generateImage({ layoutDir: dir, tag: 'a', seed: 'changed' });
    expect(a2.digest).not.toBe(a.digest);
    const report = await verifyLayout(dir);
    expect([...report.tags.keys()].sort()).toEqual(['a', 'b']);
    expect(report.tags.get('a')!.digest).toBe(a2.digest);
    expect((await readIndexJson(dir)).manifests).toHaveLength(2);
    // Concurrent generation into one layout keeps every tag.
    await Promise.all(['c', 'd', 'e', 'f'].map((tag) => generateImage({ layoutDir: dir, tag })));
    expect([...(await verifyLayout(dir)).tags.keys()].sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
  });

  it('rejects bad input', async () => {
    const dir = newLayout();
    await expect(generateImage({ layoutDir: dir, tag: 'bad tag' })).rejects.toThrow(/invalid tag/);
    await expect(generateImage({ layoutDir: dir, tag: 't', platforms: ['linux'] })).rejects.toThrow(/invalid platform/);
    await expect(generateImage({ layoutDir: dir, tag: 't', layers: [-1] })).rejects.toThrow(/invalid layer size/);
  });

  it('writes valid tar headers', () => {
    const h = tarHeader('data/x.bin', 1234, 'file');
    expect(h.length).toBe(512);
    const [e] = parseTar(Buffer.concat([h, Buffer.alloc(1536)]));
    expect(e).toMatchObject({ name: 'data/x.bin', size: 1234, mode: 0o644, mtime: 0, type: '0' });
  });
});

describe('generateManyTags', () => {
  it('writes 1,000 distinct single-layer tags in a few seconds', async () => {
    const dir = newLayout();
    const t0 = Date.now();
    const tags = await generateManyTags({ layoutDir: dir, count: 1000, prefix: 'tag-' });
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(10_000);
    expect(tags).toHaveLength(1000);
    expect(tags[0]!.tag).toBe('tag-0');
    expect(tags[999]!.tag).toBe('tag-999');
    expect(new Set(tags.map((t) => t.digest)).size).toBe(1000);
    const index = await readIndexJson(dir);
    expect(index.manifests).toHaveLength(1000);
    expect((await tagDescriptor(dir, 'tag-500'))!.digest).toBe(tags[500]!.digest);
    const m = await readJsonBlob(dir, tags[7]!.digest);
    expect(m.layers).toHaveLength(1);
    expect(m.mediaType).toBe(MediaType.ociManifest);
  });

  it('is deterministic and verifies', async () => {
    const a = newLayout();
    const b = newLayout();
    await generateManyTags({ layoutDir: a, count: 20, prefix: 'p', seed: 'z' });
    await generateManyTags({ layoutDir: b, count: 20, prefix: 'p', seed: 'z' });
    expect(await snapshot(b)).toEqual(await snapshot(a));
    expect((await verifyLayout(a)).tags.size).toBe(20);
  });
});

describe('CLI', () => {
  it('main() generates an image and prints its digest', async () => {
    const dir = newLayout();
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    let calls: unknown[][];
    try {
      const code = await main(['--out', dir, '--tag', 'cli', '--layers', '2048,10', '--format', 'docker', '--platforms', 'linux/amd64,linux/arm64', '--seed', 'S']);
      calls = [...write.mock.calls];
      expect(code).toBe(0);
    } finally {
      write.mockRestore();
    }
    const printed = String(calls[0]?.[0]).trim();
    const d = await tagDescriptor(dir, 'cli');
    expect(printed).toBe(d!.digest);
    expect(d!.mediaType).toBe(MediaType.dockerManifestList);
    const same = await generateImage({ layoutDir: newLayout(), tag: 'cli', layers: [2048, 10], format: 'docker', platforms: ['linux/amd64', 'linux/arm64'], seed: 'S' });
    expect(same.digest).toBe(printed);
  });

  const distCli = path.join(repoRoot, 'dist', 'scripts', 'gen-image.js');
  const hasDist = existsSync(distCli);
  if (!hasDist && process.env.CI === 'true') throw new Error(`${distCli} not built (CI=true: npm test builds first, so this may not be skipped)`);
  if (!hasDist) console.warn(`[skip] ${distCli} not built: run \`npm run build\` to test the compiled CLI`);
  it.skipIf(!hasDist)('runs as a script from dist/', async () => {
    const dir = newLayout();
    const res = await run(process.execPath, [distCli, '--out', dir, '--tag', 'direct', '--layers', '100']);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout.trim()).toBe((await tagDescriptor(dir, 'direct'))!.digest);
  });
});

const hasSkopeo = requireTool('skopeo', 'skopeo cross-checks of generated layouts are skipped');
describe.skipIf(!hasSkopeo)('skopeo reads the generated layout', () => {
  it('inspect --raw returns the stored manifest and index', async () => {
    const dir = newLayout();
    const single = await generateImage({ layoutDir: dir, tag: 'one' });
    const multi = await generateImage({ layoutDir: dir, tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'] });
    expect(await skopeoInspectText(`oci:${dir}:one`)).toBe((await readBlob(dir, single.digest)).toString('utf8'));
    expect(await skopeoInspectText(`oci:${dir}:multi`)).toBe((await readBlob(dir, multi.digest)).toString('utf8'));
    const cfg = JSON.parse(await skopeoInspectText(`oci:${dir}:one`, { raw: false, config: true }));
    expect(cfg.rootfs.diff_ids).toHaveLength(2);
  });
});
