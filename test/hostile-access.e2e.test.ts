// A hostile corpus for the one access decision (issue 9, design invariant 8), against real
// `derrick serve` processes on a tree published by the real CLI: one public repo, one protected
// repo (with a replaced, older master still on disk) and the master of an unpublished repo.
// Every path x method x credential (or signature) variant, with signing off and on, and embedded
// blobs. Each case asserts the exact status and error code, and that nothing protected (content
// bytes, digests, the protected tag name) reaches a request that isn't entitled to it. After each
// phase a hash of the published tree shows nothing changed.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex } from '../shared/oci.js';
import { layout, repoKey } from '../shared/layout.js';
import { signPath } from '../shared/signing.js';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { CLI, derrick, type ServeProcess } from './helpers/derrick.js';
import { freePort } from './helpers/ports.js';
import { startProcess, waitForHttp } from './helpers/proc.js';
import { hashTree, hostileRequest, runHostileCase, type HostileCase, type Secrets } from './helpers/hostile.js';
import { makeHtpasswd } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const SECRET_ENV = 'DERRICK_HOSTILE_SECRET';
const SECRET = 'hostile-corpus-secret';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const b64 = (s: string) => Buffer.from(s).toString('base64');

/** Credential variants: the valid ones are entitled to protected content. */
const CREDS: Record<string, { headers: Record<string, string>; valid: boolean }> = {
  none: { headers: {}, valid: false },
  wrong: { headers: { Authorization: `Basic ${b64('alice:wrong')}` }, valid: false },
  'unknown user': { headers: { Authorization: `Basic ${b64('mallory:s3cret')}` }, valid: false },
  'empty user': { headers: { Authorization: `Basic ${b64(':')}` }, valid: false },
  'malformed base64': { headers: { Authorization: 'Basic %%%not-base64%%%' }, valid: false },
  'no colon': { headers: { Authorization: `Basic ${b64('alices3cret')}` }, valid: false },
  bearer: { headers: { Authorization: `Bearer ${b64('alice:s3cret')}` }, valid: false },
  right: { headers: { Authorization: `Basic ${b64('alice:s3cret')}` }, valid: true },
  'lower-case scheme': { headers: { Authorization: `basic ${b64('alice:s3cret')}` }, valid: true },
  'upper-case scheme': { headers: { Authorization: `BASIC ${b64('alice:s3cret')}` }, valid: true },
};
const FILE_CREDS = ['none', 'wrong', 'malformed base64', 'right', 'lower-case scheme'];

interface RepoFacts {
  name: string;
  key: string;
  tag: string;
  image: GeneratedImage;
  manifest: string;
  layer: string;
  config: string;
  /** master/<key>/<ts>/ of the current publish. */
  master: string;
}

interface Ctx {
  pub: RepoFacts;
  priv: RepoFacts;
  /** The protected repo's replaced master, still on disk. */
  privOld: string;
  /** The master of a public repo that was unpublished (app and web links gone). */
  gone: string;
}

let tmp: TmpDir;
let ctx: Ctx;
let secrets: Secrets;
let publishedDir: string;
let treeHash: string;
let open: ServeProcess;
let signed: ServeProcess;
let closed: ServeProcess;

async function mastersOf(root: string, name: string): Promise<string[]> {
  const dir = layout(root).masterDir(name);
  return (await fs.readdir(dir)).filter((n) => !n.startsWith('.')).sort().map((ts) => `master/${repoKey(name)}/${ts}/`);
}

beforeAll(async () => {
  tmp = await tmpDir('derrick-hostile');
  const dir = tmp.dir;
  const img = (n: string) => path.join(dir, 'images', n);
  const pubImg = await generateImage({ layoutDir: img('pub'), tag: 'v1', layers: [4096, 700] });
  const privImg = await generateImage({ layoutDir: img('priv'), tag: 'hushtag', layers: [60_000, 3000] });
  await generateImage({ layoutDir: img('gone'), tag: 'v1', seed: 'gone', layers: [500] });
  await fs.writeFile(path.join(dir, 'htpasswd'), makeHtpasswd('alice', 's3cret') + '\n');
  const repos = ['repos:', `  - name: pub/app`, `    from: oci:${img('pub')}`, `  - name: priv/app`, `    from: oci:${img('priv')}`, '    protected: true'];
  const gone = [`  - name: gone/app`, `    from: oci:${img('gone')}`];
  const write = (file: string, lines: string[]) => fs.writeFile(path.join(dir, file), ['root: ./var', 'keep: 2', 'grace: 10m', ...lines, ''].join('\n'));
  await write('publish.yaml', [...repos, ...gone]);
  let r = await derrick(['publish', '-c', path.join(dir, 'publish.yaml')]);
  expect(r.code, r.stderr).toBe(0);
  // Replace the protected repo's publish: its first master stays on disk (keep: 2).
  const privImg2 = await generateImage({ layoutDir: img('priv'), tag: 'hushtag2', layers: [2000] });
  r = await derrick(['publish', '-c', path.join(dir, 'publish.yaml'), 'priv/app']);
  expect(r.code, r.stderr).toBe(0);
  // Unpublish gone/app the way an operator would: its links go, its master stays for `grace`.
  const root = path.join(dir, 'var');
  const l = layout(root);
  await fs.rm(l.app('gone/app'));
  await fs.rm(l.web('gone/app'));
  publishedDir = l.publishedDir;

  const facts = async (name: string, tag: string, image: GeneratedImage): Promise<RepoFacts> => {
    const m = image.manifests[0]!;
    const masters = await mastersOf(root, name);
    return { name, key: repoKey(name), tag, image, manifest: m.digest, config: m.config, layer: m.layers[0]!, master: masters[masters.length - 1]! };
  };
  const privMasters = await mastersOf(root, 'priv/app');
  expect(privMasters).toHaveLength(2);
  ctx = {
    pub: await facts('pub/app', 'v1', pubImg),
    priv: await facts('priv/app', 'hushtag', privImg),
    privOld: privMasters[0]!,
    gone: (await mastersOf(root, 'gone/app'))[0]!,
  };

  // Everything protected: digests (hex) and content of both protected images, and the tag names.
  const privDigests = [...new Set([privImg.digest, ...privImg.blobs, privImg2.digest, ...privImg2.blobs])];
  // Layer bytes are (compressed, seeded) noise, so a slice of each is unique to it; manifests and
  // configs are JSON that shares most of its text with the public image's, so they are caught by
  // their digests (every manifest names its config and layers) and the tag names instead.
  const layers = [...privImg.manifests, ...privImg2.manifests].flatMap((m) => m.layers);
  const chunks: Buffer[] = [];
  for (const d of new Set(layers)) {
    const bytes = await fs.readFile(l.storeBlob(d));
    chunks.push(bytes.subarray(bytes.length >> 1, (bytes.length >> 1) + 32));
  }
  secrets = { strings: ['hushtag', ...privDigests.map(digestHex)], chunks };
  expect(chunks.length).toBeGreaterThanOrEqual(3);

  await write('open.yaml', [...repos, 'serve:', '  htpasswd: ./htpasswd']);
  await write('signed.yaml', [...repos, 'serve:', '  htpasswd: ./htpasswd', '  signing:', `    secret-env: ${SECRET_ENV}`, '    ttl: 5m']);
  await write('closed.yaml', [...repos, 'serve:', '  htpasswd: ./htpasswd', '  anonymous: false']);
  treeHash = await hashTree(publishedDir);
  [open, signed, closed] = await Promise.all([
    serveOn(path.join(dir, 'open.yaml')),
    serveOn(path.join(dir, 'signed.yaml'), { [SECRET_ENV]: SECRET }),
    serveOn(path.join(dir, 'closed.yaml')),
  ]);
}, 240_000);

/** derrick serve on a free port; patient, since the machine running the tests may be busy. */
async function serveOn(file: string, env: Record<string, string> = {}): Promise<ServeProcess> {
  const port = await freePort();
  const proc = startProcess(process.execPath, [CLI, 'serve', '-c', file, '--listen', `127.0.0.1:${port}`], { env });
  await waitForHttp(`http://127.0.0.1:${port}/v2/`, 60_000, { proc }).catch(async (err) => {
    await proc.stop();
    throw err;
  });
  return { url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, proc, stop: () => proc.stop() };
}

afterAll(async () => {
  await Promise.all([open?.stop(), signed?.stop(), closed?.stop()]);
  await tmp?.cleanup();
});

/** A case whose path is known only once the tree exists. */
type LazyCase = Omit<HostileCase, 'path'> & { path: (c: Ctx) => string };

const V2_ENDPOINTS: Array<{ what: string; method?: string; path: (r: RepoFacts) => string; ok: number; headers?: Record<string, string> }> = [
  { what: 'manifest by tag', path: (r) => `/v2/${r.name}/manifests/${r.tag}`, ok: 200, headers: { Accept: OCI_MANIFEST } },
  { what: 'manifest by tag HEAD', method: 'HEAD', path: (r) => `/v2/${r.name}/manifests/${r.tag}`, ok: 200, headers: { Accept: OCI_MANIFEST } },
  { what: 'manifest by digest', path: (r) => `/v2/${r.name}/manifests/${r.manifest}`, ok: 200, headers: { Accept: OCI_MANIFEST } },
  { what: 'layer blob', path: (r) => `/v2/${r.name}/blobs/${r.layer}`, ok: 307 },
  { what: 'config blob HEAD', method: 'HEAD', path: (r) => `/v2/${r.name}/blobs/${r.config}`, ok: 307 },
  { what: 'tags/list', path: (r) => `/v2/${r.name}/tags/list`, ok: 200 },
  { what: 'referrers', path: (r) => `/v2/${r.name}/referrers/${r.manifest}`, ok: 200 },
];

function v2Cases(): LazyCase[] {
  const out: LazyCase[] = [];
  const endpoints = V2_ENDPOINTS;
  for (const repo of ['pub', 'priv'] as const) {
    for (const e of endpoints) {
      for (const [cred, c] of Object.entries(CREDS)) {
        const granted = repo === 'pub' || c.valid;
        out.push({
          name: `v2 ${repo} ${e.what}, credentials ${cred}`,
          method: e.method,
          path: (x) => e.path(x[repo]),
          headers: { ...e.headers, ...c.headers },
          status: granted ? e.ok : 401,
          code: granted ? undefined : 'UNAUTHORIZED',
          entitled: repo === 'priv' && c.valid,
        });
      }
    }
  }
  for (const [cred, c] of Object.entries(CREDS)) {
    const sent = cred !== 'none';
    out.push({
      name: `v2 _catalog, credentials ${cred}`,
      path: () => '/v2/_catalog',
      headers: c.headers,
      status: c.valid || !sent ? 200 : 401,
      code: c.valid || !sent ? undefined : 'UNAUTHORIZED',
      entitled: c.valid,
      check: (r) => {
        if (r.status !== 200) return;
        const names = (JSON.parse(r.text) as { repositories: string[] }).repositories;
        expect(names).toEqual(c.valid ? ['priv/app', 'pub/app'] : ['pub/app']);
      },
    });
    out.push({ name: `v2 base, credentials ${cred}`, path: () => '/v2/', headers: c.headers, status: c.valid || !sent ? 200 : 401, code: c.valid || !sent ? undefined : 'UNAUTHORIZED' });
  }
  // Names that don't exist (or no longer do) answer an anonymous caller like a protected one.
  for (const [what, p] of [
    ['unknown name manifest', '/v2/no/such/manifests/v1'],
    ['unknown name blob', `/v2/no/such/blobs/sha256:${'a'.repeat(64)}`],
    ['unknown name tags', '/v2/no/such/tags/list'],
    ['unpublished repo manifest', '/v2/gone/app/manifests/v1'],
    ['unpublished repo tags', '/v2/gone/app/tags/list'],
  ] as const) {
    out.push({ name: `v2 ${what}, credentials none`, path: () => p, status: 401, code: 'UNAUTHORIZED' });
    out.push({ name: `v2 ${what}, credentials right`, path: () => p, headers: CREDS.right!.headers, status: 404, code: 'NAME_UNKNOWN' });
  }
  // A protected digest asked for under the public name: unknown there, and nothing of it comes back.
  for (const cred of ['none', 'right']) {
    for (const what of ['layer', 'manifest'] as const) {
      out.push({
        name: `v2 pub blobs/<protected ${what}>, credentials ${cred}`,
        path: (x) => `/v2/pub/app/blobs/${x.priv[what]}`,
        headers: CREDS[cred]!.headers,
        status: 404,
        code: 'BLOB_UNKNOWN',
        check: (r) => expect(r.body.includes(secrets.chunks[0]!)).toBe(false),
        entitled: true, // the reply echoes the digest the client sent; content is checked above
      });
      out.push({
        name: `v2 pub manifests/<protected ${what}>, credentials ${cred}`,
        path: (x) => `/v2/pub/app/manifests/${x.priv[what]}`,
        headers: CREDS[cred]!.headers,
        status: 404,
        code: 'MANIFEST_UNKNOWN',
        entitled: true,
      });
    }
  }
  out.push({ name: 'v2 pub manifests/<protected tag>', path: () => '/v2/pub/app/manifests/hushtag', status: 404, code: 'MANIFEST_UNKNOWN', entitled: true });
  // Writes: refused before anything is looked at.
  for (const method of ['PUT', 'DELETE', 'PATCH']) {
    out.push({ name: `v2 ${method} priv manifest, credentials none`, method, path: (x) => `/v2/priv/app/manifests/${x.priv.tag}`, status: 401, code: 'UNAUTHORIZED' });
    out.push({ name: `v2 ${method} priv manifest, credentials right`, method, path: (x) => `/v2/priv/app/manifests/${x.priv.tag}`, headers: CREDS.right!.headers, status: 405, code: 'UNSUPPORTED', entitled: true });
    out.push({ name: `v2 ${method} pub manifest`, method, path: (x) => `/v2/pub/app/manifests/${x.pub.tag}`, status: 405, code: 'UNSUPPORTED' });
  }
  return out;
}

/** Published files of each repo: [label, path under /published/, served (not an internal file)]. */
function filePaths(): Array<{ repo: 'pub' | 'priv' | 'privOld' | 'gone'; what: string; path: (c: Ctx) => string; served: boolean }> {
  const of = (repo: 'pub' | 'priv') => [
    { repo, what: 'master blob', path: (c: Ctx) => `${c[repo].master}blobs/${c[repo].layer}`, served: true },
    { repo, what: 'master manifest by digest', path: (c: Ctx) => `${c[repo].master}manifests/oci/${c[repo].manifest}`, served: true },
    { repo, what: 'master manifest by tag', path: (c: Ctx) => `${c[repo].master}manifests/oci/${c[repo].tag}`, served: true },
    { repo, what: 'master tags/list', path: (c: Ctx) => `${c[repo].master}tags/list`, served: true },
    { repo, what: 'master redirect.json', path: (c: Ctx) => `${c[repo].master}redirect.json`, served: false },
    { repo, what: 'master redirect.idx', path: (c: Ctx) => `${c[repo].master}redirect.idx`, served: false },
    { repo, what: 'web redirect.idx', path: (c: Ctx) => `web/${c[repo].key}/redirect.idx`, served: false },
    { repo, what: 'web blob', path: (c: Ctx) => `web/${c[repo].key}/blobs/${c[repo].layer}`, served: true },
    { repo, what: 'web manifest by tag', path: (c: Ctx) => `web/${c[repo].key}/manifests/oci/${c[repo].tag}`, served: true },
    { repo, what: 'web tags/list', path: (c: Ctx) => `web/${c[repo].key}/tags/list`, served: true },
    { repo, what: 'app redirect file', path: (c: Ctx) => `app/${c[repo].key}.json`, served: false },
  ];
  return [
    ...of('pub'),
    ...of('priv'),
    { repo: 'privOld', what: 'replaced master tags/list', path: (c) => `${c.privOld}tags/list`, served: true },
    { repo: 'privOld', what: 'replaced master blob', path: (c) => `${c.privOld}blobs/${c.priv.layer}`, served: true },
    { repo: 'gone', what: 'unpublished master tags/list', path: (c) => `${c.gone}tags/list`, served: true },
    { repo: 'gone', what: 'app of unpublished repo', path: () => `app/${repoKey('gone/app')}.json`, served: false },
  ];
}

function openFileCases(): LazyCase[] {
  const out: LazyCase[] = [];
  for (const f of filePaths()) {
    for (const cred of FILE_CREDS) {
      const c = CREDS[cred]!;
      const guarded = f.repo !== 'pub';
      const granted = !guarded || c.valid;
      for (const method of ['GET', 'HEAD']) {
        if (method === 'HEAD' && cred !== 'none' && cred !== 'right') continue;
        out.push({
          name: `file ${method} ${f.repo} ${f.what}, credentials ${cred}`,
          method,
          path: (x) => `/published/${f.path(x)}`,
          headers: c.headers,
          // An internal file is 404 for everyone, whatever the credentials.
          status: !f.served ? 404 : granted ? 200 : 401,
          code: !f.served ? 'NAME_UNKNOWN' : granted ? undefined : 'UNAUTHORIZED',
          entitled: guarded && c.valid,
        });
      }
    }
  }
  return out;
}

type Sig = 'missing' | 'wrong secret' | 'expired' | 'other path' | 'right' | 'credentials, no signature';
const SIGS: Sig[] = ['missing', 'wrong secret', 'expired', 'other path', 'right', 'credentials, no signature'];

function signedUrl(uri: string, sig: Sig): string {
  const now = Math.floor(Date.now() / 1000);
  switch (sig) {
    case 'missing':
    case 'credentials, no signature':
      return uri;
    case 'wrong secret':
      return `${uri}?${signPath(uri, 'not-the-secret', now + 300)}`;
    case 'expired':
      return `${uri}?${signPath(uri, SECRET, now - 5)}`;
    case 'other path':
      return `${uri}?${signPath(`${uri}x`, SECRET, now + 300)}`;
    case 'right':
      return `${uri}?${signPath(uri, SECRET, now + 300)}`;
  }
}

function signedFileCases(): LazyCase[] {
  const out: LazyCase[] = [];
  for (const f of filePaths()) {
    for (const sig of SIGS) {
      const ok = sig === 'right';
      const isMaster = f.path(ctxShape).startsWith('master/');
      // Signing on: master/ always needs the signature; web/ only for a repo that needs proof.
      const needsSig = f.served && (isMaster || f.repo !== 'pub');
      const status = !f.served ? 404 : !needsSig || ok ? 200 : 403;
      out.push({
        name: `file signed ${f.repo} ${f.what}, signature ${sig}`,
        path: (x) => signedUrl(`/published/${f.path(x)}`, sig),
        headers: sig === 'credentials, no signature' ? CREDS.right!.headers : {},
        status,
        code: status === 404 ? 'NAME_UNKNOWN' : status === 403 ? 'DENIED' : undefined,
        entitled: ok && f.repo !== 'pub',
      });
    }
  }
  return out;
}

/** Only the shape matters to signedFileCases (which area a path is in), not real digests. */
const ctxShape: Ctx = (() => {
  const r = (name: string): RepoFacts => ({ name, key: repoKey(name), tag: 't', image: {} as GeneratedImage, manifest: 'm', layer: 'l', config: 'c', master: `master/${repoKey(name)}/ts/` });
  return { pub: r('pub/app'), priv: r('priv/app'), privOld: 'master/priv~app/old/', gone: 'master/gone~app/ts/' };
})();

const resolve = (c: LazyCase): HostileCase => ({ ...c, path: c.path(ctx) });

describe('hostile corpus, signing off (Basic credentials on every route)', () => {
  const cases = [...v2Cases(), ...openFileCases()];
  it.each(cases)('$name', async (c) => {
    expect(await runHostileCase(open.url, resolve(c), secrets)).toEqual([]);
  });

  it('a protected blob redirect is followed with credentials, and refused without them', async () => {
    const right = CREDS.right!.headers;
    const r = await hostileRequest(open.url, { path: `/v2/priv/app/blobs/${ctx.priv.layer}`, headers: right });
    expect(r.status).toBe(307);
    const location = r.headers.location!;
    expect(location).toContain(`/published/${ctx.priv.master}blobs/${ctx.priv.layer}`);
    const target = location.replace(/^https?:\/\/[^/]+/, '');
    expect((await hostileRequest(open.url, { path: target, headers: right })).status).toBe(200);
    const anon = await hostileRequest(open.url, { path: target });
    expect(anon.status).toBe(401);
    expect(anon.headers['www-authenticate']).toMatch(/^Basic realm="derrick"/);
  });

  it('leaves the published tree unchanged', async () => {
    expect(await hashTree(publishedDir)).toBe(treeHash);
  });
});

describe('hostile corpus, signing on (the signature is the proof for files)', () => {
  const cases = [...v2Cases(), ...signedFileCases()];
  it.each(cases)('$name', async (c) => {
    expect(await runHostileCase(signed.url, resolve(c), secrets)).toEqual([]);
  });

  it('a protected blob redirect carries a signature that works without credentials', async () => {
    const r = await hostileRequest(signed.url, { path: `/v2/priv/app/blobs/${ctx.priv.layer}`, headers: CREDS.right!.headers });
    expect(r.status).toBe(307);
    const target = r.headers.location!.replace(/^https?:\/\/[^/]+/, '');
    expect(target).toMatch(/\?md5=[A-Za-z0-9_-]+&expires=\d+$/);
    const got = await hostileRequest(signed.url, { path: target });
    expect(got.status).toBe(200);
    expect(got.body.includes(secrets.chunks[0]!) || got.body.length > 0).toBe(true);
    expect((await hostileRequest(signed.url, { path: target.split('?')[0]! })).status).toBe(403);
  });

  it('leaves the published tree unchanged', async () => {
    expect(await hashTree(publishedDir)).toBe(treeHash);
  });
});

describe('hostile corpus, serve.anonymous false (every repo needs credentials)', () => {
  const cases: LazyCase[] = [];
  for (const repo of ['pub', 'priv'] as const) {
    for (const e of V2_ENDPOINTS) {
      for (const cred of ['none', 'wrong', 'malformed base64', 'right', 'lower-case scheme']) {
        const c = CREDS[cred]!;
        cases.push({
          name: `v2 ${repo} ${e.what}, credentials ${cred}`,
          method: e.method,
          path: (x) => e.path(x[repo]),
          headers: { ...e.headers, ...c.headers },
          status: c.valid ? e.ok : 401,
          code: c.valid ? undefined : 'UNAUTHORIZED',
          entitled: c.valid,
        });
      }
    }
  }
  for (const f of filePaths()) {
    for (const cred of ['none', 'wrong', 'right']) {
      const c = CREDS[cred]!;
      const status = !f.served ? 404 : c.valid ? 200 : 401;
      cases.push({ name: `file ${f.repo} ${f.what}, credentials ${cred}`, path: (x) => `/published/${f.path(x)}`, headers: c.headers, status, code: status === 404 ? 'NAME_UNKNOWN' : status === 401 ? 'UNAUTHORIZED' : undefined, entitled: c.valid });
    }
  }
  for (const [what, p] of [['base', '/v2/'], ['_catalog', '/v2/_catalog']] as const) {
    cases.push({ name: `v2 ${what}, credentials none`, path: () => p, status: 401, code: 'UNAUTHORIZED' });
    cases.push({ name: `v2 ${what}, credentials right`, path: () => p, headers: CREDS.right!.headers, status: 200, entitled: true });
  }
  it.each(cases)('$name', async (c) => {
    expect(await runHostileCase(closed.url, resolve(c), secrets)).toEqual([]);
  });

  it('leaves the published tree unchanged', async () => {
    expect(await hashTree(publishedDir)).toBe(treeHash);
  });
});
