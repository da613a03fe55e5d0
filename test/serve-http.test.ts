// HTTP details of a real `derrick serve` (issue 9, section 4 and scope), on the wire through raw
// sockets: Allow on every 405 and 405 for file-server writes, 400 for two Hosts or a bad one,
// absolute-form targets, absolute redirects (Host, serve.public-url, X-Forwarded-* only from
// serve.trusted-proxies), signed URLs through a public-url with a path, a taken port, and a
// real skopeo pull through the absolute redirects.
import net from 'node:net';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../shared/config.js';
import { sha256Digest } from '../shared/oci.js';
import type { GeneratedImage } from '../scripts/gen-image.js';
import { CLI, derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { freePort } from './helpers/ports.js';
import { requireTool, run, startProcess } from './helpers/proc.js';
import { makePublishedTree } from './helpers/published.js';
import { skopeoCopy } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasSkopeo = requireTool('skopeo', 'the skopeo pull through absolute redirects is skipped');

interface Exchange {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  json(): any;
}

/** Writes `head` (request line and headers, without the final blank line) and reads to EOF. */
function exchange(port: number, head: string, localAddress?: string): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress }, () => sock.write(`${head}\r\n\r\n`));
    const chunks: Buffer[] = [];
    sock.on('data', (b: Buffer) => chunks.push(b));
    sock.on('error', reject);
    sock.setTimeout(15_000, () => sock.destroy(new Error(`no answer to ${head.split('\r\n')[0]}`)));
    sock.on('end', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const lines = all.subarray(0, split).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      const body = all.subarray(split + 4);
      resolve({ status: Number(lines[0]!.split(' ')[1]), headers, body, json: () => JSON.parse(body.toString('utf8')) });
      sock.destroy();
    });
  });
}

/** A GET (or another method) with Connection: close and the given extra header lines. */
const request = (method: string, target: string, ...headerLines: string[]) => [`${method} ${target} HTTP/1.1`, ...headerLines, 'Connection: close'].join('\r\n');

const MASTER_BLOB = /\/published\/master\/demo~hello\/\d{8}T\d{6}\.\d{3}Z-\d{3}\/blobs\/sha256:[0-9a-f]{64}$/;

let tmp: TmpDir;
let img: GeneratedImage;
let blob: string;

beforeAll(async () => {
  tmp = await tmpDir('derrick-serve-http');
  const tree = await makePublishedTree(tmp.dir, [{ name: 'demo/hello', images: [{ tag: 'v1', layers: [2048, 50_000] }] }]);
  img = tree.images.get('demo/hello:v1')!;
  blob = img.blobs.at(-1)!;
});

afterAll(async () => {
  await tmp?.cleanup();
});

async function serveWith(name: string, serveYaml: string[], env: Record<string, string> = {}): Promise<ServeProcess & { port: number }> {
  const file = path.join(tmp.dir, `${name}.yaml`);
  await fs.writeFile(file, ['root: ./var', 'serve:', ...serveYaml.map((l) => `  ${l}`), ''].join('\n'));
  const s = await startServe(file, env);
  return { ...s, port: Number(new URL(s.url).port) };
}

describe('Host, absolute-form and 405 on a derrick serve process', () => {
  let s: ServeProcess & { port: number };
  let host: string;
  beforeAll(async () => {
    s = await serveWith('plain', ['blobs: embedded', 'trusted-proxies: ["127.0.0.2", "127.0.0.8/29"]']);
    host = s.host;
  });
  afterAll(async () => s?.stop());

  it.each([
    ['/v2/'],
    ['/v2/demo/hello/manifests/v1'],
    ['/published/web/demo~hello/tags/list'],
    ['/healthz'],
  ])('two Host headers on %s: 400 UNSUPPORTED, and the connection is closed', async (p) => {
    for (const second of ['Host: evil.test', 'host: 127.0.0.1:1', 'HOST: x']) {
      const r = await exchange(s.port, request('GET', p, `Host: ${host}`, second));
      expect(r.status).toBe(400);
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers.connection).toBe('close');
      expect(r.json().errors[0]).toMatchObject({ code: 'UNSUPPORTED', message: 'more than one Host header' });
    }
  });

  it('the same Host twice is still two Host headers', async () => {
    const r = await exchange(s.port, request('GET', '/v2/', `Host: ${host}`, `Host: ${host}`));
    expect(r.status).toBe(400);
  });

  it.each([
    ['evil.test/x', 'a path'],
    ['user@evil.test', 'userinfo'],
    ['evil.test:80:80', 'two ports'],
    ['evil test', 'a space'],
  ])('an invalid Host (%s: %s) gets 400, not a redirect', async (bad) => {
    const r = await exchange(s.port, request('GET', `/v2/demo/hello/blobs/${blob}`, `Host: ${bad}`));
    expect(r.status).toBe(400);
    expect(r.headers.location).toBeUndefined();
    expect(r.json().errors[0]).toMatchObject({ code: 'UNSUPPORTED', message: 'invalid Host header' });
  });

  it('HTTP/1.1 without Host is a 400; HTTP/1.0 without Host redirects to the local address', async () => {
    const r11 = await exchange(s.port, `GET /v2/demo/hello/blobs/${blob} HTTP/1.1\r\nConnection: close`);
    expect(r11.status).toBe(400);
    expect(r11.json().errors[0].message).toBe('no Host header');
    const r10 = await exchange(s.port, `GET /v2/demo/hello/blobs/${blob} HTTP/1.0`);
    expect(r10.status).toBe(307);
    expect(r10.headers.location).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:${s.port}/published/`));
  });

  it('absolute-form targets are routed by their path: /v2 manifest, blob redirect, file server', async () => {
    const m = await exchange(s.port, request('GET', `http://${host}/v2/demo/hello/manifests/v1`, `Host: ${host}`, 'Accept: application/vnd.oci.image.manifest.v1+json'));
    expect(m.status).toBe(200);
    expect(m.headers['docker-content-digest']).toBe(img.digest);
    expect(sha256Digest(m.body)).toBe(img.digest);
    // The target's authority wins over Host (RFC 9112 3.2.2), also for the redirect it makes.
    const b = await exchange(s.port, request('GET', `http://mirror.example.test:8080/v2/demo/hello/blobs/${blob}`, `Host: ${host}`));
    expect(b.status).toBe(307);
    expect(b.headers.location).toMatch(/^http:\/\/mirror\.example\.test:8080\/published\/master\//);
    expect(b.headers.location).toMatch(MASTER_BLOB);
    const filePath = new URL(b.headers.location!).pathname;
    const f = await exchange(s.port, request('GET', `http://${host}${filePath}`, `Host: ${host}`));
    expect(f.status).toBe(200);
    expect(f.headers['docker-content-digest']).toBe(blob);
    expect(sha256Digest(f.body)).toBe(blob);
    // A query on an absolute-form target still reaches the handler.
    const t = await exchange(s.port, request('GET', `http://${host}/v2/demo/hello/tags/list?n=1`, `Host: ${host}`));
    expect(t.status).toBe(200);
    expect(t.json()).toEqual({ name: 'demo/hello', tags: ['v1'] });
  });

  it.each([
    ['OPTIONS', '*'],
    ['GET', 'ftp://x/v2/'],
    ['GET', 'http://user@x/v2/'],
  ])('%s %s (neither a path nor a usable absolute URL) is a 400', async (method, target) => {
    const r = await exchange(s.port, request(method, target, `Host: ${host}`));
    expect(r.status).toBe(400);
    expect(r.json().errors[0].code).toBe('UNSUPPORTED');
  });

  it.each([
    ['PUT', '/v2/demo/hello/manifests/v1', 'GET, HEAD'],
    ['DELETE', `/v2/demo/hello/blobs/sha256:${'a'.repeat(64)}`, 'GET, HEAD'],
    ['OPTIONS', '/v2/', 'GET, HEAD'],
    ['POST', '/v2/demo/hello/blobs/uploads/', ''],
    ['GET', '/v2/demo/hello/blobs/uploads/abc', ''],
    ['PATCH', '/v2/demo/hello/blobs/uploads/abc', ''],
    ['PUT', '/published/web/demo~hello/tags/list', 'GET, HEAD'],
    ['DELETE', '/published/master/demo~hello/x', 'GET, HEAD'],
    ['POST', '/published/app/demo~hello.json', 'GET, HEAD'],
  ])('%s %s: 405 UNSUPPORTED with Allow "%s"', async (method, target, allow) => {
    const r = await exchange(s.port, request(method, target, `Host: ${host}`, 'Content-Length: 0'));
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe(allow);
    expect(r.json().errors[0].code).toBe('UNSUPPORTED');
  });

  it('a blob redirect is absolute, on the Host the client used', async () => {
    const r = await exchange(s.port, request('GET', `/v2/demo/hello/blobs/${blob}`, 'Host: registry.example.test:5000'));
    expect(r.status).toBe(307);
    expect(r.headers.location).toMatch(/^http:\/\/registry\.example\.test:5000\/published\/master\//);
    expect(r.headers.location).toMatch(MASTER_BLOB);
    // The same cached redirect, asked for under another name, follows that name.
    const again = await exchange(s.port, request('HEAD', `/v2/demo/hello/blobs/${blob}`, `Host: ${host}`));
    expect(again.headers.location).toBe(`http://${host}${new URL(r.headers.location!).pathname}`);
  });

  it('X-Forwarded-Proto/-Host are ignored from an untrusted peer and honoured from a trusted one', async () => {
    const fwd = ['X-Forwarded-Proto: https', 'X-Forwarded-Host: cdn.example.test, proxy.internal'];
    const get = (from: string, ...extra: string[]) => exchange(s.port, request('GET', `/v2/demo/hello/blobs/${blob}`, `Host: ${host}`, ...extra), from);
    const untrusted = await get('127.0.0.1', ...fwd);
    expect(untrusted.headers.location).toMatch(new RegExp(`^http://${host.replaceAll('.', '\\.')}/published/master/`));
    const outsideRange = await get('127.0.0.16', ...fwd);
    expect(outsideRange.headers.location!.startsWith(`http://${host}/`)).toBe(true);
    const trusted = await get('127.0.0.2', ...fwd);
    expect(trusted.headers.location).toMatch(/^https:\/\/cdn\.example\.test\/published\/master\//);
    const inRange = await get('127.0.0.9', ...fwd);
    expect(inRange.headers.location).toMatch(/^https:\/\/cdn\.example\.test\/published\/master\//);
    // Only the proto: the Host stays; a forwarded host that is not a host is not used.
    const protoOnly = await get('127.0.0.2', 'X-Forwarded-Proto: https');
    expect(protoOnly.headers.location!.startsWith(`https://${host}/published/`)).toBe(true);
    const badHost = await get('127.0.0.2', 'X-Forwarded-Host: evil.test/x?');
    expect(badHost.headers.location!.startsWith(`http://${host}/published/`)).toBe(true);
    const badProto = await get('127.0.0.2', 'X-Forwarded-Proto: javascript');
    expect(badProto.headers.location!.startsWith(`http://${host}/published/`)).toBe(true);
  });
});

describe('serve.public-url', () => {
  let s: ServeProcess & { port: number };
  const PUBLIC = 'https://registry.example.test:8443/base';
  beforeAll(async () => {
    s = await serveWith(
      'public',
      ['blobs: embedded', 'manifests: redirect', `public-url: ${PUBLIC}/`, 'trusted-proxies: ["127.0.0.0/8"]', 'signing: { secret-env: DERRICK_HTTP_SECRET }'],
      { DERRICK_HTTP_SECRET: 'http-test-secret' },
    );
  });
  afterAll(async () => s?.stop());

  it('every redirect starts with public-url, whatever Host and X-Forwarded-* say', async () => {
    for (const target of [`/v2/demo/hello/blobs/${blob}`, `/v2/demo/hello/manifests/${img.digest}`]) {
      const r = await exchange(s.port, request('GET', target, 'Host: evil.test', 'X-Forwarded-Host: evil2.test', 'X-Forwarded-Proto: http'));
      expect(r.status, target).toBe(307);
      expect(r.headers.location!.startsWith(`${PUBLIC}/published/master/demo~hello/`), r.headers.location).toBe(true);
      expect(r.headers.location).toMatch(/\?md5=[A-Za-z0-9_-]+&expires=\d+$/);
    }
  });

  it('a signed Location stays valid: the signature covers the file path, not the origin', async () => {
    const r = await exchange(s.port, request('GET', `/v2/demo/hello/blobs/${blob}`, `Host: ${s.host}`));
    const u = new URL(r.headers.location!);
    expect(u.pathname.startsWith('/base/published/')).toBe(true);
    // What a proxy that strips /base would ask derrick for.
    const f = await exchange(s.port, request('GET', u.pathname.slice('/base'.length) + u.search, `Host: ${s.host}`));
    expect(f.status).toBe(200);
    expect(sha256Digest(f.body)).toBe(blob);
    const unsigned = await exchange(s.port, request('GET', u.pathname.slice('/base'.length), `Host: ${s.host}`));
    expect(unsigned.status).toBe(403);
  });
});

describe('config keys', () => {
  const parse = (serve: string) => () => parseConfig(`serve:\n${serve}\n`, '/etc/derrick/derrick.yaml');
  it('accepts a public-url and address/CIDR trusted proxies, and strips a trailing slash', () => {
    const c = parse('  public-url: https://r.example.test/\n  trusted-proxies: ["10.0.0.0/8", "::1", "fd00::/8", "192.0.2.7"]')();
    expect(c.serve['public-url']).toBe('https://r.example.test');
    expect(c.serve['trusted-proxies']).toEqual(['10.0.0.0/8', '::1', 'fd00::/8', '192.0.2.7']);
    expect(parse('  listen: 127.0.0.1:5000')().serve['trusted-proxies']).toEqual([]);
  });
  it.each([
    ['  public-url: ftp://r.example.test', /serve\.public-url/],
    ['  public-url: https://u:p@r.example.test', /serve\.public-url: must be http\(s\):\/\/HOST/],
    ['  public-url: https://r.example.test/?x=1', /serve\.public-url: must be/],
    ['  trusted-proxies: ["10.0.0.0/33"]', /derrick\.yaml:2: serve\.trusted-proxies\[0\]: "10\.0\.0\.0\/33" has no valid prefix length/],
    ['  trusted-proxies: ["proxy.internal"]', /serve\.trusted-proxies\[0\]: "proxy\.internal" is not an IP address or CIDR range/],
  ])('%s is refused, naming the key', (yaml, says) => {
    expect(parse(yaml)).toThrow(says);
  });
});

describe('a taken port', () => {
  let holder: net.Server;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    holder = net.createServer();
    await new Promise<void>((r) => holder.listen(port, '127.0.0.1', () => r()));
  });
  afterAll(async () => new Promise<void>((r) => holder.close(() => r())));

  it('derrick serve exits at once, non-zero, with one line naming the address and serve.listen', async () => {
    const file = path.join(tmp.dir, 'taken.yaml');
    await fs.writeFile(file, `root: ./var\nserve:\n  listen: 127.0.0.1:${port}\n`);
    const started = Date.now();
    const r = await derrick(['serve', '-c', file], { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`error: cannot listen on 127.0.0.1:${port} (serve.listen in ${file}, or --listen): the address is already in use\n`);
  });

  it('with --listen, the line names --listen', async () => {
    const file = path.join(tmp.dir, 'taken.yaml');
    const r = await derrick(['serve', '-c', file, '--listen', `127.0.0.1:${port}`], { timeoutMs: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: cannot listen on 127.0.0.1:${port} (set by --listen): the address is already in use\n`);
  });

  it('the demo (npm start) says the same, before making any image', async () => {
    const demoDir = path.join(tmp.dir, 'demo');
    const r = await run(process.execPath, [path.join(path.dirname(CLI), 'scripts/demo.js')], {
      env: { DERRICK_DEMO_DIR: demoDir, DERRICK_DEMO_LISTEN: `127.0.0.1:${port}` },
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: cannot listen on 127.0.0.1:${port} (serve.listen, set from DERRICK_DEMO_LISTEN): the address is already in use\n`);
    await expect(fs.stat(path.join(demoDir, 'images'))).rejects.toThrow(/ENOENT/);
  });
});

describe('start-up', () => {
  it('a request sent while serve starts waits for the index and gets the right answer', async () => {
    const file = path.join(tmp.dir, 'race.yaml');
    const port = await freePort();
    await fs.writeFile(file, `root: ./var\nserve:\n  listen: 127.0.0.1:${port}\n`);
    const proc = startProcess(process.execPath, [CLI, 'serve', '-c', file]);
    try {
      // Connect as early as possible; every answer must be the manifest, never a 404 or 503.
      let answer: Exchange | undefined;
      const deadline = Date.now() + 20_000;
      while (!answer && Date.now() < deadline) {
        answer = await exchange(port, request('GET', '/v2/demo/hello/manifests/v1', `Host: 127.0.0.1:${port}`, 'Accept: application/vnd.oci.image.manifest.v1+json')).catch(() => undefined);
        if (!answer) await new Promise((r) => setTimeout(r, 2));
      }
      expect(answer?.status).toBe(200);
      expect(answer?.headers['docker-content-digest']).toBe(img.digest);
    } finally {
      await proc.stop();
    }
  });
});

describe.skipIf(!hasSkopeo)('skopeo through the absolute redirects', () => {
  let s: ServeProcess;
  beforeAll(async () => {
    s = await serveWith('skopeo', ['blobs: embedded', 'manifests: redirect']);
  });
  afterAll(async () => s?.stop());

  it('skopeo copy pulls the image, every blob verified, through absolute Locations', async () => {
    const loc = await exchange(Number(new URL(s.url).port), request('GET', `/v2/demo/hello/blobs/${blob}`, `Host: ${s.host}`));
    expect(loc.headers.location!.startsWith(`http://${s.host}/published/master/`)).toBe(true);
    const out = path.join(tmp.dir, 'skopeo-out');
    await skopeoCopy(`docker://${s.host}/demo/hello:v1`, `oci:${out}:v1`);
    const index = JSON.parse(await fs.readFile(path.join(out, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(img.digest);
    for (const d of img.blobs) {
      const bytes = await fs.readFile(path.join(out, 'blobs', 'sha256', d.slice('sha256:'.length)));
      expect(sha256Digest(bytes)).toBe(d);
    }
  });
});
