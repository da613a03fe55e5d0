// Upstream auth against a real docker-registry (issue 12, item 6): one registry with `auth: token`
// fed by our own token issuer (test/helpers/token-issuer.ts, per-repository grants, ES256 JWTs),
// one with `auth: htpasswd`. Against both, `derrick publish` and the pull-through cache use the
// credentials of derrick.yaml and nothing else: a header-recording proxy in front of each registry
// sees every Authorization header derrick sends, and the issuer sees every token request.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { derrick } from './helpers/derrick.js';
import { requireTool, run } from './helpers/proc.js';
import {
  errorCode,
  errorMessage,
  getManifest,
  pollUntil,
  sleep,
  startHeaderProxy,
  startPtServe,
  waitForCommit,
  type HeaderProxy,
  type PtServe,
} from './helpers/pull-through.js';
import { startRegistry, writeHtpasswd, type Registry } from './helpers/registry.js';
import { SKOPEO_BIN, skopeoCopy } from './helpers/skopeo.js';
import { startTokenIssuer, type TokenIssuer } from './helpers/token-issuer.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { assertNoDebris, checkTree, masters } from './helpers/tree.js';

const hasTools = ['docker-registry', 'skopeo', 'openssl'].every((t) => requireTool(t, 'upstream auth e2e tests are skipped'));

const USERS = { pusher: 'push-pw', alice: 'alice-pw', bob: 'bob-pw' };
/** Token grants: alice may pull priv/a only; bob every priv/ repo derrick mirrors. */
const GRANTS = { pusher: { '*': ['pull', 'push'] }, alice: { 'priv/a': ['pull'] }, bob: { 'priv/a': ['pull'], 'priv/b': ['pull'] } };
/** The client's own account at derrick (serve.htpasswd): never to be seen upstream. */
const CLIENT = { user: 'carol', pass: 'carol-pw' };
const SCOPE_A = 'repository:priv/a:pull';
const SCOPE_B = 'repository:priv/b:pull';

interface Images {
  a1: GeneratedImage;
  a2: GeneratedImage;
  b1: GeneratedImage;
  layout: string;
}

/** One layout holding priv/a:v1, priv/a:v2 and priv/b:v1 under the layout tags a1, a2, b1. */
async function makeImages(dir: string): Promise<Images> {
  const layout = path.join(dir, 'images');
  const a1 = await generateImage({ layoutDir: layout, tag: 'a1', layers: [40_000, 90_000] });
  const a2 = await generateImage({ layoutDir: layout, tag: 'a2', layers: [50_000] });
  const b1 = await generateImage({ layoutDir: layout, tag: 'b1', layers: [30_000] });
  return { a1, a2, b1, layout };
}

/** Pushes the three images with skopeo as `pusher` (a real client through the registry's own auth). */
async function seed(reg: Registry, img: Images): Promise<void> {
  const creds = [`--dest-creds=pusher:${USERS.pusher}`];
  await Promise.all([
    skopeoCopy(`oci:${img.layout}:a1`, `docker://${reg.host}/priv/a:v1`, creds),
    skopeoCopy(`oci:${img.layout}:a2`, `docker://${reg.host}/priv/a:v2`, creds),
    skopeoCopy(`oci:${img.layout}:b1`, `docker://${reg.host}/priv/b:v1`, creds),
  ]);
}

interface AuthedConfig {
  root: string;
  /** docker://<upstream>/priv/<x> mirrored as <prefix>/<x>, with `mirrorUser`'s credentials from MIRROR_PW. */
  mirrorUser: string;
  repoPrefix: string;
  repos: string[];
  /** host:port (or http://host:port for upstreams) that derrick talks to: the header proxy. */
  upstream: string;
  htpasswd: string;
}

/**
 * derrick.yaml with the project's own auth blocks: repos[] mirrored with MIRROR_PW, the pull-through
 * route `up` as alice (UP_PW) and `bad` as alice with BAD_PW (set wrong by the tests).
 */
function configYaml(c: AuthedConfig): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = [`root: ${q(c.root)}`, 'grace: 10m', 'repos:'];
  for (const r of c.repos) {
    lines.push(`  - name: ${c.repoPrefix}/${r}`, `    from: docker://${c.upstream}/priv/${r}`, '    tls-verify: false');
    lines.push(`    auth: { username: ${c.mirrorUser}, password-env: MIRROR_PW }`);
  }
  lines.push('upstreams:');
  for (const [prefix, env] of [['up', 'UP_PW'], ['bad', 'BAD_PW']] as const) {
    lines.push(`  - prefix: ${prefix}`, `    url: ${q(`http://${c.upstream}`)}`, '    tls-verify: false', '    tag-ttl: 1s');
    lines.push(`    auth: { username: alice, password-env: ${env} }`);
  }
  lines.push('serve:', '  listen: 127.0.0.1:0', `  htpasswd: ${q(c.htpasswd)}`);
  return lines.join('\n') + '\n';
}

/** Everyone an upstream request authenticated as: Basic users and the subjects of Bearer tokens. */
function identities(requests: HeaderProxy['requests'], issuer?: TokenIssuer): string[] {
  const seen = new Set<string>();
  for (const r of requests) {
    const h = r.headers.authorization;
    if (!h) continue;
    const basic = /^Basic\s+(\S+)/i.exec(h);
    if (basic) seen.add(`basic:${Buffer.from(basic[1]!, 'base64').toString('utf8').split(':')[0]}`);
    const bearer = /^Bearer\s+(\S+)/i.exec(h);
    if (bearer) seen.add(`bearer:${issuer?.subjectOf(bearer[1]!) ?? 'a token the issuer never signed'}`);
    if (!basic && !bearer) seen.add(`other:${h}`);
  }
  return [...seen].sort();
}

/** skopeo copy from derrick, optionally with the client's own credentials; the digest it wrote. */
async function skopeoPull(host: string, ref: string, out: string, creds?: { user: string; pass: string }): Promise<string> {
  await fs.mkdir(path.dirname(out), { recursive: true });
  const args = ['--insecure-policy', 'copy', '--src-tls-verify=false'];
  if (creds) args.push(`--src-creds=${creds.user}:${creds.pass}`);
  args.push(`docker://${host}/${ref}`, `oci:${out}:pulled`);
  const res = await run(SKOPEO_BIN, args, { timeoutMs: 60_000 });
  if (res.code !== 0) throw new Error(`skopeo ${args.join(' ')} failed (exit ${res.code}):\n${res.stderr}`);
  const index = JSON.parse(await fs.readFile(path.join(out, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
  return index.manifests[0]!.digest;
}

/** A derrick root, config and serve in front of one authenticated registry. */
interface Setup {
  tmp: TmpDir;
  reg: Registry;
  hdr: HeaderProxy;
  root: string;
  cfg: string;
  env: Record<string, string>;
  serve: PtServe;
}

async function setUp(
  tmp: TmpDir,
  name: string,
  reg: Registry,
  img: Images,
  mirror: { user: string; repoPrefix: string; repos: string[] },
  /** True once serve's start-up pings are over, given the /v2/ requests that carried credentials. */
  pingsDone: (authedPings: number) => boolean,
): Promise<Setup> {
  await seed(reg, img);
  const hdr = await startHeaderProxy({ host: '127.0.0.1', port: reg.port });
  const dir = path.join(tmp.dir, name);
  await fs.mkdir(path.join(dir, 'client-users'), { recursive: true });
  const htpasswd = await writeHtpasswd(path.join(dir, 'client-users'), { [CLIENT.user]: CLIENT.pass });
  const root = path.join(dir, 'var');
  const cfg = path.join(dir, 'derrick.yaml');
  await fs.writeFile(
    cfg,
    configYaml({ root, mirrorUser: mirror.user, repoPrefix: mirror.repoPrefix, repos: mirror.repos, upstream: hdr.url.slice('http://'.length), htpasswd }),
  );
  const env = { MIRROR_PW: USERS[mirror.user as keyof typeof USERS], UP_PW: USERS.alice, BAD_PW: 'not-alices-password' };
  const serve = await startPtServe(cfg, [], env);
  // serve pings each upstream once at start (both routes: alice with the right and with the wrong
  // password); let that finish so the tests count only their own requests.
  await pollUntil(async () => pingsDone(hdr.requests.filter((r) => r.path === '/v2/' && r.headers.authorization).length), 10_000, 'the start-up pings');
  return { tmp, reg, hdr, root, cfg, env, serve };
}

const publish = (s: Setup, env: Record<string, string> = {}) => derrick(['publish', '-c', s.cfg], { env: { ...s.env, ...env } });

/** Publishes, then a wrong password: exit 1 naming every repo, the previous publish untouched and still served. */
async function expectWrongCredentialsRefused(s: Setup, repos: Array<{ name: string; upstream: string; digest: string }>, why: RegExp) {
  const before = await Promise.all(repos.map(async (r) => ({ tree: await checkTree(s.root, r.name), masters: await masters(s.root, r.name) })));
  const res = await publish(s, { MIRROR_PW: 'wrong-password' });
  expect(res.code, res.stderr).toBe(1);
  for (const [i, r] of repos.entries()) {
    const line = res.stderr.split('\n').find((l) => l.startsWith(`error: ${r.name}:`));
    expect(line, res.stderr).toBeDefined();
    expect(line).toContain(`/${r.upstream}`);
    expect(line).toMatch(why);
    const after = await checkTree(s.root, r.name);
    expect({ web: after.web, app: after.app }).toEqual({ web: before[i]!.tree.web, app: before[i]!.tree.app });
    expect(await masters(s.root, r.name)).toEqual(before[i]!.masters);
    const served = await getManifest(s.serve.url, r.name, 'v1');
    expect(served.status).toBe(200);
    expect(served.headers['docker-content-digest']).toBe(r.digest);
  }
  await assertNoDebris(s.root);
}

describe.skipIf(!hasTools)('upstream auth against a real docker-registry', () => {
  let tmp: TmpDir;
  let img: Images;
  let issuer: TokenIssuer;
  let tokenReg: Registry;
  let htReg: Registry;
  let tok: Setup;
  let ht: Setup;
  let outSeq = 0;
  const outDir = () => path.join(tmp.dir, 'out', String(++outSeq));

  beforeAll(async () => {
    tmp = await tmpDir('derrick-upstream-auth');
    const htDir = path.join(tmp.dir, 'registry-users');
    await fs.mkdir(htDir);
    [img, issuer] = await Promise.all([
      makeImages(tmp.dir),
      startTokenIssuer({ dir: path.join(tmp.dir, 'issuer'), users: USERS, grants: GRANTS }),
    ]);
    const htpasswdFile = await writeHtpasswd(htDir, USERS);
    [tokenReg, htReg] = await Promise.all([
      startRegistry({ token: { realm: issuer.realm, service: issuer.service, issuer: issuer.issuer, rootCertBundle: issuer.rootCertBundle } }),
      startRegistry({ auth: { htpasswdFile, realm: 'derrick-test' } }),
    ]);
    [tok, ht] = await Promise.all([
      // Token: the right password gets a token and a Bearer retry, the wrong one stops at the issuer.
      setUp(tmp, 'token', tokenReg, img, { user: 'bob', repoPrefix: 'tok', repos: ['a', 'b'] }, (authed) =>
        authed >= 1 && issuer.requests.filter((r) => r.scopes.length === 0).length >= 2),
      // htpasswd: both passwords reach the registry in a Basic retry.
      setUp(tmp, 'htpasswd', htReg, img, { user: 'alice', repoPrefix: 'ht', repos: ['a'] }, (authed) => authed >= 2),
    ]);
  }, 60_000);

  afterAll(async () => {
    for (const s of [tok, ht]) {
      await s?.serve.stop();
      await s?.hdr.close();
    }
    await tokenReg?.stop();
    await htReg?.stop();
    await issuer?.close();
    await tmp?.cleanup();
  });

  describe('auth: token', () => {
    it('publish mirrors protected repos with its own credentials: one token request per repository scope, all as its user', async () => {
      const firstRequest = issuer.requests.length;
      const firstUpstream = tok.hdr.requests.length;
      const res = await publish(tok);
      expect(res.code, res.stderr).toBe(0);
      expect((await checkTree(tok.root, 'tok/a')).file.derrick!.tags).toEqual({ v1: img.a1.digest, v2: img.a2.digest });
      expect((await checkTree(tok.root, 'tok/b')).file.derrick!.tags).toEqual({ v1: img.b1.digest });

      const asked = issuer.requests.slice(firstRequest);
      // Tokens are cached per scope: every manifest and blob of priv/a rides on one token.
      expect(asked.filter((r) => r.scopes.includes(SCOPE_A))).toHaveLength(1);
      expect(asked.filter((r) => r.scopes.includes(SCOPE_B))).toHaveLength(1);
      expect(new Set(asked.map((r) => `${r.user}/${r.account}/${r.status}`))).toEqual(new Set(['bob/bob/200']));
      expect(identities(tok.hdr.requests.slice(firstUpstream), issuer)).toEqual(['bearer:bob']);
    });

    it('wrong credentials: exit 1 naming each repo, nothing left behind, the previous publish still served', async () => {
      await expectWrongCredentialsRefused(
        tok,
        [
          { name: 'tok/a', upstream: 'priv/a', digest: img.a1.digest },
          { name: 'tok/b', upstream: 'priv/b', digest: img.b1.digest },
        ],
        /token server .* rejected the credentials \(401\)/,
      );
    });

    it('pull-through serves skopeo a protected image; neither an anonymous nor an authenticated client changes what upstream sees', async () => {
      // Tokens live 2 s from here on (until the renewal test): expiry must not get in a pull's way.
      issuer.expiresIn = 2;
      const firstRequest = issuer.requests.length;
      let mark = tok.hdr.requests.length;
      expect(await skopeoPull(tok.serve.host, 'up/priv/a:v1', outDir())).toBe(img.a1.digest);
      const anonymous = identities(tok.hdr.requests.slice(mark), issuer);
      mark = tok.hdr.requests.length;
      expect(await skopeoPull(tok.serve.host, 'up/priv/a:v2', outDir(), CLIENT)).toBe(img.a2.digest);
      const authenticated = identities(tok.hdr.requests.slice(mark), issuer);

      expect(anonymous).toEqual(['bearer:alice']);
      expect(authenticated).toEqual(['bearer:alice']);
      const asked = issuer.requests.slice(firstRequest);
      expect(asked.length).toBeGreaterThan(0);
      expect(new Set(asked.map((r) => `${r.user}/${r.account}`))).toEqual(new Set(['alice/alice']));
      // carol's password reached derrick on every request of the second pull, and went no further.
      const carol = Buffer.from(`${CLIENT.user}:${CLIENT.pass}`).toString('base64');
      expect(tok.hdr.requests.filter((r) => JSON.stringify(r.headers).includes(carol))).toEqual([]);
      // Nor in the registry's own log (it names the user on the lines of failed requests).
      expect(tok.reg.appLog()).not.toContain(CLIENT.user);
    });

    it('an expired token is renewed with exactly one new token request', async () => {
      try {
        // Tokens live 2 s (derrick renews them 1 s early); tag-ttl is 1 s, so each GET below
        // rechecks the tag upstream with a HEAD that needs a token.
        await waitForCommit(tok.serve.url, 'up/priv/a', img.a1.manifests[0]!.layers[0]!);
        await sleep(1100);
        const first = await getManifest(tok.serve.url, 'up/priv/a', 'v1');
        expect(first.status).toBe(200);
        const issuedAt = issuer.requestsFor(SCOPE_A).length;
        await sleep(2200); // past the token's expiry and the tag's ttl
        const mark = tok.hdr.requests.length;
        const again = await getManifest(tok.serve.url, 'up/priv/a', 'v1');
        expect(again.status).toBe(200);
        expect(again.headers['docker-content-digest']).toBe(img.a1.digest);
        expect(again.headers.warning, 'served fresh, not stale').toBeUndefined();
        const renewed = issuer.requestsFor(SCOPE_A).slice(issuedAt);
        expect(renewed.map((r) => `${r.user}/${r.status}`)).toEqual(['alice/200']);
        // The recheck reached the registry with the new token.
        const recheck = tok.hdr.requests.slice(mark).filter((r) => r.path.startsWith('/v2/priv/a/manifests/v1'));
        expect(recheck.length).toBeGreaterThan(0);
        expect(identities(recheck, issuer)).toEqual(['bearer:alice']);
      } finally {
        issuer.expiresIn = 300;
      }
    });

    it("wrong upstream credentials and a repo the token doesn't grant: 502 naming the upstream repo", async () => {
      const wrong = await getManifest(tok.serve.url, 'bad/priv/a', 'v1');
      expect(wrong.status).toBe(502);
      expect(errorCode(wrong)).toBe('UNAVAILABLE');
      expect(errorMessage(wrong)).toMatch(/refused derrick's credentials: .*\/priv\/a:v1: token server .* rejected the credentials/);

      // alice's token for priv/b carries no access: the registry answers 401 insufficient_scope.
      const notGranted = await getManifest(tok.serve.url, 'up/priv/b', 'v1');
      expect(notGranted.status).toBe(502);
      expect(errorCode(notGranted)).toBe('UNAVAILABLE');
      expect(errorMessage(notGranted)).toMatch(/refused derrick's credentials: .*\/priv\/b:v1: registry refused the token issued to user alice \(insufficient_scope\)/);
      expect(issuer.requestsFor(SCOPE_B).filter((r) => r.user === 'alice').every((r) => r.granted.length === 0)).toBe(true);
    });

    it('a cached tag is not served stale when the upstream refuses the credentials: 502, as for an uncached one', async () => {
      // alice's password is rotated upstream; derrick still has the old one. Past the token's
      // life and the tag's ttl, the recheck needs a new token, which the issuer refuses.
      issuer.setPassword('alice', 'rotated');
      try {
        await sleep(1500);
        const res = await getManifest(tok.serve.url, 'up/priv/a', 'v1');
        expect(res.status).toBe(502);
        expect(errorCode(res)).toBe('UNAVAILABLE');
        expect(res.headers.warning).toBeUndefined();
        expect(errorMessage(res)).toMatch(/refused derrick's credentials: .*\/priv\/a:v1: token server .* rejected the credentials/);
      } finally {
        issuer.setPassword('alice', USERS.alice);
      }
    });
  });

  describe('auth: htpasswd', () => {
    it('publish mirrors a protected repo with Basic credentials of its own', async () => {
      const mark = ht.hdr.requests.length;
      const res = await publish(ht);
      expect(res.code, res.stderr).toBe(0);
      expect((await checkTree(ht.root, 'ht/a')).file.derrick!.tags).toEqual({ v1: img.a1.digest, v2: img.a2.digest });
      expect(identities(ht.hdr.requests.slice(mark))).toEqual(['basic:alice']);
    });

    it('wrong credentials: exit 1 naming the repo, nothing left behind, the previous publish still served', async () => {
      await expectWrongCredentialsRefused(ht, [{ name: 'ht/a', upstream: 'priv/a', digest: img.a1.digest }], /registry rejected the credentials of user alice: authentication required \(401\)/);
    });

    it("pull-through serves skopeo with derrick's Basic credentials, never the client's; wrong ones are a 502 naming the repo", async () => {
      const mark = ht.hdr.requests.length;
      expect(await skopeoPull(ht.serve.host, 'up/priv/a:v1', outDir(), CLIENT)).toBe(img.a1.digest);
      expect(identities(ht.hdr.requests.slice(mark))).toEqual(['basic:alice']);
      expect(ht.reg.appLog()).not.toContain(CLIENT.user);

      const wrong = await getManifest(ht.serve.url, 'bad/priv/a', 'v2');
      expect(wrong.status).toBe(502);
      expect(errorCode(wrong)).toBe('UNAVAILABLE');
      expect(errorMessage(wrong)).toMatch(/refused derrick's credentials: .*\/priv\/a:v2: registry rejected the credentials of user alice/);
      // It was the registry that refused alice's wrong password, not derrick giving up early.
      expect(ht.hdr.requests.some((r) => r.path.startsWith('/v2/priv/a/manifests/v2') && /^Basic /.test(r.headers.authorization ?? ''))).toBe(true);
    });
  });
});
