import { describe, it, expect, afterEach } from 'vitest';
import type http from 'node:http';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { MediaType, sha256Digest } from '../oci.js';
import { createRegistryClient, nextLink, type RegistryClientOptions } from './client.js';
import { UpstreamError } from './errors.js';
import { fakeImage, registryRoutes, repoOf, sendError, sendJson, startServer, type Handler, type TestServer } from './testing.js';

// Self-signed for IP 127.0.0.1, valid until 2126: only ever used by these tests.
const TLS = {
  key: `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg41EAFyAmAiFPN3DI
D/api2Hxu1NCU38T5auhKkUb09mhRANCAAT0CnxIzyBPdOf0GevcVSEsz9wpN+LY
JIHKLxuifn2RCUSmbbl366c/aXPLoTitq2m296ZoU9KxQNO++JQVm6uz
-----END PRIVATE KEY-----
`,
  cert: `-----BEGIN CERTIFICATE-----
MIIBljCCATygAwIBAgIUW/SmYIdJNC3+RPuodL8m86Dxa4MwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMZGVycmljay10ZXN0MCAXDTI2MTEyNDA5NTcxMVoYDzIxMjYx
MDMxMDk1NzExWjAXMRUwEwYDVQQDDAxkZXJyaWNrLXRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAT0CnxIzyBPdOf0GevcVSEsz9wpN+LYJIHKLxuifn2RCUSm
bbl366c/aXPLoTitq2m296ZoU9KxQNO++JQVm6uzo2QwYjAdBgNVHQ4EFgQUI3Zg
o+4bCECfiIpZ2lmamkvb8cAwHwYDVR0jBBgwFoAUI3Zgo+4bCECfiIpZ2lmamkvb
8cAwDwYDVR0TAQH/BAUwAwEB/zAPBgNVHREECDAGhwR/AAABMAoGCCqGSM49BAMC
A0gAMEUCIQDvPgsJyhxAIesg+bBbEBa60nh5LboCN/TtRL+NNleYGgIgXcIb+6HB
AHc8xpt0Fg6nuQ3qdXIR0Eki79iyl+KWsmE=
-----END CERTIFICATE-----
`,
};

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/**
 * With tlsVerify=false (the only way to reach a plain-http fixture) a client's first request is a
 * scheme probe of /v2/; answering it here keeps each test's handler about the request under test.
 */
async function serve(handler: Handler, tls?: typeof TLS): Promise<TestServer> {
  const s = await startServer((req, res) => (req.url === '/v2/' ? sendJson(res, 200, {}) : handler(req, res)), tls);
  servers.push(s);
  return s;
}

function client(s: TestServer, o: Partial<RegistryClientOptions> = {}) {
  return createRegistryClient({ registry: s.host, tlsVerify: false, retryBaseMs: 1, ...o });
}

async function rejection(p: Promise<unknown>): Promise<UpstreamError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

const img = fakeImage('alpine');
const repos = { 'library/alpine': repoOf({ '3.20': img, latest: img }), 'library/busybox': repoOf({ '1': fakeImage('busybox') }) };

interface BearerOptions {
  credentials?: { user: string; pass: string };
  expiresIn?: number;
  field?: 'token' | 'access_token';
}

/**
 * A registry guarded by the docker token protocol, with its token endpoint on the same server.
 * A token carries its scope, and a repository accepts only a token for its own pull scope.
 */
function bearerRegistry(routes: Handler, o: BearerOptions = {}) {
  const issued = new Map<string, string>(); // token -> scope
  const tokenRequests: URL[] = [];
  const handler: Handler = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') {
      tokenRequests.push(url);
      if (o.credentials) {
        const want = 'Basic ' + Buffer.from(`${o.credentials.user}:${o.credentials.pass}`).toString('base64');
        if (req.headers.authorization !== want) return sendJson(res, 401, { details: 'bad credentials' });
      }
      const scope = url.searchParams.get('scope') ?? '';
      const token = `tok-${issued.size + 1}`;
      issued.set(token, scope);
      return sendJson(res, 200, { [o.field ?? 'token']: token, expires_in: o.expiresIn, issued_at: new Date().toISOString() });
    }
    const repo = /^\/v2\/(.+)\/(?:tags|manifests|blobs)\//.exec(url.pathname)?.[1];
    const need = repo ? `repository:${repo}:pull` : '';
    const token = req.headers.authorization?.replace(/^Bearer /, '') ?? '';
    if (!issued.has(token) || (need && issued.get(token) !== need)) {
      const scope = need ? `,scope="${need}"` : '';
      return sendError(res, 401, 'UNAUTHORIZED', 'authentication required', {
        'WWW-Authenticate': `Bearer realm="http://${req.headers.host}/token",service="fake-registry"${scope}`,
      });
    }
    return routes(req, res);
  };
  return { handler, tokenRequests };
}

/** Requests other than /v2/ pings and probes. */
const api = (s: TestServer) => s.requests.filter((r) => r.url !== '/v2/');
const count = (s: TestServer, pred: (r: TestServer['requests'][number]) => boolean) => s.requests.filter(pred).length;

describe('bearer token flow', () => {
  it('fetches an anonymous token once per scope and reuses it', async () => {
    const reg = bearerRegistry(registryRoutes(repos));
    const s = await serve(reg.handler);
    const c = client(s);

    const m1 = await c.getManifest('library/alpine', '3.20');
    const m2 = await c.getManifest('library/alpine', 'latest');
    expect(m1.digest).toBe(img.manifestDigest);
    expect(m2.bytes.equals(img.manifest)).toBe(true);

    expect(reg.tokenRequests).toHaveLength(1);
    const t = reg.tokenRequests[0]!;
    expect(t.searchParams.get('service')).toBe('fake-registry');
    expect(t.searchParams.get('scope')).toBe('repository:library/alpine:pull');
    expect(t.searchParams.has('account')).toBe(false);
    expect(s.requests.find((r) => r.url.startsWith('/token'))!.headers.authorization).toBeUndefined();
    // One 401 to learn the challenge; the second manifest went straight through with the token.
    expect(count(s, (r) => r.url.includes('/manifests/') && !r.headers.authorization)).toBe(1);
    expect(count(s, (r) => r.url.includes('/manifests/') && r.headers.authorization === 'Bearer tok-1')).toBe(2);

    // Another repository is another scope: a second token, fetched up front without a 401.
    await c.listTags('library/busybox');
    expect(reg.tokenRequests).toHaveLength(2);
    expect(reg.tokenRequests[1]!.searchParams.get('scope')).toBe('repository:library/busybox:pull');
    expect(count(s, (r) => r.url.startsWith('/v2/library/busybox') && !r.headers.authorization)).toBe(0);
  });

  it('sends configured credentials to the token server and accepts access_token', async () => {
    const reg = bearerRegistry(registryRoutes(repos), { credentials: { user: 'alice', pass: 's3cret' }, field: 'access_token', expiresIn: 300 });
    const s = await serve(reg.handler);
    const c = client(s, { username: 'alice', password: 's3cret' });

    const [a, b] = await Promise.all([c.headManifest('library/alpine', '3.20'), c.getManifest('library/alpine', 'latest')]);
    expect(a.digest).toBe(img.manifestDigest);
    expect(b.digest).toBe(img.manifestDigest);
    await c.getBlob('library/alpine', img.layerDigest).then((r) => text(r.body));

    expect(reg.tokenRequests).toHaveLength(1);
    expect(reg.tokenRequests[0]!.searchParams.get('account')).toBe('alice');
    const tokenReq = s.requests.find((r) => r.url.startsWith('/token'))!;
    expect(tokenReq.headers.authorization).toBe('Basic ' + Buffer.from('alice:s3cret').toString('base64'));
  });

  it('fails as unauthorized, naming the image, when the token server rejects the credentials', async () => {
    const reg = bearerRegistry(registryRoutes(repos), { credentials: { user: 'alice', pass: 's3cret' } });
    const s = await serve(reg.handler);
    const err = await rejection(client(s, { username: 'alice', password: 'wrong' }).getManifest('library/alpine', '3.20'));
    expect(err.kind).toBe('unauthorized');
    expect(err.status).toBe(401);
    expect(err.message).toMatch(new RegExp(`^docker://${s.host}/library/alpine:3\\.20: token server .* rejected the credentials \\(401\\)$`));
  });

  it('fetches a new token once the cached one has expired', async () => {
    // expires_in 1 s: the renewal margin makes it stale after half of that.
    const reg = bearerRegistry(registryRoutes(repos), { expiresIn: 1 });
    const s = await serve(reg.handler);
    const c = client(s);
    await c.headManifest('library/alpine', '3.20');
    await c.headManifest('library/alpine', '3.20');
    expect(reg.tokenRequests).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 600));
    await c.headManifest('library/alpine', '3.20');
    expect(reg.tokenRequests).toHaveLength(2);
  });

  it('retries once with a fresh token when the registry rejects a cached one', async () => {
    const reg = bearerRegistry(registryRoutes(repos), { expiresIn: 300 });
    let revoked = false;
    const s = await serve((req, res) => {
      if (revoked && req.headers.authorization === 'Bearer tok-1') {
        return sendError(res, 401, 'UNAUTHORIZED', 'token revoked', {
          'WWW-Authenticate': `Bearer realm="http://${req.headers.host}/token",service="fake-registry",error="invalid_token"`,
        });
      }
      return reg.handler(req, res);
    });
    const c = client(s);
    await c.listTags('library/alpine');
    revoked = true;
    expect(await c.listTags('library/alpine')).toEqual(['3.20', 'latest']);
    expect(reg.tokenRequests).toHaveLength(2);
    expect(s.requests.at(-1)!.headers.authorization).toBe('Bearer tok-2');
  });
});

describe('basic auth', () => {
  const guard =
    (routes: Handler): Handler =>
    (req, res) => {
      if (req.headers.authorization !== 'Basic ' + Buffer.from('bob:pw').toString('base64')) {
        return sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'WWW-Authenticate': 'Basic realm="Registry Realm"' });
      }
      return routes(req, res);
    };

  it('answers a Basic challenge with the credentials, then sends them up front', async () => {
    const s = await serve(guard(registryRoutes(repos)));
    const c = client(s, { username: 'bob', password: 'pw' });
    expect(await c.listTags('library/alpine')).toEqual(['3.20', 'latest']);
    const m = await c.getManifest('library/alpine', '3.20');
    expect(m.digest).toBe(img.manifestDigest);
    expect(api(s).map((r) => [r.url, r.headers.authorization ? 'auth' : 'anon'])).toEqual([
      ['/v2/library/alpine/tags/list?n=1000', 'anon'],
      ['/v2/library/alpine/tags/list?n=1000', 'auth'],
      ['/v2/library/alpine/manifests/3.20', 'auth'],
    ]);
  });

  it('is unauthorized without credentials, and with wrong ones after a single retry', async () => {
    const s = await serve(guard(registryRoutes(repos)));
    const anon = await rejection(client(s).getManifest('library/alpine', '3.20'));
    expect(anon.kind).toBe('unauthorized');
    expect(anon.message).toBe(`docker://${s.host}/library/alpine:3.20: authentication required (401)`);
    const before = api(s).length;
    const wrong = await rejection(client(s, { username: 'bob', password: 'nope' }).getManifest('library/alpine', '3.20'));
    expect(wrong.kind).toBe('unauthorized');
    // Not "authentication required" alone: credentials were configured, and they are what is wrong.
    expect(wrong.message).toBe(`docker://${s.host}/library/alpine:3.20: registry rejected the credentials of user bob: authentication required (401)`);
    expect(api(s).length - before).toBe(2);
  });
});

describe('tag listing', () => {
  it('follows Link pagination over 3 pages, relative and absolute', async () => {
    const s = await serve((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const last = url.searchParams.get('last');
      if (!last) {
        return sendJson(res, 200, { name: 'r/x', tags: ['a', 'b'] }, { Link: '</v2/r/x/tags/list?n=1000&last=b>; rel="next"' });
      }
      if (last === 'b') {
        // Absolute, and naming a host we must not send our credentials to: only its path is used.
        return sendJson(res, 200, { name: 'r/x', tags: ['c', 'd'] }, { Link: '<http://internal.invalid:9999/v2/r/x/tags/list?n=1000&last=d>; rel="next"' });
      }
      return sendJson(res, 200, { name: 'r/x', tags: ['e'] });
    });
    expect(await client(s).listTags('r/x')).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(s.requests.filter((r) => r.url.startsWith('/v2/r/')).map((r) => r.url)).toEqual([
      '/v2/r/x/tags/list?n=1000',
      '/v2/r/x/tags/list?n=1000&last=b',
      '/v2/r/x/tags/list?n=1000&last=d',
    ]);
  });

  it('treats "tags": null as none and stops on a Link that loops', async () => {
    const s = await serve((_req, res) => sendJson(res, 200, { name: 'r', tags: null }, { Link: '</v2/r/tags/list?n=1000>; rel="next"' }));
    expect(await client(s).listTags('r')).toEqual([]);
    expect(count(s, (r) => r.url.startsWith('/v2/r/'))).toBe(1);
  });

  it('reads rel="next" among several links', () => {
    expect(nextLink('</a?last=1>; rel="prev", </v2/r/tags/list?last=z>; rel="next"', '/v2/r/tags/list?n=1')).toBe('/v2/r/tags/list?last=z');
    expect(nextLink('<?last=q>; rel=next', '/v2/r/tags/list?n=1')).toBe('/v2/r/tags/list?last=q');
    expect(nextLink('</x>; rel="prev"', '/v2/')).toBeUndefined();
    expect(nextLink('</x>; rel="nextpage"', '/v2/')).toBeUndefined();
    expect(nextLink('</y>; title="a"; rel="last next"', '/v2/')).toBe('/y');
    expect(nextLink(null, '/v2/')).toBeUndefined();
  });
});

describe('retries', () => {
  it('retries a 500 and then succeeds', async () => {
    let n = 0;
    const routes = registryRoutes(repos);
    const s = await serve((req, res) => (n++ === 0 ? sendError(res, 500, 'UNKNOWN', 'boom') : routes(req, res)));
    const m = await client(s).getManifest('library/alpine', '3.20');
    expect(m.digest).toBe(img.manifestDigest);
    expect(count(s, (r) => r.url === '/v2/library/alpine/manifests/3.20')).toBe(2);
  });

  it('gives up after the configured retries with kind unavailable', async () => {
    const s = await serve((_req, res) => sendError(res, 503, 'UNAVAILABLE', 'service unavailable'));
    const err = await rejection(client(s, { retries: 2 }).headManifest('library/alpine', '3.20'));
    expect(err.kind).toBe('unavailable');
    expect(err.status).toBe(503);
    expect(err.message).toBe(`docker://${s.host}/library/alpine:3.20: registry unavailable (503)`);
    expect(count(s, (r) => r.url.includes('/manifests/'))).toBe(3);
  });

  it('honours Retry-After on 429, then succeeds', async () => {
    let n = 0;
    const routes = registryRoutes(repos);
    const s = await serve((req, res) =>
      n++ === 0 ? sendError(res, 429, 'TOOMANYREQUESTS', 'slow down', { 'Retry-After': '1' }) : routes(req, res),
    );
    const t0 = Date.now();
    expect(await client(s).listTags('library/alpine')).toEqual(['3.20', 'latest']);
    const elapsed = Date.now() - t0;
    // retryBaseMs is 1: only the Retry-After explains a wait of a second.
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(5000);
  });

  it('turns a 429 that outlasts the retries into too-many-requests with retryAfter', async () => {
    const s = await serve((_req, res) => sendError(res, 429, 'TOOMANYREQUESTS', 'pull rate limit exceeded', { 'Retry-After': '0' }));
    const err = await rejection(client(s, { retries: 1 }).getManifest('library/alpine', '3.20'));
    expect(err.kind).toBe('too-many-requests');
    expect(err.retryAfter).toBe('0');
    expect(err.message).toBe(`docker://${s.host}/library/alpine:3.20: pull rate limit exceeded (429)`);
    expect(s.requests.filter((r) => r.url.includes('/manifests/'))).toHaveLength(2);
  });

  it('retries a connection reset by the server', async () => {
    let n = 0;
    const routes = registryRoutes(repos);
    const s = await serve((req, res) => {
      if (n++ === 0) return void req.socket.destroy();
      return routes(req, res);
    });
    expect(await client(s).listTags('library/alpine')).toEqual(['3.20', 'latest']);
    expect(count(s, (r) => r.url.includes('/tags/'))).toBe(2);
  });

  it('reports kind network once a refused connection outlasts the retries', async () => {
    const s = await serve(() => {});
    const host = s.host;
    await servers.pop()!.close();
    const err = await rejection(createRegistryClient({ registry: host, tlsVerify: false, retries: 1, retryBaseMs: 1 }).ping());
    expect(err.kind).toBe('network');
    expect(err.message).toContain(`docker://${host}: cannot reach registry`);
  });
});

describe('errors name the repository and reference', () => {
  it('404 on a manifest, a blob and a repository', async () => {
    const s = await serve(registryRoutes(repos));
    const c = client(s);
    const m = await rejection(c.getManifest('library/alpine', '3.21'));
    expect(m.kind).toBe('not-found');
    expect(m.message).toBe(`docker://${s.host}/library/alpine:3.21: manifest unknown (404)`);
    const h = await rejection(c.headManifest('library/alpine', '3.21'));
    expect(h.message).toBe(`docker://${s.host}/library/alpine:3.21: manifest unknown (404)`);
    const missing = sha256Digest('nope');
    const b = await rejection(c.getBlob('library/alpine', missing));
    expect(b.kind).toBe('not-found');
    expect(b.message).toBe(`docker://${s.host}/library/alpine@${missing}: blob unknown to registry (404)`);
    const t = await rejection(c.listTags('library/nothing'));
    expect(t.message).toBe(`docker://${s.host}/library/nothing: repository name not known to registry (404)`);
    expect(t.repository).toBe('library/nothing');
  });

  it('403 is denied and 401 without a challenge is unauthorized', async () => {
    const s = await serve((req, res) =>
      req.url?.includes('private')
        ? sendError(res, 403, 'DENIED', 'requested access to the resource is denied')
        : sendError(res, 401, 'UNAUTHORIZED', 'authentication required'),
    );
    const c = client(s);
    const d = await rejection(c.getManifest('acme/private', 'v1'));
    expect(d.kind).toBe('denied');
    expect(d.status).toBe(403);
    expect(d.reference).toBe('v1');
    expect(d.message).toBe(`docker://${s.host}/acme/private:v1: requested access to the resource is denied (403)`);
    const u = await rejection(c.headManifest('acme/app', 'v2'));
    expect(u.kind).toBe('unauthorized');
    expect(u.message).toBe(`docker://${s.host}/acme/app:v2: authentication required (401)`);
  });

  it('refuses malformed names and references without a request', async () => {
    const s = await serve(registryRoutes(repos));
    const c = client(s);
    expect((await rejection(c.getManifest('../etc', 'x'))).kind).toBe('invalid');
    expect((await rejection(c.getManifest('library/alpine', 'a/../../b'))).kind).toBe('invalid');
    expect((await rejection(c.getBlob('library/alpine', 'latest'))).kind).toBe('invalid');
    expect(api(s)).toHaveLength(0);
  });
});

describe('manifests', () => {
  it('rejects content that does not hash to the requested digest, naming both', async () => {
    const other = fakeImage('evil');
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'Content-Type': MediaType.ociManifest });
      res.end(other.manifest);
    });
    const err = await rejection(client(s).getManifest('library/alpine', img.manifestDigest));
    expect(err.kind).toBe('invalid');
    expect(err.message).toBe(
      `docker://${s.host}/library/alpine@${img.manifestDigest}: manifest digest mismatch: requested digest is ${img.manifestDigest} but the content hashes to ${other.manifestDigest}`,
    );
  });

  it('rejects content that does not match Docker-Content-Digest', async () => {
    const s = await serve((_req, res) => {
      res.writeHead(200, { 'Content-Type': MediaType.ociManifest, 'Docker-Content-Digest': img.manifestDigest });
      res.end(Buffer.concat([img.manifest, Buffer.from(' ')]));
    });
    const err = await rejection(client(s).getManifest('library/alpine', '3.20'));
    expect(err.kind).toBe('invalid');
    expect(err.message).toContain(`docker://${s.host}/library/alpine:3.20: manifest digest mismatch: Docker-Content-Digest is ${img.manifestDigest}`);
  });

  it('takes the media type from Content-Type without parameters, else from the manifest', async () => {
    const s = await serve((req, res) => {
      const ct = req.url?.endsWith('/a') ? `${MediaType.dockerManifest}; charset=utf-8` : 'application/json';
      res.writeHead(200, { 'Content-Type': ct });
      res.end(img.manifest);
    });
    const c = client(s);
    const a = await c.getManifest('r', 'a');
    expect(a.mediaType).toBe(MediaType.dockerManifest);
    expect(a.digest).toBe(img.manifestDigest);
    expect((await c.getManifest('r', 'b')).mediaType).toBe(MediaType.ociManifest);
    const first = api(s)[0]!;
    expect(first.headers.accept).toContain(MediaType.ociIndex);
    expect(first.headers.accept).toContain(MediaType.dockerManifestList);
    expect(first.headers['user-agent']).toBe('derrick/0.1');
  });

  it('HEAD gives digest, type and size, and leaves the digest out when the registry does', async () => {
    const withDigest = await serve(registryRoutes(repos));
    const h = await client(withDigest).headManifest('library/alpine', '3.20');
    expect(h).toEqual({ digest: img.manifestDigest, mediaType: MediaType.ociManifest, size: img.manifest.length });
    expect(api(withDigest)[0]!.method).toBe('HEAD');
    const without = await serve(registryRoutes(repos, { contentDigest: false }));
    expect((await client(without).headManifest('library/alpine', '3.20')).digest).toBeUndefined();
    expect((await client(without).headManifest('library/alpine', img.manifestDigest)).digest).toBe(img.manifestDigest);
  });
});

describe('blobs', () => {
  it('streams a blob and reports its size; HEAD reports size and digest', async () => {
    const s = await serve(registryRoutes(repos));
    const c = client(s);
    const b = await c.getBlob('library/alpine', img.layerDigest);
    expect(b.size).toBe(img.layer.length);
    expect(b.body).toBeInstanceOf(Readable);
    expect(await text(b.body)).toBe(img.layer.toString());
    expect(await c.headBlob('library/alpine', img.configDigest)).toEqual({ size: img.config.length, digest: img.configDigest });
  });

  it('follows a redirect to another host without sending it the registry credentials', async () => {
    const cdn = await serve((_req, res) => {
      res.writeHead(200, { 'Content-Length': String(img.layer.length) });
      res.end(img.layer);
    });
    const reg = bearerRegistry((req, res) => {
      res.writeHead(307, { Location: `http://localhost:${cdn.host.split(':')[1]}/bucket/obj?sig=abc` });
      res.end();
    });
    const s = await serve(reg.handler);
    const b = await client(s, { extraHeaders: { 'X-Registry-Secret': 'k' } }).getBlob('library/alpine', img.layerDigest);
    expect(await text(b.body)).toBe(img.layer.toString());
    expect(cdn.requests).toHaveLength(1);
    expect(cdn.requests[0]!.url).toBe('/bucket/obj?sig=abc');
    expect(cdn.requests[0]!.headers.authorization).toBeUndefined();
    expect(cdn.requests[0]!.headers['x-registry-secret']).toBeUndefined();
    expect(s.requests.at(-1)!.headers.authorization).toBe('Bearer tok-1');
    expect(s.requests.at(-1)!.headers['x-registry-secret']).toBe('k');
  });

  it('holds a concurrency slot until the blob body is consumed', async () => {
    const s = await serve(registryRoutes(repos));
    const c = client(s, { concurrency: 1 });
    const b = await c.getBlob('library/alpine', img.layerDigest);
    let pinged = false;
    const ping = c.ping().then(() => (pinged = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(pinged).toBe(false);
    expect(count(s, (r) => r.url === '/v2/')).toBe(1); // getBlob's own scheme probe; the ping waits
    await text(b.body);
    await ping;
    expect(count(s, (r) => r.url === '/v2/')).toBe(2);
  });

  it('gives the slot back when the consumer destroys the stream', async () => {
    const s = await serve(registryRoutes(repos));
    const c = client(s, { concurrency: 1 });
    const b = await c.getBlob('library/alpine', img.layerDigest);
    b.body.destroy();
    await c.ping();
  });
});

describe('scheme', () => {
  it('tlsVerify=false falls back to plain http quickly and remembers it', async () => {
    const s = await serve(registryRoutes(repos));
    const c = createRegistryClient({ registry: s.host, tlsVerify: false });
    const t0 = Date.now();
    await c.ping();
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await c.listTags('library/alpine')).toEqual(['3.20', 'latest']);
    // One probe plus the ping itself: the https attempt never reached the http server as a request.
    expect(s.requests.map((r) => r.url)).toEqual(['/v2/', '/v2/', '/v2/library/alpine/tags/list?n=1000']);
  });

  it('tlsVerify=false speaks https to a registry with a self-signed certificate', async () => {
    const s = await serve(registryRoutes(repos), TLS);
    const c = createRegistryClient({ registry: s.host, tlsVerify: false, retryBaseMs: 1 });
    const m = await c.getManifest('library/alpine', '3.20');
    expect(m.digest).toBe(img.manifestDigest);
    expect(s.requests.map((r) => r.url)).toEqual(['/v2/', '/v2/library/alpine/manifests/3.20']);
  });

  it('tlsVerify=true refuses the self-signed certificate and never tries http', async () => {
    const tls = await serve(registryRoutes(repos), TLS);
    const err = await rejection(createRegistryClient({ registry: tls.host, retries: 0 }).ping());
    expect(err.kind).toBe('network');
    expect(err.message).toMatch(/certificate/i);
    expect(tls.requests).toHaveLength(0);

    const plain = await serve(registryRoutes(repos));
    const err2 = await rejection(createRegistryClient({ registry: plain.host, retries: 0 }).ping());
    expect(err2.kind).toBe('network');
    expect(plain.requests).toHaveLength(0);
  });
});

// Keep the type import used: handlers receive node's request objects.
export type _Req = http.IncomingMessage;
