// Real clients through `derrick serve`: a real docker-registry upstream, mirrored by the real
// publisher CLI, pulled by skopeo (and podman) through the redirector with embedded blobs,
// in both manifest modes. The copied digests must equal the upstream's.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MediaType, sha256Digest } from '../shared/oci.js';
import { generateImage } from '../scripts/gen-image.js';
import { derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { requireTool, run } from './helpers/proc.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { fetchManifest, seedRegistry, skopeoCopy } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = requireTool('docker-registry') && requireTool('skopeo');
const hasPodman = requireTool('podman', 'the podman pull test is skipped');
const hasNginx = requireTool('nginx', 'the nginx blob-server variants are skipped');

const VARIANTS = [
  { mode: 'inline', blobs: 'embedded' },
  { mode: 'redirect', blobs: 'embedded' },
  { mode: 'inline', blobs: 'nginx' },
  { mode: 'redirect', blobs: 'nginx' },
] as const;

/** The digest of what skopeo wrote to a dir: destination (manifest.json, kept byte for byte). */
async function dirDigest(dir: string): Promise<string> {
  return sha256Digest(await fs.readFile(path.join(dir, 'manifest.json')));
}

describe.skipIf(!hasTools)('skopeo and podman through derrick serve', () => {
  let tmp: TmpDir;
  let registry: Registry;
  const configText = (blobs: string, mode: string) =>
    [
      'root: ./var',
      'repos:',
      '  - name: mirror/images',
      `    from: docker://${registry.host}/src/images`,
      '    tls-verify: false',
      'serve:',
      `  blobs: ${blobs}`,
      `  manifests: ${mode}`,
      '',
    ].join('\n');
  const upstream: Record<string, { digest: string; mediaType: string; children: Array<{ digest: string; arch: string }> }> = {};
  const tags = ['single', 'docker', 'multi', 'dmulti'];

  beforeAll(async () => {
    tmp = await tmpDir('derrick-serve-e2e');
    registry = await startRegistry();
    const layout = path.join(tmp.dir, 'layout');
    await generateImage({ layoutDir: layout, tag: 'single', layers: [200_000, 3000] });
    await generateImage({ layoutDir: layout, tag: 'docker', format: 'docker', layers: [150_000] });
    await generateImage({ layoutDir: layout, tag: 'multi', platforms: ['linux/amd64', 'linux/arm64', 'linux/arm/v7'], layers: [50_000] });
    await generateImage({ layoutDir: layout, tag: 'dmulti', format: 'docker', platforms: ['linux/arm64', 'linux/amd64'], layers: [40_000] });
    for (const t of tags) {
      await seedRegistry(registry.host, 'src/images', layout, t, { all: true });
      const m = await fetchManifest(registry.host, 'src/images', t);
      const doc = JSON.parse(m.body.toString('utf8'));
      upstream[t] = {
        digest: m.digest,
        mediaType: m.mediaType,
        children: (doc.manifests ?? []).map((c: any) => ({ digest: c.digest, arch: c.platform.architecture + (c.platform.variant ? `/${c.platform.variant}` : '') })),
      };
    }
    await fs.writeFile(path.join(tmp.dir, 'publish.yaml'), configText('embedded', 'inline'));
    const pub = await derrick(['publish', '-c', path.join(tmp.dir, 'publish.yaml')]);
    expect(pub.code, pub.stderr).toBe(0);
    expect(pub.stdout).toMatch(/mirror\/images: published/);
  });

  afterAll(async () => {
    await registry?.stop();
    await tmp?.cleanup();
  });

  for (const { mode, blobs } of VARIANTS) {
    describe.skipIf(blobs === 'nginx' && !hasNginx)(`manifests: ${mode}, blobs: ${blobs}`, () => {
      let serve: ServeProcess;
      let nginx: Nginx | undefined;
      beforeAll(async () => {
        let base = 'embedded';
        if (blobs === 'nginx') {
          // The real CLI writes the server block; only the port is filled in here.
          const conf = await derrick(['nginx-conf', '-c', path.join(tmp.dir, 'publish.yaml'), '--listen', '127.0.0.1:1']);
          expect(conf.code, conf.stderr).toBe(0);
          nginx = await startNginx(conf.stdout.replace('listen 127.0.0.1:1;', 'listen 127.0.0.1:__PORT__;'));
          base = `${nginx.url}/published`;
        }
        const file = path.join(tmp.dir, `${mode}-${blobs}.yaml`);
        await fs.writeFile(file, configText(base, mode));
        serve = await startServe(file);
      });
      afterAll(async () => {
        await serve?.stop();
        await nginx?.stop();
      });

      it('copies a single-arch OCI image with oci: and keeps its digest', async () => {
        const out = path.join(tmp.dir, `out-${mode}-${blobs}-oci`);
        const r = await skopeoCopy(`docker://${serve.host}/mirror/images:single`, `oci:${out}:single`);
        expect(r.code, r.stderr).toBe(0);
        const index = JSON.parse(await fs.readFile(path.join(out, 'index.json'), 'utf8'));
        expect(index.manifests[0].digest).toBe(upstream.single!.digest);
      });

      it('copies a Docker schema2 image byte for byte', async () => {
        const out = path.join(tmp.dir, `out-${mode}-${blobs}-docker`);
        const r = await skopeoCopy(`docker://${serve.host}/mirror/images:docker`, `dir:${out}`);
        expect(r.code, r.stderr).toBe(0);
        expect(upstream.docker!.mediaType).toBe(MediaType.dockerManifest);
        expect(await dirDigest(out)).toBe(upstream.docker!.digest);
      });

      for (const t of ['multi', 'dmulti']) {
        it(`copies the ${t} index with --all: index and every child`, async () => {
          const out = path.join(tmp.dir, `out-${mode}-${blobs}-${t}-all`);
          const r = await skopeoCopy(`docker://${serve.host}/mirror/images:${t}`, `dir:${out}`, [], { all: true });
          expect(r.code, r.stderr).toBe(0);
          expect(await dirDigest(out)).toBe(upstream[t]!.digest);
          for (const c of upstream[t]!.children) {
            const child = await fs.readFile(path.join(out, `${c.digest.slice(7)}.manifest.json`));
            expect(sha256Digest(child)).toBe(c.digest);
          }
        });

        it(`copies one platform (arm64) of the ${t} index`, async () => {
          const out = path.join(tmp.dir, `out-${mode}-${blobs}-${t}-arm64`);
          const r = await skopeoCopy(`docker://${serve.host}/mirror/images:${t}`, `dir:${out}`, ['--override-arch', 'arm64']);
          expect(r.code, r.stderr).toBe(0);
          expect(await dirDigest(out)).toBe(upstream[t]!.children.find((c) => c.arch === 'arm64')!.digest);
        });
      }

      it.skipIf(!hasPodman)('podman pulls the Docker image and the index', async () => {
        const store = path.join(tmp.dir, `podman-${mode}-${blobs}`);
        // podman refuses a runroot longer than 50 characters.
        const runroot = await fs.mkdtemp('/tmp/prun-');
        const podman = (...args: string[]) =>
          run('podman', ['--root', `${store}/root`, '--runroot', runroot, '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args], { timeoutMs: 120_000 });
        for (const t of ['docker', 'multi']) {
          const r = await podman('pull', '--tls-verify=false', `${serve.host}/mirror/images:${t}`);
          expect(r.code, r.stderr).toBe(0);
          const inspect = await podman('image', 'inspect', '--format', '{{.Digest}}', `${serve.host}/mirror/images:${t}`);
          expect(inspect.code, inspect.stderr).toBe(0);
          expect(inspect.stdout.trim()).toBe(upstream[t]!.digest);
        }
        await fs.rm(runroot, { recursive: true, force: true });
      });
    });
  }
});
