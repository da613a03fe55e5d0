// Signatures, SBOMs and attestations travel with their images (issue 13), black box: a real
// docker-registry upstream (2.8: no referrers API, so the tag schema is the way) holding signed,
// unsigned and tamper-signed images, an SBOM with a subject and a signature of that SBOM;
// mirrored by `derrick publish` and by the pull-through cache; pulled by skopeo and podman
// through `derrick serve` with embedded blobs and with nginx.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout } from '../shared/layout.js';
import { MediaType, digestHex, sha256Digest, type Descriptor } from '../shared/oci.js';
import { generateImage } from '../scripts/gen-image.js';
import { pushSbom, pushSignature, sigstoreRefusal, SBOM_TYPE, type Fetcher } from './helpers/cosign-sign.js';
import { derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { rawRequest } from './helpers/http.js';
import { pollUntil } from './helpers/pull-through.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { requireTool, run } from './helpers/proc.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { fetchManifest, seedRegistry, skopeoCopy } from './helpers/skopeo.js';
import { writeSigstoreKeyPair, type SigstoreKeyFiles } from './helpers/sigstore-key.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = requireTool('docker-registry', 'the referrer e2e tests are skipped') && requireTool('skopeo', 'the referrer e2e tests are skipped');
const hasPodman = requireTool('podman', 'the podman pull of a signed image is skipped');
const hasNginx = requireTool('nginx', 'the nginx blob-server variant is skipped');

const sigTag = (d: string) => `sha256-${digestHex(d)}.sig`;
const indexTag = (d: string) => `sha256-${digestHex(d)}`;
const ACCEPT = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList].join(', ');

/** Manifests and blobs as a client gets them from a registry (redirects followed). */
function fetcher(base: string, repo: string): Fetcher {
  return {
    async manifest(ref) {
      const r = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { headers: { Accept: ACCEPT } });
      if (r.status === 404) return (await r.text(), undefined);
      if (r.status !== 200) throw new Error(`GET ${repo}:${ref}: HTTP ${r.status}`);
      return Buffer.from(await r.arrayBuffer());
    },
    async blob(digest) {
      const r = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
      if (r.status !== 200) throw new Error(`GET ${repo}@${digest}: HTTP ${r.status}`);
      return Buffer.from(await r.arrayBuffer());
    },
  };
}

async function getJson(base: string, p: string): Promise<{ status: number; headers: Headers; body: any }> {
  const r = await fetch(`${base}${p}`, { headers: { Accept: ACCEPT } });
  return { status: r.status, headers: r.headers, body: await r.json() };
}

/**
 * skopeo 1.9 on Debian is built with sigstore disabled; a newer one signs and verifies itself.
 * Asked the real way: verify the signed image at the source, where it has a signature.
 */
async function skopeoHasSigstore(dir: string, keys: SigstoreKeyFiles, registryHost: string): Promise<boolean> {
  const policy = path.join(dir, 'probe-policy.json');
  await fs.writeFile(policy, JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: keys.publicKey, signedIdentity: { type: 'matchRepository' } }] }));
  const regd = path.join(dir, 'probe-registries.d');
  await fs.mkdir(regd, { recursive: true });
  await fs.writeFile(path.join(regd, 'source.yaml'), `docker:\n  ${registryHost}:\n    use-sigstore-attachments: true\n`);
  const args = ['--policy', policy, '--registries.d', regd, 'copy', '--src-tls-verify=false', `docker://${registryHost}/src/app:v1`, `oci:${path.join(dir, 'probe-out')}:v1`];
  const r = await run('skopeo', args, { timeoutMs: 60_000 });
  return !/sigstore disabled/.test(r.stderr);
}

describe.skipIf(!hasTools)('signatures and SBOMs travel with their images', () => {
  let tmp: TmpDir;
  let reg: Registry;
  let keys: SigstoreKeyFiles;
  let cfgFile: string;
  let serve: ServeProcess;
  const img: Record<string, Descriptor> = {};
  let arm64: Descriptor;
  let sbom: Descriptor;
  let sbomSig: Descriptor;
  let armSbom: Descriptor;
  const identity = (repo: string) => `${reg.host}/${repo}`;

  const config = (blobs: string) =>
    JSON.stringify({
      root: path.join(tmp.dir, 'var'),
      repos: [
        // The globs leave the referrer tags out on purpose: they come with their subjects anyway.
        { name: 'signed/app', from: `docker://${reg.host}/src/app`, tags: ['v*'], exclude: ['sha256-*', '*.sig'], 'tls-verify': false },
        { name: 'signed/multi', from: `docker://${reg.host}/src/multi`, 'tls-verify': false },
        { name: 'plain/app', from: `docker://${reg.host}/src/app`, tags: ['v1'], 'tls-verify': false, referrers: false },
        { name: 'layout/app', from: `oci:${path.join(tmp.dir, 'layout-sbom')}` },
      ],
      upstreams: [{ prefix: 'up', url: reg.url, 'tag-ttl': '1h' }, { prefix: 'noref', url: reg.url, referrers: false }],
      serve: { blobs },
    });

  beforeAll(async () => {
    tmp = await tmpDir('derrick-referrers');
    reg = await startRegistry();
    keys = await writeSigstoreKeyPair(tmp.dir);
    const layout = path.join(tmp.dir, 'layout');
    await generateImage({ layoutDir: layout, tag: 'v1', layers: [30_000] });
    await generateImage({ layoutDir: layout, tag: 'v2', layers: [20_000] });
    await generateImage({ layoutDir: layout, tag: 'v3', layers: [10_000] });
    await generateImage({ layoutDir: layout, tag: 'next', layers: [15_000] });
    await generateImage({ layoutDir: layout, tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'], layers: [8_000] });
    for (const t of ['v1', 'v2', 'v3', 'next']) {
      await seedRegistry(reg.host, 'src/app', layout, t, { all: true });
      const m = await fetchManifest(reg.host, 'src/app', t);
      img[t] = { mediaType: m.mediaType, digest: m.digest, size: m.body.length };
    }
    await seedRegistry(reg.host, 'src/multi', layout, 'multi', { all: true });
    const mm = await fetchManifest(reg.host, 'src/multi', 'multi');
    img.multi = { mediaType: mm.mediaType, digest: mm.digest, size: mm.body.length };
    arm64 = (JSON.parse(mm.body.toString()) as { manifests: Descriptor[] }).manifests.find((c) => c.platform?.architecture === 'arm64')!;

    // v1: signed, with an SBOM (tag schema index) that is signed too. v2: unsigned.
    // v3: its signature was tampered with at the source. multi: the index signed, arm64 has an SBOM.
    await pushSignature(reg.url, 'src/app', identity('src/app'), img.v1!.digest, keys.key);
    sbom = await pushSbom(reg.url, 'src/app', img.v1!, { spdxVersion: 'SPDX-2.3', name: 'app v1' });
    sbomSig = await pushSignature(reg.url, 'src/app', identity('src/app'), sbom.digest, keys.key);
    await pushSignature(reg.url, 'src/app', identity('src/app'), img.v3!.digest, keys.key, { tamper: true });
    // A signature of `next`, which no glob selects: it must not be published.
    await pushSignature(reg.url, 'src/app', identity('src/app'), img.next!.digest, keys.key);
    await pushSignature(reg.url, 'src/multi', identity('src/multi'), img.multi.digest, keys.key);
    armSbom = await pushSbom(reg.url, 'src/multi', arm64, { spdxVersion: 'SPDX-2.3', name: 'multi arm64' });

    // An OCI layout whose index.json lists an SBOM (untagged) beside the image it refers to.
    const lay = path.join(tmp.dir, 'layout-sbom');
    const gen = await generateImage({ layoutDir: lay, tag: 'v1', layers: [5_000] });
    const put = async (b: Buffer) => {
      const d = sha256Digest(b);
      await fs.writeFile(path.join(lay, 'blobs', 'sha256', digestHex(d)), b);
      return { digest: d, size: b.length };
    };
    const empty = await put(Buffer.from('{}'));
    const body = await put(Buffer.from('{"spdxVersion":"SPDX-2.3"}'));
    const art = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: MediaType.ociManifest, artifactType: SBOM_TYPE,
      config: { mediaType: MediaType.ociEmpty, ...empty }, layers: [{ mediaType: SBOM_TYPE, ...body }],
      subject: { mediaType: gen.mediaType, digest: gen.digest, size: gen.size },
    }));
    const artD = await put(art);
    const idx = JSON.parse(await fs.readFile(path.join(lay, 'index.json'), 'utf8'));
    idx.manifests.push({ mediaType: MediaType.ociManifest, artifactType: SBOM_TYPE, ...artD });
    await fs.writeFile(path.join(lay, 'index.json'), JSON.stringify(idx));
    img.layout = { mediaType: gen.mediaType, digest: gen.digest, size: gen.size };
    img.layoutSbom = { mediaType: MediaType.ociManifest, ...artD };

    cfgFile = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(cfgFile, config('embedded'));
    const pub = await derrick(['publish', '-c', cfgFile]);
    expect(pub.code, pub.stderr + pub.stdout).toBe(0);
    serve = await startServe(cfgFile);
  });

  afterAll(async () => {
    await serve?.stop();
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('publish brings signatures, the SBOM and its signature, though the tag globs exclude their tags', async () => {
    const { body } = await getJson(serve.url, '/v2/signed/app/tags/list');
    expect(body.tags).toEqual(
      ['v1', 'v2', 'v3', indexTag(img.v1!.digest), sigTag(img.v1!.digest), sigTag(img.v3!.digest), sigTag(sbom.digest)].sort(),
    );
    // Exactly as the source has them: same digests.
    for (const t of body.tags as string[]) {
      const ours = await fetcher(serve.url, 'signed/app').manifest(t);
      expect(ours, t).toEqual((await fetchManifest(reg.host, 'src/app', t)).body);
    }
    // The signature of `next` (not published) stays behind; the switch turns it all off.
    expect(body.tags).not.toContain(sigTag(img.next!.digest));
    expect((await getJson(serve.url, '/v2/plain/app/tags/list')).body.tags).toEqual(['v1']);
    expect((await getJson(serve.url, `/v2/plain/app/referrers/${img.v1!.digest}`)).body.manifests).toEqual([]);
    // The published tree with its referrers is complete and hashes right.
    const verify = await derrick(['verify', '--deep', '-c', cfgFile]);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });

  it('the referrers API lists the SBOM and the signature, and filters by artifactType', async () => {
    const all = await getJson(serve.url, `/v2/signed/app/referrers/${img.v1!.digest}`);
    expect(all.status).toBe(200);
    expect(all.headers.get('content-type')).toBe(MediaType.ociIndex);
    const list = all.body.manifests as Descriptor[];
    const sig = (await fetchManifest(reg.host, 'src/app', sigTag(img.v1!.digest))).digest;
    expect(list.map((d) => d.digest).sort()).toEqual([sbom.digest, sig].sort());
    expect(list.find((d) => d.digest === sbom.digest)).toMatchObject({ artifactType: SBOM_TYPE, annotations: sbom.annotations, size: sbom.size });
    const only = await getJson(serve.url, `/v2/signed/app/referrers/${img.v1!.digest}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
    expect(only.headers.get('oci-filters-applied')).toBe('artifactType');
    expect((only.body.manifests as Descriptor[]).map((d) => d.digest)).toEqual([sbom.digest]);
    // Transitively: the SBOM's own signature.
    const ofSbom = await getJson(serve.url, `/v2/signed/app/referrers/${sbom.digest}`);
    expect((ofSbom.body.manifests as Descriptor[]).map((d) => d.digest)).toEqual([sbomSig.digest]);
    // Each platform manifest of an index is asked about: arm64's SBOM came.
    const arm = await getJson(serve.url, `/v2/signed/multi/referrers/${arm64.digest}`);
    expect((arm.body.manifests as Descriptor[]).map((d) => d.digest)).toEqual([armSbom.digest]);
    // An OCI layout source: the SBOM its index.json lists beside the image.
    const lay = await getJson(serve.url, `/v2/layout/app/referrers/${img.layout!.digest}`);
    expect(lay.body.manifests).toEqual([expect.objectContaining({ digest: img.layoutSbom!.digest, artifactType: SBOM_TYPE })]);
  });

  it('derrick status counts the signed images per repo', async () => {
    const r = await derrick(['status', '-c', cfgFile, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const rows = (JSON.parse(r.stdout) as { repos: Array<{ repo: string; tags: number; signed: number }> }).repos;
    // v1 and v3 carry a signature (v3's does not verify: status does not hold the key).
    expect(rows.find((x) => x.repo === 'signed/app')).toMatchObject({ tags: 3, signed: 2 });
    expect(rows.find((x) => x.repo === 'signed/multi')).toMatchObject({ tags: 1, signed: 1 });
    expect(rows.find((x) => x.repo === 'plain/app')).toMatchObject({ tags: 1, signed: 0 });
    const table = await derrick(['status', '-c', cfgFile]);
    expect(table.stdout.split('\n').find((l) => l.startsWith('signed/app '))!.split(/\s{2,}/).slice(1, 3)).toEqual(['3', '2']);
  });

  const clientChecks = (name: string, base: () => string, host: () => string) => {
    it(`${name}: a signature check accepts the signed image and refuses the unsigned and the tampered one`, async () => {
      const f = fetcher(base(), 'signed/app');
      expect(await sigstoreRefusal(f, identity('src/app'), img.v1!.digest, keys.pub)).toBeUndefined();
      expect(await sigstoreRefusal(f, identity('src/app'), img.v2!.digest, keys.pub)).toMatch(/no signature exists/);
      expect(await sigstoreRefusal(f, identity('src/app'), img.v3!.digest, keys.pub)).toMatch(/verification failed/);
      expect(await sigstoreRefusal(f, identity('src/app'), sbom.digest, keys.pub)).toBeUndefined();
    });

    it(`${name}: skopeo copies the signed image and its signature`, async () => {
      for (const ref of ['v1', sigTag(img.v1!.digest)]) {
        const out = path.join(tmp.dir, `out-${name}-${ref}`);
        const r = await skopeoCopy(`docker://${host()}/signed/app:${ref}`, `oci:${out}:x`);
        expect(r.code, r.stderr).toBe(0);
        const idx = JSON.parse(await fs.readFile(path.join(out, 'index.json'), 'utf8'));
        expect(idx.manifests[0].digest).toBe((await fetchManifest(reg.host, 'src/app', ref)).digest);
      }
    });
  };

  describe('embedded blobs', () => {
    clientChecks('embedded', () => serve.url, () => serve.host);

    it.skipIf(!hasPodman)('podman pulls the signed image through derrick', async () => {
      const runroot = await fs.mkdtemp('/tmp/prun-');
      const store = path.join(tmp.dir, 'podman');
      const podman = (...args: string[]) =>
        run('podman', ['--root', `${store}/root`, '--runroot', runroot, '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args], { timeoutMs: 120_000 });
      try {
        const r = await podman('pull', '--tls-verify=false', `${serve.host}/signed/app:v1`);
        expect(r.code, r.stderr).toBe(0);
        const inspect = await podman('image', 'inspect', '--format', '{{.Digest}}', `${serve.host}/signed/app:v1`);
        expect(inspect.stdout.trim()).toBe(img.v1!.digest);
      } finally {
        await fs.rm(runroot, { recursive: true, force: true });
      }
    });

    it('skopeo with a sigstoreSigned policy accepts v1 and refuses v2 and v3 (when its build has sigstore)', async (ctx) => {
      if (!(await skopeoHasSigstore(tmp.dir, keys, reg.host))) {
        console.log('skipped: this skopeo is built with sigstore disabled (Debian 1.9.3); the signature check above stands in for it');
        return ctx.skip();
      }
      const policy = path.join(tmp.dir, 'policy.json');
      await fs.writeFile(policy, JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { docker: { [serve.host]: [{ type: 'sigstoreSigned', keyPath: keys.publicKey, signedIdentity: { type: 'remapIdentity', prefix: serve.host, signedPrefix: reg.host } }] } },
      }));
      const regd = path.join(tmp.dir, 'registries.d');
      await fs.mkdir(regd, { recursive: true });
      await fs.writeFile(path.join(regd, 'derrick.yaml'), `docker:\n  ${serve.host}:\n    use-sigstore-attachments: true\n`);
      const pull = (tag: string) =>
        run('skopeo', ['--policy', policy, '--registries.d', regd, 'copy', '--src-tls-verify=false', `docker://${serve.host}/signed/app:${tag}`, `oci:${path.join(tmp.dir, `pol-${tag}`)}:x`], { timeoutMs: 60_000 });
      expect((await pull('v1')).code).toBe(0);
      expect((await pull('v2')).code).not.toBe(0);
      expect((await pull('v3')).code).not.toBe(0);
    });
  });

  describe.skipIf(!hasNginx)('nginx blobs', () => {
    let nginx: Nginx;
    let viaNginx: ServeProcess;
    beforeAll(async () => {
      const conf = await derrick(['nginx-conf', '-c', cfgFile, '--listen', '127.0.0.1:1']);
      expect(conf.code, conf.stderr).toBe(0);
      nginx = await startNginx(conf.stdout.replace('listen 127.0.0.1:1;', 'listen 127.0.0.1:__PORT__;'));
      const file = path.join(tmp.dir, 'nginx.yaml');
      await fs.writeFile(file, config(`${nginx.url}/published`));
      viaNginx = await startServe(file);
    });
    afterAll(async () => {
      await viaNginx?.stop();
      await nginx?.stop();
    });
    clientChecks('nginx', () => viaNginx.url, () => viaNginx.host);

    it('nginx: the signature layer is a redirect to nginx', async () => {
      const sig = JSON.parse((await fetcher(viaNginx.url, 'signed/app').manifest(sigTag(img.v1!.digest)))!.toString());
      const r = await rawRequest(viaNginx.url, `/v2/signed/app/blobs/${sig.layers[0].digest}`);
      expect(r.status).toBe(307);
      expect(String(r.headers.location)).toMatch(new RegExp(`^${nginx.url}/published/`));
    });
  });

  describe('pull-through cache', () => {
    it('a signature tag of a cached image is asked upstream once, listed, and a referrer of its subject', async () => {
      const f = fetcher(serve.url, 'up/src/app');
      expect(await f.manifest('v1')).toBeDefined();
      const tag = sigTag(img.v1!.digest);
      const sig = await fetchManifest(reg.host, 'src/app', tag);
      const asked = (method: string) => reg.countRequests(method, `/v2/src/app/manifests/${sig.digest}`) + reg.countRequests(method, `/v2/src/app/manifests/${tag}`);
      const [getsBefore, headsBefore] = [asked('GET'), asked('HEAD')];
      const tagHeadsBefore = reg.countRequests('HEAD', `/v2/src/app/manifests/${tag}`);
      const got = await Promise.all([1, 2, 3, 4].map(() => f.manifest(tag)));
      for (const g of got) expect(g).toEqual(sig.body);
      await reg.waitForRequests('HEAD', `/v2/src/app/manifests/${tag}`, tagHeadsBefore + 1);
      // The tag resolved by one HEAD. The signature's bytes are in the store already (the publisher
      // mirrored src/app as signed/app): one HEAD of its digest proves them for the cache repo at
      // its own upstream (invariant 9), and nothing is downloaded again.
      expect([asked('GET') - getsBefore, asked('HEAD') - headsBefore]).toEqual([0, 2]);
      expect(await sigstoreRefusal(f, identity('src/app'), img.v1!.digest, keys.pub)).toBeUndefined();
      // The referrers API asks the upstream (no referrers API there: the tag schema and cosign's tags).
      const refs = await getJson(serve.url, `/v2/up/src/app/referrers/${img.v1!.digest}`);
      expect((refs.body.manifests as Descriptor[]).map((d) => d.digest).sort()).toEqual([sig.digest, sbom.digest].sort());
      expect((refs.body.manifests as Descriptor[]).find((d) => d.digest === sbom.digest)).toMatchObject({ artifactType: SBOM_TYPE, annotations: sbom.annotations });
      const onlySbom = await getJson(serve.url, `/v2/up/src/app/referrers/${img.v1!.digest}?artifactType=${encodeURIComponent(SBOM_TYPE)}`);
      expect(onlySbom.headers.get('oci-filters-applied')).toBe('artifactType');
      expect((onlySbom.body.manifests as Descriptor[]).map((d) => d.digest)).toEqual([sbom.digest]);
      // The SBOM it names is served through the cache, from the same upstream.
      expect(await f.manifest(sbom.digest)).toEqual((await fetchManifest(reg.host, 'src/app', sbom.digest)).body);
      const tags = (await getJson(serve.url, '/v2/up/src/app/tags/list')).body.tags as string[];
      expect(tags).toContain(tag);
      expect(tags).toContain(indexTag(img.v1!.digest));
      // Unsigned and tampered stay refused through the cache too.
      expect(await sigstoreRefusal(f, identity('src/app'), img.v2!.digest, keys.pub)).toMatch(/no signature exists/);
      expect(await sigstoreRefusal(f, identity('src/app'), img.v3!.digest, keys.pub)).toMatch(/verification failed/);
    });

    it('an upstream with referrers: false neither lists nor serves referrer tags', async () => {
      const tag = sigTag(img.v1!.digest);
      const r = await rawRequest(serve.url, `/v2/noref/src/app/manifests/${tag}`, { headers: { Accept: ACCEPT } });
      expect(r.status).toBe(404);
      expect(JSON.parse(r.body.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
      expect((await getJson(serve.url, '/v2/noref/src/app/tags/list')).body.tags).toEqual(['next', 'v1', 'v2', 'v3']);
    });
  });

  it('a source with the referrers API (derrick itself) is asked for referrers no tag names', async () => {
    // layout/app's SBOM has no tag anywhere: only the referrers API of the serve above tells of it.
    const chainCfg = path.join(tmp.dir, 'chain.yaml');
    await fs.writeFile(chainCfg, JSON.stringify({
      root: path.join(tmp.dir, 'chain-var'),
      repos: [{ name: 'chain/app', from: `docker://${serve.host}/layout/app`, 'tls-verify': false }],
    }));
    const pub = await derrick(['publish', '-c', chainCfg]);
    expect(pub.code, pub.stderr + pub.stdout).toBe(0);
    const app = JSON.parse(await fs.readFile(layout(path.join(tmp.dir, 'chain-var')).app('chain/app'), 'utf8'));
    expect(app.derrick.tags).toEqual({ v1: img.layout!.digest });
    expect(app.derrick.referrers[img.layout!.digest]).toEqual([expect.objectContaining({ digest: img.layoutSbom!.digest, artifactType: SBOM_TYPE })]);
    expect(app.derrick.manifests[img.layoutSbom!.digest]).toBeDefined();
  });

  it('retention: when v1 moves to an unsigned image, its signature, SBOM and their tags go with it', async () => {
    // Move src/app:v1 to v2's (unsigned) manifest.
    const v2 = await fetchManifest(reg.host, 'src/app', 'v2');
    const res = await fetch(`${reg.url}/v2/src/app/manifests/v1`, { method: 'PUT', headers: { 'Content-Type': v2.mediaType }, body: v2.body });
    expect(res.status).toBe(201);
    const pub = await derrick(['publish', '-c', cfgFile, 'signed/app']);
    expect(pub.code, pub.stderr + pub.stdout).toBe(0);
    const app = JSON.parse(await fs.readFile(layout(path.join(tmp.dir, 'var')).app('signed/app'), 'utf8'));
    expect(Object.keys(app.derrick.tags).sort()).toEqual(['v1', 'v2', 'v3', sigTag(img.v3!.digest)].sort());
    expect(app.derrick.manifests[img.v1!.digest]).toBeUndefined();
    expect(app.derrick.manifests[sbom.digest]).toBeUndefined();
    expect(app.derrick.referrers[img.v1!.digest]).toBeUndefined();
    const r = await derrick(['status', '-c', cfgFile, '--json']);
    expect((JSON.parse(r.stdout) as { repos: Array<{ repo: string; signed: number }> }).repos.find((x) => x.repo === 'signed/app')!.signed).toBe(1);
    // A second run with nothing new at the source is the cheap no-op.
    const again = await derrick(['publish', '-c', cfgFile, 'signed/app']);
    expect(again.stdout).toMatch(/signed\/app: unchanged/);
  });

  it('a signature added at the source to a published image comes with the next run', async () => {
    // After the move above, v1 and v2 name the same unsigned image; sign it.
    await pushSignature(reg.url, 'src/app', identity('src/app'), img.v2!.digest, keys.key);
    const pub = await derrick(['publish', '-c', cfgFile, 'signed/app']);
    expect(pub.stdout).toMatch(/signed\/app: published/);
    // The serve notices the new publish by a watch (a hint) or its rescan: wait for it.
    await pollUntil(async () => ((await getJson(serve.url, '/v2/signed/app/tags/list')).body.tags as string[]).includes(sigTag(img.v2!.digest)), 35_000, 'the new publish is served');
    expect(await sigstoreRefusal(fetcher(serve.url, 'signed/app'), identity('src/app'), img.v2!.digest, keys.pub)).toBeUndefined();
    const r = await derrick(['status', '-c', cfgFile, '--json']);
    expect((JSON.parse(r.stdout) as { repos: Array<{ repo: string; signed: number }> }).repos.find((x) => x.repo === 'signed/app')!.signed).toBe(3);
  });
});
