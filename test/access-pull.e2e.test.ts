// Real clients pulling a protected repo: skopeo and podman, with credentials, through derrick
// serve with embedded blobs and with nginx (the printed config) serving the tree; without
// credentials, the same pulls fail. Signing off and on.
//
// A redirected client resends Authorization only to the same host:port (Go's net/http in
// skopeo 1.9 / podman 4.3), so with signing off nginx serves /v2 (proxied) and the tree on one
// origin; with signing on the signed URL is the proof and nginx can sit on another port.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Digest } from '../shared/oci.js';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { CLI, derrick } from './helpers/derrick.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { freePort } from './helpers/ports.js';
import { requireTool, run, startProcess, waitForHttp, type RunningProcess } from './helpers/proc.js';
import { makeHtpasswd } from './helpers/registry.js';
import { skopeoCopy } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = requireTool('skopeo') && requireTool('nginx');
const hasPodman = requireTool('podman', 'the podman pulls of a protected repo are skipped');
const SECRET_ENV = 'DERRICK_PULL_SECRET';
const SECRET = 'pull-test-secret';
const ENV = { [SECRET_ENV]: SECRET };

interface Setup {
  /** host:port clients pull from. */
  host: string;
  stop(): Promise<void>;
}

describe.skipIf(!hasTools)('pulling a protected repo with real clients', () => {
  let tmp: TmpDir;
  let image: GeneratedImage;
  const base = (signing: boolean, blobs: string) =>
    [
      'root: ./var',
      'repos:',
      '  - name: priv/app',
      `    from: oci:${path.join(tmp.dir, 'img')}`,
      '    protected: true',
      'serve:',
      '  htpasswd: ./htpasswd',
      `  blobs: ${blobs}`,
      ...(signing ? ['  signing:', `    secret-env: ${SECRET_ENV}`, '    ttl: 5m'] : []),
      '',
    ].join('\n');

  beforeAll(async () => {
    tmp = await tmpDir('derrick-access-pull');
    image = await generateImage({ layoutDir: path.join(tmp.dir, 'img'), tag: 'v1', layers: [300_000, 2048] });
    await fs.writeFile(path.join(tmp.dir, 'htpasswd'), makeHtpasswd('alice', 's3cret') + '\n');
    await fs.writeFile(path.join(tmp.dir, 'publish.yaml'), base(false, 'embedded'));
    const r = await derrick(['publish', '-c', path.join(tmp.dir, 'publish.yaml')]);
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);

  afterAll(async () => {
    await tmp?.cleanup();
  });

  async function serveOn(file: string, port: number, signing: boolean): Promise<RunningProcess> {
    const proc = startProcess(process.execPath, [CLI, 'serve', '-c', file, '--listen', `127.0.0.1:${port}`], { env: signing ? ENV : {} });
    await waitForHttp(`http://127.0.0.1:${port}/v2/`, 60_000, { proc }).catch(async (err) => {
      await proc.stop();
      throw err;
    });
    return proc;
  }

  async function nginxFor(file: string, signing: boolean, proxyPort?: number): Promise<Nginx> {
    const args = ['nginx-conf', '-c', file, '--listen', '127.0.0.1:1', ...(proxyPort ? ['--proxy', `127.0.0.1:${proxyPort}`] : [])];
    const r = await derrick(args, { env: signing ? ENV : {} });
    expect(r.code, r.stderr).toBe(0);
    return startNginx(r.stdout.replace('listen 127.0.0.1:1;', 'listen 127.0.0.1:__PORT__;'));
  }

  const setups: Record<string, (name: string) => Promise<Setup>> = {
    'embedded blobs, signing off': async (name) => {
      const file = path.join(tmp.dir, `${name}.yaml`);
      await fs.writeFile(file, base(false, 'embedded'));
      const port = await freePort();
      const serve = await serveOn(file, port, false);
      return { host: `127.0.0.1:${port}`, stop: () => serve.stop() };
    },
    'embedded blobs, signing on': async (name) => {
      const file = path.join(tmp.dir, `${name}.yaml`);
      await fs.writeFile(file, base(true, 'embedded'));
      const port = await freePort();
      const serve = await serveOn(file, port, true);
      return { host: `127.0.0.1:${port}`, stop: () => serve.stop() };
    },
    'nginx blobs on the same origin (auth_basic), signing off': async (name) => {
      const file = path.join(tmp.dir, `${name}.yaml`);
      await fs.writeFile(file, base(false, 'embedded'));
      const port = await freePort();
      const nginx = await nginxFor(file, false, port);
      await fs.writeFile(file, base(false, `${nginx.url}/published`));
      const serve = await serveOn(file, port, false).catch(async (err) => {
        await nginx.stop(); // started above; nobody else would stop it
        throw err;
      });
      return { host: `127.0.0.1:${nginx.port}`, stop: async () => void (await Promise.all([serve.stop(), nginx.stop()])) };
    },
    'nginx blobs on another port (secure_link), signing on': async (name) => {
      const file = path.join(tmp.dir, `${name}.yaml`);
      await fs.writeFile(file, base(true, 'embedded'));
      const nginx = await nginxFor(file, true);
      await fs.writeFile(file, base(true, `${nginx.url}/published`));
      const port = await freePort();
      const serve = await serveOn(file, port, true).catch(async (err) => {
        await nginx.stop();
        throw err;
      });
      return { host: `127.0.0.1:${port}`, stop: async () => void (await Promise.all([serve.stop(), nginx.stop()])) };
    },
  };

  for (const [id, [what, start]] of Object.entries(setups).entries()) {
    describe(what, () => {
      let setup: Setup;
      beforeAll(async () => {
        setup = await start(`setup-${id}`);
      }, 60_000);
      afterAll(async () => {
        await setup?.stop();
      });

      it('skopeo copies it with credentials, and fails without', async () => {
        const out = path.join(tmp.dir, `skopeo-${what.replace(/\W+/g, '-')}`);
        await skopeoCopy(`docker://${setup.host}/priv/app:v1`, `dir:${out}`, ['--src-creds', 'alice:s3cret']);
        expect(sha256Digest(await fs.readFile(path.join(out, 'manifest.json')))).toBe(image.digest);
        for (const blob of image.blobs) expect(sha256Digest(await fs.readFile(path.join(out, blob.slice('sha256:'.length))))).toBe(blob);
        await expect(skopeoCopy(`docker://${setup.host}/priv/app:v1`, `dir:${out}-anon`)).rejects.toThrow(/unauthorized|authentication required/i);
        await expect(skopeoCopy(`docker://${setup.host}/priv/app:v1`, `dir:${out}-wrong`, ['--src-creds', 'alice:nope'])).rejects.toThrow(/unauthorized|authentication required/i);
      });

      it.skipIf(!hasPodman)('podman pulls it with credentials, and fails without', async () => {
        const store = path.join(tmp.dir, `podman-${id}`); // a fresh store: every blob is fetched
        const runroot = await fs.mkdtemp('/tmp/prun-'); // podman refuses a runroot longer than 50 characters
        const podman = (...args: string[]) =>
          run('podman', ['--root', `${store}/root`, '--runroot', runroot, '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args], { timeoutMs: 120_000 });
        try {
          const ref = `${setup.host}/priv/app:v1`;
          const anon = await podman('pull', '--tls-verify=false', ref);
          expect(anon.code).not.toBe(0);
          expect(anon.stderr).toMatch(/unauthorized|authentication required/i);
          const r = await podman('pull', '--tls-verify=false', '--creds', 'alice:s3cret', ref);
          expect(r.code, r.stderr).toBe(0);
          const inspect = await podman('image', 'inspect', '--format', '{{.Digest}}', ref);
          expect(inspect.stdout.trim()).toBe(image.digest);
        } finally {
          await fs.rm(runroot, { recursive: true, force: true });
        }
      });
    });
  }
});
