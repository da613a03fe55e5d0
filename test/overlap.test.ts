// Two publishes at once on one config (cron overlapping itself): the real CLI twice, the first
// slowed by a proxy that delays blob downloads. One publishes; the other exits 75 naming the repo,
// or with --wait waits its turn and then finds nothing left to do.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateImage } from '../scripts/gen-image.js';
import { derrick } from './helpers/derrick.js';
import type { FaultProxy } from './helpers/fault-proxy.js';
import { startProxiedUpstream, type ProxiedUpstream } from './helpers/proxied-upstream.js';
import { requireTool, type RunningProcess } from './helpers/proc.js';
import type { Registry } from './helpers/registry.js';
import { seedRegistry } from './helpers/skopeo.js';
import { assertNoDebris, checkStore, checkTree, masters, startDerrick } from './helpers/tree.js';

const hasTools = requireTool('docker-registry', 'overlap tests are skipped') && requireTool('skopeo', 'overlap tests are skipped');

const REPO = 'overlap/app';
const OTHER = 'overlap/other';
const BLOB_DELAY_MS = 2500;

describe.skipIf(!hasTools)('overlapping publishes', () => {
  let upstream: ProxiedUpstream;
  let reg: Registry;
  let proxy: FaultProxy;
  let gen: string;
  let root: string;
  let cfgFile: string;
  const procs: RunningProcess[] = [];

  const start = (args: string[]) => {
    const p = startDerrick(['publish', '-c', cfgFile, ...args]);
    procs.push(p);
    return p;
  };
  const waitUntil = async (cond: () => boolean, what: string, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const blobGets = (repo: string) => proxy.count('GET', new RegExp(`^/v2/${repo}/blobs/`));

  beforeAll(async () => {
    upstream = await startProxiedUpstream('derrick-overlap');
    ({ reg, proxy, gen, root, cfgFile } = upstream);
    await generateImage({ layoutDir: gen, tag: 'v1', layers: [100_000, 200_000] });
    await seedRegistry(reg.host, REPO, gen, 'v1');
    await generateImage({ layoutDir: gen, tag: 'o1', layers: [5000] });
    await seedRegistry(reg.host, OTHER, gen, 'o1');
    const repo = (name: string) => [`  - name: ${name}`, `    from: docker://${proxy.host}/${name}`, '    tls-verify: false'];
    await fs.writeFile(cfgFile, ['root: ./var', 'repos:', ...repo(REPO), ...repo(OTHER), ''].join('\n'));
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await upstream?.close();
  });
  beforeEach(() => proxy.clearRules());

  it('the second publish exits 75 naming the busy repo; with --wait it waits, then finds it unchanged', async () => {
    proxy.addRule({ method: 'GET', path: new RegExp(`^/v2/${REPO}/blobs/`), action: { kind: 'delay', ms: BLOB_DELAY_MS } });
    const a = start([REPO]);
    // A holds the repo lock once it is downloading.
    await waitUntil(() => blobGets(REPO) > 0 || !a.alive(), 'the first publish to fetch a blob');
    expect(a.alive(), a.output()).toBe(true);

    const b = await derrick(['publish', '-c', cfgFile, REPO]);
    expect(b.code, b.stdout + b.stderr).toBe(75);
    expect(b.stdout + b.stderr).toMatch(new RegExp(`^${REPO}: busy: repo ${REPO} is busy \\(locked by pid ${a.pid}\\)`, 'm'));
    expect(a.alive()).toBe(true); // it really overlapped

    const c = start(['--wait', '60s', REPO]);
    await a.waitForOutput(new RegExp(`^${REPO}: published`, 'm'), 30_000);
    expect(c.alive(), c.output()).toBe(true); // still waiting when the first one was done
    expect((await a.exited).code, a.output()).toBe(0);
    const cDone = await c.exited;
    expect(cDone.code, c.output()).toBe(0);
    expect(c.stdout()).toMatch(new RegExp(`^${REPO}: unchanged`, 'm'));
    // Only the first one downloaded: each blob once.
    expect(blobGets(REPO)).toBe(3);
    const t = await checkTree(root, REPO);
    expect(await masters(root, REPO)).toEqual([t.web]);
    await checkStore(root, { fresh: true });
    await assertNoDebris(root);
  });

  it('publishes of different repos run at once; gc waits for them or exits 75', async () => {
    await generateImage({ layoutDir: gen, tag: 'v2', layers: [150_000] });
    await seedRegistry(reg.host, REPO, gen, 'v2');
    // The first publish's downloads stall halfway until the gate opens: its temp files sit in the
    // store meanwhile.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    proxy.addRule({ method: 'GET', path: new RegExp(`^/v2/${REPO}/blobs/`), action: { kind: 'stall', until: gate } });
    const storeDir = path.join(root, 'store', 'blobs', 'sha256');
    // Temp files holding part of a body (a manifest's temp comes and goes quickly and is empty).
    const temps = async () => {
      const out: string[] = [];
      for (const n of await fs.readdir(storeDir)) {
        if (n.startsWith('.tmp-') && (await fs.stat(path.join(storeDir, n)).catch(() => undefined))?.size) out.push(n);
      }
      return out;
    };
    const before = blobGets(REPO);
    const a = start([REPO]);
    // v2 adds two blobs (config and layer): both downloads half done.
    await waitUntil(() => blobGets(REPO) >= before + 2 || !a.alive(), 'the first publish to fetch its blobs');
    const deadline = Date.now() + 20_000;
    while ((await temps()).length < 2 && a.alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const inProgress = await temps();
    expect(inProgress.length, a.output()).toBe(2);
    // Another repo in the same store is not blocked, and its start-up cleanup of dead writers'
    // temp files leaves the live download alone.
    const other = await derrick(['publish', '-c', cfgFile, OTHER]);
    expect(other.code, other.stderr).toBe(0);
    expect(other.stdout).toMatch(new RegExp(`^${OTHER}: published`, 'm'));
    expect(a.alive()).toBe(true);
    for (const t of inProgress) await fs.access(path.join(storeDir, t));
    // gc needs the store to itself.
    const gc = await derrick(['gc', '-c', cfgFile]);
    expect(gc.code, gc.stdout + gc.stderr).toBe(75);
    expect(gc.stderr).toMatch(/the store \(publish running\) is busy/);
    // With --wait it waits for the publish to finish, then runs.
    const waiting = startDerrick(['gc', '-c', cfgFile, '--wait', '60s']);
    procs.push(waiting);
    await new Promise((r) => setTimeout(r, 500));
    expect(waiting.alive(), waiting.output()).toBe(true);
    open();
    // The publish prints its line while it still holds the store lock: gc must still be waiting.
    await a.waitForOutput(new RegExp(`^${REPO}: published`, 'm'), 30_000);
    expect(waiting.alive(), waiting.output()).toBe(true);
    expect((await a.exited).code, a.output()).toBe(0);
    expect((await waiting.exited).code, waiting.output()).toBe(0);
    expect(waiting.stdout()).toMatch(/^gc: deleted 0 masters and 0 blobs/m);
    await checkTree(root, REPO);
    await checkTree(root, OTHER);
    await checkStore(root, { fresh: true });
    await assertNoDebris(root);
  });
});
