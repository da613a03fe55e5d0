// serve --workers 2 (issue 11), black box: the real CLI's cluster on one port. Two workers answer
// (their pids through the DERRICK_DEBUG_WORKER switch on /healthz); a publish is seen by each;
// a worker killed with SIGKILL is restarted and logged while the port keeps answering; SIGTERM
// drains a download in flight and exits 0; and the pull-through fill stays one upstream GET per
// blob and per manifest whichever worker the clients reach (counted in the real docker-registry's
// access log).
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_FLAGS } from '../shared/node-flags.js';
import { fingerprint256, makeCa, makeServerCert, type Pem } from './helpers/certs.js';
import { CLI } from './helpers/derrick.js';
import { freePort } from './helpers/ports.js';
import { requireTool, startProcess, type RunningProcess } from './helpers/proc.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { getManifest, pollUntil, pullTo, seedImage, startPtServe, writePtConfig, type PtServe, type SeededImage } from './helpers/pull-through.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const count = (text: string, s: string) => text.split(s).length - 1;
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');

interface Answer {
  status: number;
  body: Buffer;
  headers: http.IncomingHttpHeaders;
}

function get(agent: http.Agent | false, url: string, p: string, headers: Record<string, string> = {}): Promise<Answer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http
      .get({ host: u.hostname, port: u.port, path: p, agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), headers: res.headers }));
        res.on('error', reject);
      })
      .on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${p}: no answer in 10 s`)));
  });
}

/** The pid of the worker that answers a new connection. */
async function workerPid(url: string): Promise<number> {
  const r = await get(false, url, '/healthz');
  expect(r.status).toBe(200);
  return Number(r.headers['x-derrick-worker']);
}

/** One keep-alive connection per worker (found by asking /healthz on new connections). */
async function connectionPerWorker(url: string, workers: number): Promise<Map<number, http.Agent>> {
  const byPid = new Map<number, http.Agent>();
  for (let i = 0; i < 20 && byPid.size < workers; i++) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const pid = Number((await get(agent, url, '/healthz')).headers['x-derrick-worker']);
    if (byPid.has(pid)) agent.destroy();
    else byPid.set(pid, agent);
  }
  return byPid;
}

async function startCluster(configFile: string, scheme = 'http', env: Record<string, string> = {}): Promise<{ url: string; proc: RunningProcess }> {
  const port = await freePort();
  const proc = startProcess(process.execPath, [CLI, 'serve', '-c', configFile, '--listen', `127.0.0.1:${port}`, '--workers', '2'], {
    env: { DERRICK_DEBUG_WORKER: '1', ...env },
  });
  const url = `${scheme}://127.0.0.1:${port}`;
  await proc.waitForOutput(`listening on ${url}`, 30_000);
  return { url, proc };
}

describe('serve --workers 2 over a published tree', () => {
  let tmp: TmpDir;
  let tree: PublishedTree;
  let serve: { url: string; proc: RunningProcess };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-workers');
    tree = await makePublishedTree(tmp.dir, [{ name: 'demo/w', images: [{ tag: 'v1', layers: [1000] }, { tag: 'big', layers: [48 * 1024 * 1024] }] }]);
    serve = await startCluster(tree.configFile);
  }, 120_000);
  afterAll(async () => {
    await serve?.proc.stop();
    await tmp?.cleanup();
  });

  it('two workers, neither the primary, answer on the one port; each sees a later publish', async () => {
    expect(serve.proc.output()).toContain('(1 repos, 2 workers)');
    const workers = await connectionPerWorker(serve.url, 2);
    expect(workers.size).toBe(2);
    expect([...workers.keys()]).not.toContain(serve.proc.pid);
    // The primary was started as `node cli.js`, without derrick's node flags: its workers have them.
    for (const pid of workers.keys()) expect((await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')).toEqual(expect.arrayContaining([...NODE_FLAGS]));
    const added = await tree.addImage('demo/w', { tag: 'v2', seed: 'added-later', layers: [500] });
    await tree.publish();
    for (const [pid, agent] of workers) {
      // The reload goal is well under a second; give a loaded machine a few.
      const r = await pollUntil(async () => {
        const x = await get(agent, serve.url, '/v2/demo/w/manifests/v2', { Accept: added.mediaType });
        return x.status === 200 && x;
      }, 10_000, `worker ${pid} to serve demo/w:v2`);
      expect(sha(r.body), `worker ${pid}`).toBe(added.digest);
      expect(Number((await get(agent, serve.url, '/healthz')).headers['x-derrick-worker'])).toBe(pid);
      agent.destroy();
    }
  });

  it('a worker killed with SIGKILL is logged and restarted; the port answers throughout', async () => {
    const before = await connectionPerWorker(serve.url, 2);
    const victim = [...before.keys()][0]!;
    for (const a of before.values()) a.destroy();
    process.kill(victim, 'SIGKILL');
    await serve.proc.waitForOutput('worker died unexpectedly; restarting it', 10_000);
    expect((await get(false, serve.url, '/healthz')).status).toBe(200);
    expect(serve.proc.output()).toMatch(new RegExp(`"worker":${victim},"code":null,"signal":"SIGKILL"`));
    const after = await pollUntil(async () => {
      const m = await connectionPerWorker(serve.url, 2);
      for (const a of m.values()) a.destroy();
      return m.size === 2 && !m.has(victim) && m;
    }, 15_000, 'a replacement worker');
    expect(after.size).toBe(2);
  });

  it('SIGTERM drains a blob download in flight, then the primary exits 0', async () => {
    const big = tree.images.get('demo/w:big')!;
    const layer = big.manifests[0]!.layers[0]!;
    const u = new URL(serve.url);
    const redirect = await get(false, serve.url, `/v2/demo/w/blobs/${layer}`);
    expect(redirect.status).toBe(307);
    const loc = new URL(redirect.headers.location!, serve.url);
    const body = new Promise<Buffer>((resolve, reject) => {
      http.get({ host: u.hostname, port: u.port, path: loc.pathname, agent: false }, (res) => {
        expect(res.statusCode).toBe(200);
        const chunks: Buffer[] = [];
        res.pause();
        // Read slowly at first, so the download is still running when SIGTERM arrives.
        setTimeout(() => {
          process.kill(serve.proc.pid, 'SIGTERM');
          setTimeout(() => res.resume(), 500);
        }, 300);
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', reject);
      }).on('error', reject);
    });
    const got = await body;
    expect(got.length).toBeGreaterThan(40 * 1024 * 1024);
    expect(sha(got)).toBe(layer);
    const exit = await serve.proc.exited;
    expect(exit).toEqual({ code: 0, signal: null });
  });
});

/** The SHA-256 fingerprint of the certificate a new TLS connection is shown. */
function servedFingerprint(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host: '127.0.0.1', port, ca }, () => {
      const fp = sock.getPeerCertificate().fingerprint256;
      sock.end();
      resolve(fp);
    });
    sock.on('error', reject);
  });
}

describe.runIf(requireTool('openssl') || process.env.CI === 'true')('serve --workers 2 with serve.tls: SIGHUP to the primary reloads every worker', () => {
  let tmp: TmpDir;
  let serve: { url: string; proc: RunningProcess };
  let caPem: Buffer;
  let good: Pem;
  let rotated: Pem;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-workers-tls');
    const pki = path.join(tmp.dir, 'pki');
    const ca = await makeCa(pki, 'ca');
    caPem = await fs.readFile(ca.cert);
    [good, rotated] = await Promise.all([makeServerCert(pki, 'good', ca, ['IP:127.0.0.1']), makeServerCert(pki, 'rotated', ca, ['IP:127.0.0.1'])]);
    await fs.mkdir(path.join(tmp.dir, 'tls'));
    await fs.copyFile(good.cert, path.join(tmp.dir, 'tls', 'server.crt'));
    await fs.copyFile(good.key, path.join(tmp.dir, 'tls', 'server.key'));
    const tree = await makePublishedTree(tmp.dir, [{ name: 'demo/t', images: [{ tag: 'v1', layers: [300] }] }], 'serve:\n  tls:\n    cert: ./tls/server.crt\n    key: ./tls/server.key\n');
    serve = await startCluster(tree.configFile, 'https', { DERRICK_LOG_LEVEL: 'info' });
  }, 120_000);
  afterAll(async () => {
    await serve?.proc.stop();
    await tmp?.cleanup();
  });

  it('both workers serve the rotated certificate to new connections after one SIGHUP', async () => {
    const ca = caPem;
    const port = Number(new URL(serve.url).port);
    const [goodFp, rotatedFp] = await Promise.all([fingerprint256(good.cert), fingerprint256(rotated.cert)]);
    expect(await servedFingerprint(port, ca)).toBe(goodFp);
    for (const [from, to] of [[rotated.cert, 'server.crt'], [rotated.key, 'server.key']] as const) {
      await fs.copyFile(from, path.join(tmp.dir, 'tls', `${to}.new`));
      await fs.rename(path.join(tmp.dir, 'tls', `${to}.new`), path.join(tmp.dir, 'tls', to));
    }
    process.kill(serve.proc.pid, 'SIGHUP');
    await pollUntil(async () => count(serve.proc.output(), 'TLS certificate reloaded') >= 2, 10_000, 'both workers to reload');
    // New connections alternate between the workers: every one shows the rotated certificate.
    const seen = await Promise.all(Array.from({ length: 6 }, () => servedFingerprint(port, ca)));
    expect(new Set(seen)).toEqual(new Set([rotatedFp]));
    expect(serve.proc.alive()).toBe(true);
  });
});

describe('pull-through through serve --workers 2: one upstream GET per blob', () => {
  const haveTools = requireTool('docker-registry') && requireTool('skopeo');
  let tmp: TmpDir;
  let reg: Registry;
  let serve: PtServe;
  let img: SeededImage;

  beforeAll(async () => {
    if (!haveTools) return;
    tmp = await tmpDir('derrick-workers-pt');
    reg = await startRegistry();
    img = await seedImage(reg, tmp.dir, 'wk/app', { tag: 'v1', layers: [6 * 1024 * 1024, 3 * 1024 * 1024, 2000] });
    const cfg = await writePtConfig(tmp.dir, 'derrick.yaml', { routes: [{ prefix: 'pin', url: reg.url }] });
    serve = await startPtServe(cfg, ['--workers', '2'], { DERRICK_DEBUG_WORKER: '1' });
  }, 120_000);
  afterAll(async () => {
    await serve?.stop();
    await reg?.stop();
    await tmp?.cleanup();
  });

  it.runIf(haveTools || process.env.CI === 'true')('8 concurrent clients on both workers for each cold blob: the upstream sees one GET per blob', async () => {
    const pids = new Set(await Promise.all(Array.from({ length: 4 }, () => workerPid(serve.url))));
    expect(pids.size, 'connections reach both workers').toBe(2);
    const layers = img.gen.manifests[0]?.layers ?? img.blobs;
    for (const d of layers.slice(0, 2)) {
      const answers = await Promise.all(Array.from({ length: 8 }, () => get(false, serve.url, `/v2/pin/wk/app/blobs/${d}`)));
      for (const a of answers) {
        expect(a.status, a.body.toString().slice(0, 300)).toBe(200);
        expect(sha(a.body)).toBe(d);
      }
      expect(reg.blobGets(d, 'wk/app'), `upstream GETs of ${d}\n${serve.output().slice(-3000)}`).toBe(1);
    }
  });

  it.runIf(haveTools || process.env.CI === 'true')('8 concurrent tag GETs on both workers: one upstream GET of the manifest', async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => getManifest(serve.url, 'pin/wk/app', 'v1')));
    for (const a of answers) {
      expect(a.status, a.text.slice(0, 300)).toBe(200);
      expect(sha(a.body)).toBe(img.digest);
    }
    expect(reg.countRequests('GET', `/v2/wk/app/manifests/${img.digest}`), serve.output().slice(-3000)).toBe(1);
  });

  it.runIf(haveTools || process.env.CI === 'true')('skopeo pulls the image through both workers; still one GET per blob', async () => {
    const digest = await pullTo(serve.host, 'pin/wk/app:v1', path.join(tmp.dir, 'out', 'pulled'));
    expect(digest).toBe(img.digest);
    for (const d of img.blobs) expect(reg.blobGets(d, 'wk/app'), `upstream GETs of ${d}`).toBe(1);
    expect(reg.countRequests('GET', `/v2/wk/app/manifests/${img.digest}`)).toBe(1);
  });
});
