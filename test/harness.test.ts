// Smoke test of the e2e harness: a real docker-registry seeded by skopeo from gen-image layouts,
// and a real nginx. Each group is skipped (loudly, or failing in CI) when its tool is missing.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage } from '../scripts/gen-image.js';
import { ACCEPT_ALL_MANIFESTS, MediaType } from '../shared/oci.js';
import { readBlob, verifyLayout } from './helpers/layout.js';
import { startNginx } from './helpers/nginx.js';
import { freePort } from './helpers/ports.js';
import { requireTool, run, startProcess, waitForHttp } from './helpers/proc.js';
import { startRegistry, writeHtpasswd, type Registry } from './helpers/registry.js';
import { fetchManifest, seedRegistry, skopeoCopy, skopeoInspect } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasRegistry = requireTool('docker-registry', 'registry e2e tests are skipped');
const hasSkopeo = requireTool('skopeo', 'registry e2e tests are skipped');
const hasNginx = requireTool('nginx', 'nginx e2e tests are skipped');

describe('process helpers', () => {
  it('freePort, startProcess, waitForHttp and stop by pid', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const script = `require('node:http').createServer((q,s)=>s.end('ok')).listen(${port},'127.0.0.1',()=>console.log('up'));process.on('SIGTERM',()=>{console.log('term');process.exit(0)})`;
    const p = startProcess(process.execPath, ['-e', script], { env: { FOO: 'bar' } });
    expect(await waitForHttp(`http://127.0.0.1:${port}/`, 10_000, { proc: p })).toBe(200);
    await p.waitForOutput('up');
    expect(p.alive()).toBe(true);
    await p.stop();
    expect(p.alive()).toBe(false);
    expect(p.output()).toContain('term');
    expect(() => process.kill(p.pid, 0)).toThrow();
  });

  it('stop() escalates to SIGKILL when SIGTERM is ignored', async () => {
    const p = startProcess(process.execPath, ['-e', "process.on('SIGTERM',()=>{});console.log('ready');setInterval(()=>{},1000)"]);
    await p.waitForOutput('ready');
    const t0 = Date.now();
    await p.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2900);
    expect(await p.exited).toEqual({ code: null, signal: 'SIGKILL' });
  });

  it('startProcess throws for a missing binary instead of handing out a bogus pid', () => {
    expect(() => startProcess('/nonexistent/derrick-no-such-binary', [])).toThrow(/cannot start/);
  });

  it('run() captures output and exit codes without a shell', async () => {
    const r = await run(process.execPath, ['-e', 'process.stdout.write("a $HOME");process.stderr.write("b");process.exit(3)']);
    expect(r).toMatchObject({ code: 3, stdout: 'a $HOME', stderr: 'b' });
  });

  it('requireTool reports a missing tool', () => {
    if (process.env.CI === 'true') expect(() => requireTool('derrick-no-such-tool')).toThrow(/derrick-no-such-tool/);
    else expect(requireTool('derrick-no-such-tool', 'expected by this test')).toBe(false);
    expect(requireTool('node')).toBe(true);
  });
});

describe.skipIf(!hasRegistry || !hasSkopeo)('docker-registry seeded by skopeo', () => {
  let reg: Registry;
  let tmp: TmpDir;
  let layout: string;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-harness');
    layout = path.join(tmp.dir, 'layout');
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
    await tmp?.cleanup();
  });

  it('answers /v2/ on 127.0.0.1 and logs requests', async () => {
    expect(reg.url).toBe(`http://${reg.host}`);
    expect(reg.host).toMatch(/^127\.0\.0\.1:\d+$/);
    const res = await fetch(`${reg.url}/v2/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
    expect(await reg.waitForRequests('GET', '/v2/', 2)).toBeGreaterThanOrEqual(2);
    expect(reg.accessLog()[0]).toMatch(/^127\.0\.0\.1 - - \[.+\] "GET \/v2\/ HTTP\/1\.1" 200 /);
  });

  it('single-arch OCI image: served digest equals the layout digest; blob GETs are counted', async () => {
    const img = await generateImage({ layoutDir: layout, tag: 'oci1', layers: [2048, 300_000] });
    const digest = await seedRegistry(reg.host, 'smoke/oci', layout, 'oci1');
    expect(digest).toBe(img.digest);
    const served = await fetchManifest(reg.host, 'smoke/oci', 'oci1');
    expect(served.mediaType).toBe(MediaType.ociManifest);
    expect(served.body.equals(await readBlob(layout, img.digest))).toBe(true);

    // skopeo pushes with HEAD/POST/PATCH/PUT: no blob GETs yet.
    for (const b of img.blobs) expect(reg.blobGets(b)).toBe(0);
    // Pull it back: one GET per layer and config.
    const out = path.join(tmp.dir, 'pulled');
    await skopeoCopy(`docker://${reg.host}/smoke/oci:oci1`, `oci:${out}:back`);
    for (const b of img.blobs) expect(await reg.waitForRequests('GET', `/v2/smoke/oci/blobs/${b}`, 1)).toBe(1);
    const pulled = await verifyLayout(out);
    expect(pulled.tags.get('back')!.digest).toBe(img.digest);

    // Direct GETs are counted too (the access line is written after the response).
    const layer = img.manifests[0]!.layers[1]!;
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${reg.url}/v2/smoke/oci/blobs/${layer}`);
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(await readBlob(layout, layer))).toBe(true);
    }
    expect(await reg.waitForRequests('GET', `/v2/smoke/oci/blobs/${layer}`, 3)).toBe(3);
    expect(reg.blobGets(layer)).toBe(3);
    expect(reg.blobGets(layer, 'smoke/oci')).toBe(3);
  });

  it('Docker schema2 image keeps its media type and digest', async () => {
    const img = await generateImage({ layoutDir: layout, tag: 'dock1', format: 'docker' });
    const digest = await seedRegistry(reg.host, 'smoke/docker', layout, 'dock1');
    expect(digest).toBe(img.digest);
    const served = await fetchManifest(reg.host, 'smoke/docker', 'dock1');
    expect(served.mediaType).toBe(MediaType.dockerManifest);
    expect(JSON.parse(served.body.toString()).config.mediaType).toBe(MediaType.dockerConfig);
  });

  it('multi-arch OCI index is copied with --all', async () => {
    const platforms = ['linux/amd64', 'linux/arm64', 'linux/arm/v7'];
    const img = await generateImage({ layoutDir: layout, tag: 'multi', platforms });
    const digest = await seedRegistry(reg.host, 'smoke/multi', layout, 'multi', { all: true });
    expect(digest).toBe(img.digest);
    const served = await fetchManifest(reg.host, 'smoke/multi', 'multi');
    expect(served.mediaType).toBe(MediaType.ociIndex);
    for (const child of img.manifests) {
      const c = await fetchManifest(reg.host, 'smoke/multi', child.digest);
      expect(c.digest).toBe(child.digest);
      for (const b of [child.config, ...child.layers]) {
        const head = await fetch(`${reg.url}/v2/smoke/multi/blobs/${b}`, { method: 'HEAD' });
        expect(head.status).toBe(200);
      }
    }
    const raw = await skopeoInspect(`docker://${reg.host}/smoke/multi:multi`);
    expect(raw.manifests.map((m: any) => m.platform.architecture)).toEqual(['amd64', 'arm64', 'arm']);
  });

  it('multi-arch Docker manifest list is copied with --all', async () => {
    const img = await generateImage({ layoutDir: layout, tag: 'dmulti', format: 'docker', platforms: ['linux/amd64', 'linux/arm64'] });
    const digest = await seedRegistry(reg.host, 'smoke/dmulti', layout, 'dmulti');
    expect(digest).toBe(img.digest);
    const res = await fetch(`${reg.url}/v2/smoke/dmulti/manifests/dmulti`, { headers: { Accept: ACCEPT_ALL_MANIFESTS } });
    expect(res.headers.get('content-type')).toBe(MediaType.dockerManifestList);
    for (const child of img.manifests) expect((await fetchManifest(reg.host, 'smoke/dmulti', child.digest)).digest).toBe(child.digest);
  });

  it('htpasswd auth', async () => {
    const htpasswdFile = await writeHtpasswd(tmp.dir, { alice: 's3cret' });
    const authReg = await startRegistry({ auth: { htpasswdFile, realm: 'derrick-test' } });
    try {
      const anon = await fetch(`${authReg.url}/v2/`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get('www-authenticate')).toBe('Basic realm="derrick-test"');
      const creds = { user: 'alice', pass: 's3cret' };
      const img = await generateImage({ layoutDir: layout, tag: 'authed' });
      expect(await seedRegistry(authReg.host, 'smoke/auth', layout, 'authed', { creds })).toBe(img.digest);
      const bad = await fetch(`${authReg.url}/v2/smoke/auth/manifests/authed`, {
        headers: { Authorization: 'Basic ' + Buffer.from('alice:wrong').toString('base64') },
      });
      expect(bad.status).toBe(401);
    } finally {
      await authReg.stop();
    }
    expect(() => process.kill(authReg.pid, 0)).toThrow();
  });
});

describe.skipIf(!hasNginx)('nginx', () => {
  it('serves a temp dir', async () => {
    const tmp = await tmpDir('derrick-nginx-root');
    try {
      await fs.mkdir(path.join(tmp.dir, 'sub'));
      await fs.writeFile(path.join(tmp.dir, 'sub', 'hello.json'), '{"hello":"world"}');
      const ngx = await startNginx(`
        server {
          listen 127.0.0.1:__PORT__;
          root ${tmp.dir};
          location / { }
        }`);
      try {
        expect(ngx.url).toBe(`http://127.0.0.1:${ngx.port}`);
        const res = await fetch(`${ngx.url}/sub/hello.json`);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/json');
        expect(await res.json()).toEqual({ hello: 'world' });
        expect((await fetch(`${ngx.url}/missing`)).status).toBe(404);
        expect(ngx.errorLog()).toMatch(/open\(\) ".*\/missing" failed/);
        expect(ngx.accessLog()).toContain('GET /sub/hello.json');
      } finally {
        await ngx.stop();
      }
      expect(() => process.kill(ngx.pid, 0)).toThrow();
    } finally {
      await tmp.cleanup();
    }
  });
});
