// Upstream faults between derrick and a real registry, injected by a proxy. For each one, the
// documented outcome: a failure leaves nothing unverified in the store, the previous publish
// served (checkTree names the same masters) and an error line naming the repo and the digest or
// tag, with exit 1; a transient fault is retried and the run succeeds with exit 0.
//
// Retry budgets this relies on (asserted loosely so a tuning change doesn't break the test):
// the registry client (shared/registry/client.ts) retries 5xx, 429 and network failures 4 times
// with 200 ms exponential backoff, honouring Retry-After; publisher/sync.ts fetches a blob body up
// to 3 times when it is cut off or does not hash to its digest.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateImage } from '../scripts/gen-image.js';
import { digestHex, parseManifest } from '../shared/oci.js';
import { derrick } from './helpers/derrick.js';
import type { FaultProxy } from './helpers/fault-proxy.js';
import { startProxiedUpstream, type ProxiedUpstream } from './helpers/proxied-upstream.js';
import { requireTool } from './helpers/proc.js';
import type { Registry } from './helpers/registry.js';
import { fetchManifest, seedRegistry } from './helpers/skopeo.js';
import { assertNoDebris, checkStore, checkTree, storeListing, type TreeState } from './helpers/tree.js';

const hasTools = requireTool('docker-registry', 'fault tests are skipped') && requireTool('skopeo', 'fault tests are skipped');

const REPO = 'faulty/app';
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

describe.skipIf(!hasTools)('upstream faults', () => {
  let upstream: ProxiedUpstream;
  let reg: Registry;
  let proxy: FaultProxy;
  let gen: string;
  let root: string;
  let cfgFile: string;
  let served: TreeState;

  const writeConfig = async (repoExtra: string[] = [], more = '') => {
    const lines = ['root: ./var', 'repos:', `  - name: ${REPO}`, `    from: docker://${proxy.host}/${REPO}`, '    tls-verify: false'];
    lines.push(...repoExtra.map((l) => `    ${l}`), more);
    await fs.writeFile(cfgFile, lines.join('\n') + '\n');
  };
  const publish = (env?: Record<string, string>) => derrick(['publish', '-c', cfgFile], { env });

  /** Pushes a new tag with its own content straight to the registry; returns its digests. */
  const pushTag = async (tag: string) => {
    await generateImage({ layoutDir: gen, tag, layers: [1500, 300_000] });
    const digest = await seedRegistry(reg.host, REPO, gen, tag);
    const m = parseManifest((await fetchManifest(reg.host, REPO, digest)).body);
    const layer = m.blobs.reduce((a, b) => (b.size > a.size ? b : a));
    return { digest, layer: layer.digest, blobs: m.blobs.map((b) => b.digest) };
  };
  const blobPath = (digest: string) => new RegExp(`^/v2/${esc(REPO)}/blobs/${esc(digest)}$`);

  /** The documented failure: exit 1, an error line naming the repo and `what`, nothing changed. */
  const expectFailure = async (r: Awaited<ReturnType<typeof publish>>, what: RegExp, missing: string[] = []) => {
    expect(r.code, r.stdout + r.stderr).toBe(1);
    const line = r.stderr.split('\n').find((l) => l.startsWith('error: '));
    expect(line, r.stderr).toBeDefined();
    expect(line).toMatch(new RegExp(`^error: ${esc(REPO)}: `));
    expect(line).toMatch(what);
    const after = await checkTree(root, REPO);
    expect(after).toMatchObject({ web: served.web, app: served.app });
    const listing = await checkStore(root, { fresh: true });
    for (const d of missing) expect(listing, `${d} must not be in the store`).not.toContain(digestHex(d));
    await assertNoDebris(root);
  };
  /** The documented recovery: exit 0, a new master with every tag upstream has. */
  const expectPublished = async (r: Awaited<ReturnType<typeof publish>>, tags: string[]) => {
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${esc(REPO)}: published`, 'm'));
    const after = await checkTree(root, REPO, { previous: { web: served.web, app: served.app } });
    expect(after.web > served.web).toBe(true);
    for (const t of tags) expect(Object.keys(after.file.derrick!.tags)).toContain(t);
    await checkStore(root, { fresh: true });
    await assertNoDebris(root);
    served = after;
  };

  beforeAll(async () => {
    upstream = await startProxiedUpstream('derrick-faults');
    ({ reg, proxy, gen, root, cfgFile } = upstream);
    await pushTag('v1');
    await writeConfig();
    const r = await publish();
    expect(r.code, r.stderr).toBe(0);
    served = await checkTree(root, REPO);
  });
  afterAll(async () => upstream?.close());
  beforeEach(() => proxy.clearRules());

  it('a blob that never hashes to its digest: exit 1 naming repo and digest, nothing stored', async () => {
    const c = await pushTag('c1');
    const rule = proxy.addRule({ method: 'GET', path: blobPath(c.layer), action: { kind: 'corrupt' } });
    const r = await publish();
    await expectFailure(r, new RegExp(`blob ${esc(c.layer)}: content hashes to sha256:[0-9a-f]{64} \\(after 3 attempts\\)`), [c.layer]);
    expect(rule.hits()).toBeGreaterThanOrEqual(2); // the body is fetched again before giving up
    expect(proxy.count('GET', blobPath(c.layer))).toBe(rule.hits());
  });

  it('a blob cut off mid-body every time: exit 1 naming repo and digest, nothing stored', async () => {
    const c = await pushTag('c2');
    const rule = proxy.addRule({ method: 'GET', path: blobPath(c.layer), action: { kind: 'truncate' } });
    const r = await publish();
    await expectFailure(r, new RegExp(`blob ${esc(c.layer)}`), [c.layer]);
    expect(rule.hits()).toBeGreaterThanOrEqual(2);
  });

  it('a blob cut off once is fetched again and the run succeeds', async () => {
    const c = await pushTag('c3');
    const rule = proxy.addRule({ method: 'GET', path: blobPath(c.layer), action: { kind: 'truncate' }, times: 1 });
    const r = await publish();
    await expectPublished(r, ['c1', 'c2', 'c3']);
    expect(rule.hits()).toBe(1);
    expect(proxy.count('GET', blobPath(c.layer))).toBe(2);
  });

  it('500 twice, then success: retried, exit 0', async () => {
    const c = await pushTag('c4');
    const rule = proxy.addRule({ method: 'GET', path: blobPath(c.layer), action: { kind: 'status', status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"boom"}]}' }, times: 2 });
    const tags = proxy.addRule({ method: 'GET', path: /\/tags\/list/, action: { kind: 'status', status: 503 }, times: 1 });
    const r = await publish();
    await expectPublished(r, ['c4']);
    expect(rule.hits()).toBe(2);
    expect(tags.hits()).toBe(1);
    expect(proxy.count('GET', blobPath(c.layer))).toBe(3);
  });

  it('429 with Retry-After: 1 is honoured: the retry comes a second later, exit 0', async () => {
    const c = await pushTag('c5');
    const rule = proxy.addRule({ method: 'GET', path: blobPath(c.layer), action: { kind: 'status', status: 429, headers: { 'Retry-After': '1' } }, times: 1 });
    const t0 = Date.now();
    const r = await publish();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    await expectPublished(r, ['c5']);
    expect(rule.hits()).toBe(1);
    const gets = proxy.requests.filter((q) => q.method === 'GET' && blobPath(c.layer).test(q.path));
    expect(gets.map((g) => g.status)).toEqual([429, 200]);
    expect(gets[1]!.at - gets[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it('401 with a Basic challenge: exit 1 naming the repo without credentials; with them, published', async () => {
    const c = await pushTag('c6');
    proxy.addRule({ path: /^\/v2\//, action: { kind: 'basic-auth', user: 'puller', pass: 's3cret' } });
    const r = await publish();
    await expectFailure(r, /\(401\)/, c.blobs);
    expect(r.stderr).toMatch(/authentication required/);
    // Wrong password: still refused.
    await writeConfig(['auth:', '  username: puller', '  password-env: FAULTS_PASSWORD']);
    await expectFailure(await publish({ FAULTS_PASSWORD: 'wrong' }), /\(401\)/, c.blobs);
    const ok = await publish({ FAULTS_PASSWORD: 's3cret' });
    await expectPublished(ok, ['c6']);
    await writeConfig();
  });

  it('an unknown tag (manifest 404): exit 1 naming the repo and the tag', async () => {
    const c = await pushTag('c7');
    proxy.addRule({
      path: new RegExp(`^/v2/${esc(REPO)}/manifests/c7$`),
      action: { kind: 'status', status: 404, body: '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}' },
    });
    const r = await publish();
    await expectFailure(r, /c7.*manifest unknown \(404\)/, [c.digest, ...c.blobs]);
  });

  it('an unknown repository (404): exit 1 naming it; the other repo still publishes', async () => {
    await writeConfig([], ['  - name: faulty/ghost', `    from: docker://${proxy.host}/faulty/ghost`, '    tls-verify: false'].join('\n'));
    const r = await publish();
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: faulty\/ghost: .*faulty\/ghost.*\(404\)/m);
    // c7 is fetchable again, so faulty/app publishes in the same run.
    expect(r.stdout).toMatch(new RegExp(`^${esc(REPO)}: published`, 'm'));
    const t = await checkTree(root, REPO, { previous: { web: served.web, app: served.app } });
    expect(Object.keys(t.file.derrick!.tags).sort()).toEqual(['c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'v1']);
    await expect(fs.lstat(path.join(root, 'published', 'web', 'faulty~ghost'))).rejects.toThrow();
    await checkStore(root, { fresh: true });
    await assertNoDebris(root);
    expect((await storeListing(root)).length).toBeGreaterThan(0);
  });
});
