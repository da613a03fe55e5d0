// The access rule in the config `derrick nginx-conf` prints, run by real nginx against a tree
// published by the real CLI (one public, one protected repo, and the master of an unpublished
// repo): every published file of the protected repo gets 401 (auth_basic against the same bcrypt
// htpasswd) or 403 (secure_link) without proof and 200 with it; redirect files are 404; the
// public repo needs nothing (but a signature on master/ when signing is on).
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout, MASTER_META_FILES, repoKey } from '../shared/layout.js';
import { signPath } from '../shared/signing.js';
import { generateImage } from '../scripts/gen-image.js';
import { derrick } from './helpers/derrick.js';
import { hashTree, hostileRequest, runHostileCase, type HostileCase, type Secrets } from './helpers/hostile.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { requireTool } from './helpers/proc.js';
import { makeHtpasswd } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { listFiles } from './helpers/walk.js';

const hasNginx = requireTool('nginx', 'the nginx access tests are skipped');
const SECRET_ENV = 'DERRICK_NGINX_ACCESS_SECRET';
const SECRET = 'nginx-access-secret';
const b64 = (s: string) => Buffer.from(s).toString('base64');
const RIGHT = { Authorization: `Basic ${b64('alice:s3cret')}` };
const WRONG = { Authorization: `Basic ${b64('alice:nope')}` };

describe.skipIf(!hasNginx)('protected content through nginx with the printed config', () => {
  let tmp: TmpDir;
  let basic: Nginx;
  let signed: Nginx;
  let publishedDir: string;
  let treeHash: string;
  let secrets: Secrets;
  /** Paths under /published/ by repo, with whether each is a served file. */
  const paths: Record<'pub' | 'priv' | 'gone', Array<{ rel: string; served: boolean }>> = { pub: [], priv: [], gone: [] };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-nginx-access');
    const dir = tmp.dir;
    for (const n of ['pub', 'priv', 'gone']) await generateImage({ layoutDir: path.join(dir, n), tag: n === 'priv' ? 'hushtag' : 'v1', seed: n, layers: [30_000] });
    await fs.writeFile(path.join(dir, 'htpasswd'), makeHtpasswd('alice', 's3cret') + '\n');
    const repos = ['pub/app', 'priv/app', 'hub/gone'].flatMap((name) => [`  - name: ${name}`, `    from: oci:${path.join(dir, name === 'hub/gone' ? 'gone' : name.split('/')[0]!)}`, ...(name === 'priv/app' ? ['    protected: true'] : [])]);
    await fs.writeFile(path.join(dir, 'publish.yaml'), ['root: ./var', 'repos:', ...repos, ''].join('\n'));
    const r = await derrick(['publish', '-c', path.join(dir, 'publish.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    const l = layout(path.join(dir, 'var'));
    // hub/gone is unpublished: its links go, its master stays; the config no longer names it, and
    // it sits under the public pull-through prefix hub, whose cache repos nginx serves openly.
    await fs.rm(l.app('hub/gone'));
    await fs.rm(l.web('hub/gone'));
    publishedDir = l.publishedDir;
    // A master's own redirect files are internal; anything else in it is content.
    const served = (rel: string) => !MASTER_META_FILES.includes(rel);
    for (const [repo, name] of [['pub', 'pub/app'], ['priv', 'priv/app'], ['gone', 'hub/gone']] as const) {
      const [ts] = await fs.readdir(l.masterDir(name));
      const files = await listFiles(l.master(name, ts!));
      paths[repo].push(...files.map((f) => ({ rel: `master/${repoKey(name)}/${ts}/${f}`, served: served(f) })));
      if (repo !== 'gone') {
        paths[repo].push(...files.map((f) => ({ rel: `web/${repoKey(name)}/${f}`, served: served(f) })));
        paths[repo].push({ rel: `app/${repoKey(name)}.json`, served: false });
      }
    }
    const privFiles = paths.priv.filter((p) => p.rel.startsWith('master/') && p.served);
    expect(privFiles.length).toBeGreaterThanOrEqual(5);
    const privDigests = [...new Set(privFiles.map((p) => /sha256:([0-9a-f]{64})$/.exec(p.rel)?.[1]).filter((d): d is string => !!d))];
    secrets = { strings: ['hushtag', ...privDigests], chunks: [] };

    const serveYaml = (signing: boolean) =>
      ['root: ./var', 'repos:', ...repos.slice(0, 5), 'upstreams:', '  - { prefix: hub, url: "http://127.0.0.1:1" }', 'serve:', '  htpasswd: ./htpasswd', ...(signing ? ['  signing:', `    secret-env: ${SECRET_ENV}`, '    ttl: 5m'] : []), ''].join('\n');
    const confOf = async (signing: boolean) => {
      const file = path.join(dir, signing ? 'signed.yaml' : 'basic.yaml');
      await fs.writeFile(file, serveYaml(signing));
      const out = await derrick(['nginx-conf', '-c', file, '--listen', '127.0.0.1:1'], { env: { [SECRET_ENV]: SECRET } });
      expect(out.code, out.stderr).toBe(0);
      // The config doesn't name it, but its master is under the open hub~ location: guarded by name.
      expect(out.stdout).toContain('location ^~ /published/master/hub~gone/ {');
      return out.stdout.replace('listen 127.0.0.1:1;', 'listen 127.0.0.1:__PORT__;');
    };
    treeHash = await hashTree(publishedDir);
    [basic, signed] = await Promise.all([startNginx(await confOf(false)), startNginx(await confOf(true))]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([basic?.stop(), signed?.stop()]);
    await tmp?.cleanup();
  });

  const check = async (url: string, cases: HostileCase[]) => {
    const failures: string[] = [];
    for (const c of cases) {
      const wrong = await runHostileCase(url, c, secrets);
      if (wrong.length) failures.push(`${c.name}: ${wrong.join('; ')}`);
    }
    expect(failures).toEqual([]);
    return cases.length;
  };

  it('signing off: auth_basic with the bcrypt htpasswd guards the protected repo and unknown keys', async () => {
    const cases: HostileCase[] = [];
    for (const repo of ['pub', 'priv', 'gone'] as const) {
      for (const p of paths[repo]) {
        const guarded = repo !== 'pub';
        for (const [cred, headers, valid] of [['none', {}, false], ['wrong', WRONG, false], ['right', RIGHT, true], ['lower-case scheme', { Authorization: RIGHT.Authorization.replace('Basic', 'basic') }, true]] as const) {
          const granted = !guarded || valid;
          const status = !p.served ? 404 : granted ? 200 : 401;
          cases.push({ name: `${p.rel} ${cred}`, path: `/published/${p.rel}`, headers, status, code: status === 404 ? 'NAME_UNKNOWN' : status === 401 ? 'UNAUTHORIZED' : undefined, entitled: guarded && valid });
        }
      }
    }
    const n = await check(basic.url, cases);
    expect(n).toBeGreaterThan(60);
    const r = await hostileRequest(basic.url, { path: `/published/${paths.priv.find((p) => p.served)!.rel}` });
    expect(r.headers['www-authenticate']).toMatch(/^Basic realm="derrick"/);
  });

  it('signing on: the secure_link signature guards master/ of every repo and web/ of the protected one', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: HostileCase[] = [];
    for (const repo of ['pub', 'priv', 'gone'] as const) {
      for (const p of paths[repo]) {
        const uri = `/published/${p.rel}`;
        const needsSig = p.rel.startsWith('master/') || repo !== 'pub';
        for (const [sig, target, headers] of [
          ['no signature', uri, {}],
          ['credentials, no signature', uri, RIGHT],
          ['wrong secret', `${uri}?${signPath(uri, 'nope', now + 300)}`, {}],
          ['expired', `${uri}?${signPath(uri, SECRET, now - 5)}`, {}],
          ['right', `${uri}?${signPath(uri, SECRET, now + 300)}`, {}],
        ] as const) {
          const ok = sig === 'right';
          const status = !p.served ? 404 : !needsSig || ok ? 200 : 403;
          cases.push({ name: `${p.rel} ${sig}`, path: target, headers, status, code: status === 404 ? 'NAME_UNKNOWN' : status === 403 ? 'DENIED' : undefined, entitled: ok && repo !== 'pub' });
        }
      }
    }
    expect(await check(signed.url, cases)).toBeGreaterThan(80);
  });

  it('leaves the published tree unchanged', async () => {
    expect(await hashTree(publishedDir)).toBe(treeHash);
  });
});
