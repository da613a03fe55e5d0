// derrick serve over TLS (serve.tls), with a throwaway CA made by openssl at run time: skopeo,
// podman and ctr pull with verification on and refuse an untrusted certificate; SIGHUP swaps the
// certificate for new connections while an open keep-alive connection goes on; a bad new pair is
// refused and the old one kept; `nginx-conf --tls`, run by real nginx, serves the blobs over TLS.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoKey } from '../shared/layout.js';
import { makeCa, makeServerCert, fingerprint256, type Pem } from './helpers/certs.js';
import { startConnectProxy, type ConnectProxy } from './helpers/connect-proxy.js';
import { startContainerd, type Daemons } from './helpers/daemons.js';
import { derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { requireTool, run } from './helpers/proc.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = ['openssl', 'skopeo', 'podman', 'containerd', 'ctr', 'nginx'].every((t) => requireTool(t, 'the TLS e2e tests are skipped'));
const hasDocker = ['dockerd', 'docker', 'unshare'].every((t) => requireTool(t, 'the docker TLS pulls are skipped'));
/**
 * docker counts 127.0.0.0/8 (and any name that resolves there) as an insecure registry and then
 * skips certificate verification, so it pulls by this name instead: dockerd's private /etc/hosts
 * maps it to a documentation address that is never dialled, and HTTPS_PROXY (a CONNECT proxy on
 * 127.0.0.1) carries the TLS bytes to derrick.
 */
const DOCKER_NAME = 'derrick.test';

const REPO = 'demo/hello';
const TAG = 'latest';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

interface HttpsResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** SHA-256 fingerprint of the certificate the server presented on this connection. */
  fingerprint: string;
  reusedSocket: boolean;
  localPort: number;
}

/** GET over HTTPS, trusting only `ca`. */
function httpsGet(url: string, ca: Buffer, agent: https.Agent | false = false): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent, timeout: 15_000 }, (res) => {
      const sock = res.socket as tls.TLSSocket;
      const fingerprint = sock.getPeerCertificate().fingerprint256;
      const localPort = sock.localPort!;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), fingerprint, reusedSocket: req.reusedSocket, localPort }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

/** Replaces a file by rename, as an operator's cert tooling (certbot, cert-manager) does. */
async function replaceFile(src: string, dest: string): Promise<void> {
  await fs.copyFile(src, dest + '.new');
  await fs.rename(dest + '.new', dest);
}

describe.skipIf(!hasTools)('derrick serve over TLS', () => {
  let tmp: TmpDir;
  let tree: PublishedTree;
  let ca: Pem;
  let caPem: Buffer;
  let good: Pem;
  let rotated: Pem;
  let untrusted: Pem;
  /** What serve.tls names: good's pair at first, replaced by the SIGHUP tests. */
  let served: Pem;
  /** --cert-dir / --src-cert-dir for containers/image: trusts `ca` only. */
  let certDir: string;
  let wrongConfigFile: string;
  let serve: ServeProcess;
  let wrongServe: ServeProcess;
  let daemons: Daemons;
  let proxy: ConnectProxy | undefined;
  let digest: string;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-tls');
    const pki = path.join(tmp.dir, 'pki');
    ca = await makeCa(pki, 'ca');
    const otherCa = await makeCa(pki, 'other-ca');
    // derrick.test: the name the docker pull uses (see the docker test).
    const san = ['IP:127.0.0.1', 'DNS:derrick.test'];
    [good, rotated, untrusted] = await Promise.all([
      makeServerCert(pki, 'good', ca, san),
      makeServerCert(pki, 'rotated', ca, san),
      makeServerCert(pki, 'untrusted', otherCa, san),
    ]);
    caPem = await fs.readFile(ca.cert);
    certDir = path.join(tmp.dir, 'trust');
    await fs.mkdir(certDir);
    await fs.copyFile(ca.cert, path.join(certDir, 'ca.crt'));
    const tlsDir = path.join(tmp.dir, 'tls');
    await fs.mkdir(tlsDir);
    served = { cert: path.join(tlsDir, 'server.crt'), key: path.join(tlsDir, 'server.key') };
    await replaceFile(good.cert, served.cert);
    await replaceFile(good.key, served.key);

    tree = await makePublishedTree(
      tmp.dir,
      [{ name: REPO, images: [{ tag: TAG, layers: [200_000, 4096] }] }],
      ['serve:', '  tls:', '    cert: ./tls/server.crt', '    key: ./tls/server.key'].join('\n'),
    );
    digest = tree.images.get(`${REPO}:${TAG}`)!.digest;
    // The same tree behind a certificate from a CA no client trusts.
    wrongConfigFile = path.join(tmp.dir, 'derrick-untrusted.yaml');
    const yaml = await fs.readFile(tree.configFile, 'utf8');
    await fs.writeFile(wrongConfigFile, yaml.replace('./tls/server.crt', untrusted.cert).replace('./tls/server.key', untrusted.key));
    // info: the SIGHUP tests read "TLS certificate reloaded" from the log.
    [serve, wrongServe] = await Promise.all([
      startServe(tree.configFile, { DERRICK_LOG_LEVEL: 'info' }, { tls: true }),
      startServe(wrongConfigFile, {}, { tls: true }),
    ]);
    daemons = hasDocker ? await startDockerBehindName() : await startContainerd(false);
  }, 180_000);

  /** containerd + dockerd trusting `ca` for DOCKER_NAME:<port of each server>, reaching them via the proxy. */
  async function startDockerBehindName(): Promise<Daemons> {
    const etcDocker = path.join(tmp.dir, 'etc-docker');
    for (const s of [serve, wrongServe]) {
      const dir = path.join(etcDocker, 'certs.d', `${DOCKER_NAME}:${new URL(s.url).port}`);
      await fs.mkdir(dir, { recursive: true });
      await fs.copyFile(ca.cert, path.join(dir, 'ca.crt'));
    }
    const hosts = path.join(tmp.dir, 'etc-hosts');
    await fs.writeFile(hosts, `${await fs.readFile('/etc/hosts', 'utf8')}\n192.0.2.1 ${DOCKER_NAME}\n`);
    const routes: Record<string, number> = {};
    for (const s of [serve, wrongServe]) routes[`${DOCKER_NAME}:${new URL(s.url).port}`] = Number(new URL(s.url).port);
    proxy = await startConnectProxy(routes);
    const noProxy = { NO_PROXY: undefined, no_proxy: undefined, http_proxy: undefined, https_proxy: undefined };
    return startContainerd(true, { privateEtc: { docker: etcDocker, hosts }, env: { ...noProxy, HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url } });
  }

  afterAll(async () => {
    await serve?.stop();
    await wrongServe?.stop();
    await daemons?.stop();
    await proxy?.close();
    await tmp?.cleanup();
  });

  it('speaks HTTP/1.1 over TLS (no h2 offered) with the configured certificate', async () => {
    const sock = tls.connect({ host: '127.0.0.1', port: Number(new URL(serve.url).port), ca: caPem, ALPNProtocols: ['h2', 'http/1.1'] });
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
    expect(sock.authorized).toBe(true);
    expect(sock.alpnProtocol).toBe('http/1.1');
    expect(sock.getPeerCertificate().fingerprint256).toBe(await fingerprint256(good.cert));
    sock.destroy();
    const r = await httpsGet(`${serve.url}/v2/`, caPem);
    expect(r.status).toBe(200);
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('drops plain HTTP on the TLS port at once (no hang for a client probing the scheme)', async () => {
    const started = Date.now();
    const r = await fetch(`http://${serve.host}/v2/`, { signal: AbortSignal.timeout(5000) }).catch((e: Error) => e);
    expect(r).toBeInstanceOf(Error);
    expect(String((r as Error & { cause?: unknown }).cause ?? r)).not.toMatch(/timeout|aborted/i);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(serve.proc.alive()).toBe(true);
  });

  it('redirects a blob to the embedded file server on https, on the same host and port', async () => {
    const blob = tree.images.get(`${REPO}:${TAG}`)!.blobs.at(-1)!;
    const r = await httpsGet(`${serve.url}/v2/${REPO}/blobs/${blob}`, caPem);
    expect(r.status).toBe(307);
    const location = String(r.headers.location);
    // Relative today; whatever its form, it resolves to https on this server.
    const target = new URL(location, serve.url);
    expect(target.origin).toBe(serve.url);
    expect(target.protocol).toBe('https:');
    const file = await httpsGet(target.href, caPem);
    expect(file.status).toBe(200);
    expect(sha256(file.body)).toBe(blob);
  });

  it('skopeo copies with --src-cert-dir and verification on', async () => {
    const out = path.join(tmp.dir, 'skopeo-out');
    const r = await run('skopeo', ['--insecure-policy', 'copy', '--src-cert-dir', certDir, `docker://${serve.host}/${REPO}:${TAG}`, `dir:${out}`], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(await fs.readFile(path.join(out, 'manifest.json')))).toBe(digest);
  });

  it('skopeo refuses a certificate from an untrusted CA, naming the certificate', async () => {
    const r = await run('skopeo', ['--insecure-policy', 'copy', '--src-cert-dir', certDir, `docker://${wrongServe.host}/${REPO}:${TAG}`, `dir:${path.join(tmp.dir, 'skopeo-wrong')}`], { timeoutMs: 120_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/x509: certificate signed by unknown authority/);
  });

  describe('podman', () => {
    let runroot: string;
    const podman = (...args: string[]) =>
      run('podman', ['--root', path.join(tmp.dir, 'podman-root'), '--runroot', runroot, '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', ...args], { timeoutMs: 120_000 });
    beforeAll(async () => {
      // podman refuses a runroot longer than 50 characters.
      runroot = await fs.mkdtemp('/tmp/prun-');
    });
    afterAll(async () => {
      if (runroot) await fs.rm(runroot, { recursive: true, force: true });
    });

    it('pulls with --cert-dir and verification on', async () => {
      const ref = `${serve.host}/${REPO}:${TAG}`;
      const r = await podman('pull', '--cert-dir', certDir, ref);
      expect(r.code, r.stderr).toBe(0);
      const inspect = await podman('image', 'inspect', '--format', '{{.Digest}}', ref);
      expect(inspect.code, inspect.stderr).toBe(0);
      expect(inspect.stdout.trim()).toBe(digest);
    });

    it('refuses a certificate from an untrusted CA, naming the certificate', async () => {
      const r = await podman('pull', '--cert-dir', certDir, `${wrongServe.host}/${REPO}:${TAG}`);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/x509: certificate signed by unknown authority/);
    });
  });

  describe('ctr (containerd)', () => {
    const ctr = (...args: string[]) => run('ctr', ['-a', daemons.containerdSock, '-n', 'derrick-tls', ...args], { timeoutMs: 120_000 });
    /**
     * containerd treats a loopback host as plain http (and ignores --tlscacert for it), so a
     * hosts.toml per host:port says https and names the CA, as an operator would for a registry.
     */
    async function hostsDir(host: string): Promise<string> {
      const dir = path.join(tmp.dir, 'ctr-hosts');
      await fs.mkdir(path.join(dir, host), { recursive: true });
      await fs.writeFile(
        path.join(dir, host, 'hosts.toml'),
        `server = "https://${host}"\n\n[host."https://${host}"]\n  capabilities = ["pull", "resolve"]\n  ca = ${JSON.stringify(ca.cert)}\n`,
      );
      return dir;
    }

    it('pulls with a hosts.toml naming the CA, verification on', async () => {
      const ref = `${serve.host}/${REPO}:${TAG}`;
      const r = await ctr('images', 'pull', '--hosts-dir', await hostsDir(serve.host), '--platform', 'linux/amd64', ref);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const ls = await ctr('images', 'ls');
      expect(ls.stdout.split('\n').find((l) => l.startsWith(ref + ' '))).toContain(digest);
    });

    it('refuses a certificate from an untrusted CA, naming the certificate', async () => {
      const r = await ctr('images', 'pull', '--hosts-dir', await hostsDir(wrongServe.host), '--platform', 'linux/amd64', `${wrongServe.host}/${REPO}:${TAG}`);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toMatch(/x509: certificate signed by unknown authority/);
    });
  });

  describe.skipIf(!hasDocker)('docker (dockerd with certs.d)', () => {
    const docker = (...args: string[]) => run('/usr/bin/docker', ['-H', `unix://${daemons.dockerSock}`, ...args], { timeoutMs: 120_000 });
    const byName = (s: ServeProcess) => `${DOCKER_NAME}:${new URL(s.url).port}`;

    it('pulls with certs.d/<host:port>/ca.crt and verification on', async () => {
      const ref = `${byName(serve)}/${REPO}:${TAG}`;
      const r = await docker('pull', ref);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`Digest: ${digest}`);
      const ids = await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', ref);
      expect(ids.stdout).toContain(digest);
      expect(proxy!.connects).toContain(byName(serve));
    });

    it('refuses a certificate from an untrusted CA, naming the certificate', async () => {
      const r = await docker('pull', `${byName(wrongServe)}/${REPO}:${TAG}`);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/x509: certificate signed by unknown authority/);
    });

    it('(why the name: on 127.0.0.1 docker does not verify, and takes the untrusted certificate)', async () => {
      const r = await docker('pull', `${wrongServe.host}/${REPO}:${TAG}`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`Digest: ${digest}`);
    });
  });

  describe('SIGHUP', () => {
    /** Fresh connections until one presents `fp`; returns how many it took. */
    async function waitForCert(fp: string): Promise<number> {
      for (let i = 1; i <= 100; i++) {
        const r = await httpsGet(`${serve.url}/v2/`, caPem);
        expect(r.status).toBe(200);
        if (r.fingerprint === fp) return i;
        await sleep(100);
      }
      throw new Error(`no new connection presented ${fp} within 10 s`);
    }

    it('re-reads the certificate: new connections get the new one, an open keep-alive connection goes on', async () => {
      const [goodFp, rotatedFp] = await Promise.all([fingerprint256(good.cert), fingerprint256(rotated.cert)]);
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: caPem });
      try {
        const before = await httpsGet(`${serve.url}/v2/`, caPem, agent);
        expect(before.fingerprint).toBe(goodFp);
        await replaceFile(rotated.cert, served.cert);
        await replaceFile(rotated.key, served.key);
        process.kill(serve.proc.pid, 'SIGHUP');
        await serve.proc.waitForOutput('TLS certificate reloaded', 10_000);
        await waitForCert(rotatedFp);
        // The connection opened before the reload is still up, still on its old session.
        const after = await httpsGet(`${serve.url}/v2/${REPO}/manifests/${TAG}`, caPem, agent);
        expect(after.status).toBe(200);
        expect(after.reusedSocket).toBe(true);
        expect(after.localPort).toBe(before.localPort);
        expect(after.fingerprint).toBe(goodFp);
        expect(sha256(after.body)).toBe(digest);
      } finally {
        agent.destroy();
      }
      expect(serve.proc.alive()).toBe(true);
    });

    it('keeps the current certificate when the new pair does not match, and logs why', async () => {
      const rotatedFp = await fingerprint256(rotated.cert);
      // A certificate with another certificate's key: unusable.
      await replaceFile(good.cert, served.cert);
      await replaceFile(untrusted.key, served.key);
      try {
        const logged = serve.proc.output().length;
        process.kill(serve.proc.pid, 'SIGHUP');
        const deadline = Date.now() + 10_000;
        while (!serve.proc.output().slice(logged).includes('TLS reload failed') && Date.now() < deadline) await sleep(50);
        const log = serve.proc.output().slice(logged);
        expect(log).toContain('TLS reload failed; keeping the previous certificate');
        expect(log).toContain(served.cert);
        expect(serve.proc.alive()).toBe(true);
        for (let i = 0; i < 3; i++) expect((await httpsGet(`${serve.url}/v2/`, caPem)).fingerprint).toBe(rotatedFp);
      } finally {
        // Back to the pair in use, which the nginx test below reads too.
        await replaceFile(rotated.cert, served.cert);
        await replaceFile(rotated.key, served.key);
      }
    });
  });

  it('derrick serve exits 2 naming both files when the pair does not match at start', async () => {
    const bad = path.join(tmp.dir, 'derrick-badpair.yaml');
    const yaml = await fs.readFile(tree.configFile, 'utf8');
    await fs.writeFile(bad, yaml.replace('./tls/server.crt', good.cert).replace('./tls/server.key', rotated.key));
    const r = await derrick(['serve', '-c', bad, '--listen', '127.0.0.1:0'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`serve.tls: cannot use certificate ${good.cert} with key ${rotated.key}`);
  });

  describe('nginx-conf --tls under real nginx', () => {
    let nginx: Nginx;
    beforeAll(async () => {
      const r = await derrick(['nginx-conf', '-c', tree.configFile, '--tls', '--listen', '127.0.0.1:1']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('listen 127.0.0.1:1 ssl;');
      nginx = await startNginx(r.stdout.replace('listen 127.0.0.1:1 ssl;', 'listen 127.0.0.1:__PORT__ ssl;'));
    }, 60_000);
    afterAll(async () => {
      await nginx?.stop();
    });

    it('serves a blob over TLS with the same headers as the embedded server', async () => {
      const blob = tree.images.get(`${REPO}:${TAG}`)!.blobs.at(-1)!;
      const redirect = await httpsGet(`${serve.url}/v2/${REPO}/blobs/${blob}`, caPem);
      const filePath = new URL(String(redirect.headers.location), serve.url).pathname;
      expect(filePath).toMatch(new RegExp(`^/published/master/${repoKey(REPO)}/[^/]+/blobs/${blob}$`));
      const [viaNginx, embedded] = await Promise.all([
        httpsGet(`https://127.0.0.1:${nginx.port}${filePath}`, caPem),
        httpsGet(`${serve.url}${filePath}`, caPem),
      ]);
      expect(viaNginx.status).toBe(200);
      expect(sha256(viaNginx.body)).toBe(blob);
      expect(viaNginx.fingerprint).toBe(await fingerprint256(served.cert));
      for (const h of ['content-type', 'docker-content-digest', 'cache-control', 'content-length']) {
        expect(viaNginx.headers[h], h).toBe(embedded.headers[h]);
      }
      expect(viaNginx.headers['docker-content-digest']).toBe(blob);
    });

    it('refuses plain HTTP on the TLS port', async () => {
      const r = await fetch(`http://127.0.0.1:${nginx.port}/published/`).catch((e: Error) => e);
      // nginx answers 400 "plain HTTP request was sent to HTTPS port".
      expect(r instanceof Error ? 0 : r.status).toBe(400);
    });
  });
});
