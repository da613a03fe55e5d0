// Edges (issue 15): a publish pushed to two sshd edges and one plain rsync daemon, all on
// 127.0.0.1 with their own roots. Real skopeo pulls through a real nginx balancing two real
// `derrick serve` replicas on the edges; pushes killed at random instants leave every edge valid;
// a dead edge fails alone and catches up; an incremental push sends about the new layers.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout, repoKey, type Layout } from '../shared/layout.js';
import { createLogger } from '../shared/log.js';
import { currentPublish } from '../shared/publish/current.js';
import { verifyRepo } from '../publisher/verify.js';
import { runPush } from '../publisher/push/run-push.js';
import { nginxLbConf } from '../redirector/nginx-lb-conf.js';
import { CLI, derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { startRsyncdEdge, startSshEdge, type Edge } from './helpers/edges.js';
import { startNginx, PORT_PLACEHOLDER, type Nginx } from './helpers/nginx.js';
import { requireTool } from './helpers/proc.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { skopeoCopy, skopeoInspect } from './helpers/skopeo.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = ['rsync', 'ssh', 'ssh-keygen', 'sshd', 'nginx', 'skopeo'].every((t) =>
  requireTool(t === 'sshd' ? '/usr/sbin/sshd' : t, 'the edge push tests are skipped'),
);

const REPOS = ['team/app', 'base'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every repo on the edge passes `derrick verify`'s check, and what it serves is one of the origin's publishes. */
async function assertEdgeValid(e: Edge, origin: Layout): Promise<void> {
  const l = layout(e.root);
  for (const repo of REPOS) {
    const v = await verifyRepo(l, repo);
    expect(v.damage, `${e.name} ${repo}`).toEqual([]);
    if (v.web) await fs.access(origin.master(repo, v.web)).catch(() => expect.fail(`${e.name} serves ${v.web}, which the origin never built`));
  }
}

async function servesOrigin(e: Edge, origin: Layout): Promise<boolean> {
  for (const repo of REPOS) {
    const [o, x] = [await currentPublish(origin, repo), await currentPublish(layout(e.root), repo)];
    if (!o.web || x.web !== o.web || x.app !== o.web) return false;
  }
  return true;
}

describe.skipIf(!hasTools)('edges: push each publish to ssh and rsync-daemon edges', () => {
  let tmp: TmpDir;
  let edges: Edge[];
  let tree: PublishedTree;
  let origin: Layout;
  let tagNo = 0;
  const quiet = createLogger({ level: 'silent' });

  /** A new tag with one new layer in each repo, published on the origin (no push). */
  const publishNewTag = async (layerBytes = 64 * 1024) => {
    tagNo++;
    for (const r of REPOS) await tree.addImage(r, { tag: `t${tagNo}`, seed: `${r}-${tagNo}`, layers: [layerBytes], gzip: false });
    await tree.publish();
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-edges');
    edges = [
      await startSshEdge(path.join(tmp.dir, 'e1'), 'e1'),
      await startSshEdge(path.join(tmp.dir, 'e2'), 'e2'),
      await startRsyncdEdge(path.join(tmp.dir, 'e3'), 'e3'),
    ];
    const targets = ['targets:', ...edges.flatMap((e) => e.yaml.split('\n').map((line, i) => `${i ? '    ' : '  - '}${line}`))].join('\n');
    tree = await makePublishedTree(
      path.join(tmp.dir, 'origin'),
      REPOS.map((name) => ({ name, images: [{ tag: 'v1', seed: `${name}-v1`, layers: [256 * 1024, 32 * 1024], gzip: false }] })),
      targets,
    );
    origin = layout(tree.config.root);
  }, 120_000);

  afterAll(async () => {
    for (const e of edges ?? []) await e.stop();
    await tmp?.cleanup();
  });

  it('a publish reaches every edge; skopeo pulls through nginx in front of two serve replicas, digests equal', async () => {
    const r = await derrick(['push', '-c', tree.configFile]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    for (const e of edges) expect(r.stdout).toMatch(new RegExp(`push ${e.name}: ok: 2 repos sent`));
    for (const e of edges) {
      await assertEdgeValid(e, origin);
      expect(await servesOrigin(e, origin), e.name).toBe(true);
    }
    // The daemon kept our symlinks as they are (munge symlinks = no).
    const web = await fs.readlink(layout(edges[2]!.root).web('base'));
    expect(web).toMatch(/^\.\.\/master\/base\/\d{8}T/);

    const serves: ServeProcess[] = [];
    let nginx: Nginx | undefined;
    try {
      for (const e of edges.slice(0, 2)) {
        const cfg = path.join(e.root, '..', 'derrick.yaml');
        await fs.writeFile(cfg, `root: ${e.root}\nrepos:\n${REPOS.map((n) => `  - name: ${n}\n    from: oci:/nonexistent\n`).join('')}`);
        serves.push(await startServe(cfg));
      }
      nginx = await startNginx(nginxLbConf(serves.map((s) => s.host), { listen: `127.0.0.1:${PORT_PLACEHOLDER}` }));
      const lb = `127.0.0.1:${nginx.port}`;
      for (const repo of REPOS) {
        const img = tree.images.get(`${repo}:v1`)!;
        const out = path.join(tmp.dir, `pull-${repoKey(repo)}`);
        // --preserve-digests: skopeo fails rather than rewrite the manifest; it checks every blob's digest.
        await skopeoCopy(`docker://${lb}/${repo}:v1`, `oci:${out}:v1`, ['--preserve-digests']);
        const inspected = await skopeoInspect(`docker://${lb}/${repo}:v1`, { raw: false });
        expect(inspected.Digest).toBe(img.digest);
        const index = JSON.parse(await fs.readFile(path.join(out, 'index.json'), 'utf8'));
        expect(index.manifests[0].digest).toBe(img.digest);
      }
      // Both replicas answered (round robin), each from its own edge.
      const log = nginx.accessLog();
      expect(log).toContain('/v2/');
    } finally {
      await nginx?.stop();
      for (const s of serves) await s.stop();
    }
  }, 120_000);

  it('an incremental publish (one new tag) sends about the new layer, not the repo again', async () => {
    const layer = 512 * 1024;
    await publishNewTag(layer);
    const results = await runPush({ config: tree.config, log: quiet });
    for (const r of results) {
      expect(r.failed, r.target).toEqual([]);
      // Two repos, one new layer each (plus a config, a manifest and the redirect file and tags/list).
      const newBytes = 2 * layer;
      console.log(`[figure] incremental push to ${r.target}: ${r.bytesSent} bytes sent for ${newBytes} bytes of new layers (${(r.bytesSent / newBytes).toFixed(3)}x)`);
      expect(r.bytesSent).toBeGreaterThan(newBytes * 0.95);
      expect(r.bytesSent).toBeLessThan(newBytes * 1.1);
    }
    for (const e of edges) expect(await servesOrigin(e, origin), e.name).toBe(true);
  }, 120_000);

  it('pushes killed at random instants leave every edge valid; the next push completes', async () => {
    await publishNewTag();
    const full = await runPush({ config: tree.config, log: quiet });
    for (const r of full) expect(r.failed, r.target).toEqual([]);
    // The window worth hitting: from the push's first lock to its slowest target's end.
    // Re-estimated as it goes: a push that ends before its instant (the machine got faster) shrinks it.
    let windowMs = Math.max(...full.map((r) => r.ms));
    const lockFile = path.join(origin.locksDir, `push-${edges[0]!.name}.lock`);
    let kills = 0;
    // Until 30 pushes were killed mid-way (one that ends before its instant doesn't count).
    for (let i = 0; kills < 30 && i < 100; i++) {
      if (i % 3 === 0) await publishNewTag();
      // Its own process group, so rsync and ssh die with it, as under a killed cron job.
      const child = spawn(process.execPath, [CLI, 'push', '-c', tree.configFile], { detached: true, stdio: 'ignore' });
      let done = false;
      const exited = new Promise<void>((r) => child.once('exit', () => r(void (done = true))));
      const deadline = Date.now() + 30_000;
      // The lock names its owner's pid (a killed run's stale lock names a dead one).
      const owns = () => fs.readFile(lockFile, 'utf8').then((t) => Number.parseInt(t, 10) === child.pid, () => false);
      while (!done && Date.now() < deadline && !(await owns())) await sleep(5);
      await sleep(Math.random() * windowMs * 0.8);
      if (!done) {
        process.kill(-child.pid!, 'SIGKILL');
        kills++;
      } else {
        windowMs = Math.max(20, windowMs * 0.7);
      }
      await exited;
      for (const e of edges) await assertEdgeValid(e, origin);
    }
    console.log(`[figure] 30 pushes killed mid-way (window ${windowMs} ms); every edge valid after each`);
    expect(kills).toBe(30);
    const r = await derrick(['push', '-c', tree.configFile]);
    expect(r.code, r.stderr).toBe(0);
    for (const e of edges) {
      await assertEdgeValid(e, origin);
      expect(await servesOrigin(e, origin), e.name).toBe(true);
    }
  }, 240_000);

  it('one edge down: the others are updated, exit 1; it catches up on the next run, skipping what it missed', async () => {
    const down = edges[1]!;
    await down.stop();
    try {
      tagNo++;
      for (const r of REPOS) await tree.addImage(r, { tag: `t${tagNo}`, seed: `${r}-${tagNo}`, layers: [4096], gzip: false });
      const pub = await derrick(['publish', '-c', tree.configFile]);
      expect(pub.code, pub.stdout + pub.stderr).toBe(1);
      expect(pub.stdout).toMatch(/team\/app: published/);
      expect(pub.stderr).toMatch(new RegExp(`error: push ${down.name}: `));
      expect(pub.stdout).toMatch(/push e1: ok/);
      expect(pub.stdout).toMatch(/push e3: ok/);
      for (const e of edges.filter((x) => x !== down)) expect(await servesOrigin(e, origin), e.name).toBe(true);
      expect(await servesOrigin(down, origin)).toBe(false);
      const missed = (await currentPublish(origin, 'base')).web!;

      const status = await derrick(['status', '-c', tree.configFile]);
      expect(status.stdout).toMatch(new RegExp(`${down.name}\\s+\\S+\\s+\\d+s\\s+failed: `));
      const prom = await fs.readFile(path.join(origin.pushDir, 'derrick-push.prom'), 'utf8');
      expect(prom).toContain(`derrick_push_failed{target="${down.name}"} 1`);
      expect(prom).toMatch(new RegExp(`derrick_push_lag_seconds\\{target="${down.name}"\\} \\d+`));
      expect(prom).toContain('derrick_push_lag_seconds{target="e1"} 0');

      await publishNewTag(4096);
      await down.start();
      const r = await derrick(['push', '-c', tree.configFile]);
      expect(r.code, r.stderr).toBe(0);
      expect(await servesOrigin(down, origin)).toBe(true);
      await assertEdgeValid(down, origin);
      // The publish it missed was never sent: it went straight to the latest.
      await expect(fs.lstat(layout(down.root).master('base', missed))).rejects.toThrow();
      const after = await fs.readFile(path.join(origin.pushDir, 'derrick-push.prom'), 'utf8');
      expect(after).toContain(`derrick_push_failed{target="${down.name}"} 0`);
    } finally {
      await down.start().catch(() => undefined);
    }
  }, 180_000);

  it('keep and grace hold on every edge as on the origin', async () => {
    const config = { ...tree.config, keep: 1, grace: 0 };
    await publishNewTag(4096);
    await runPush({ config, log: quiet });
    await sleep(1100);
    const results = await runPush({ config, log: quiet });
    for (const r of results) expect(r.failed, r.target).toEqual([]);
    for (const e of edges) {
      const l = layout(e.root);
      for (const repo of REPOS) {
        const cur = await currentPublish(l, repo);
        const entries = (await fs.readdir(l.masterDir(repo))).sort();
        // The served master and one earlier one, each as its directory and its name; nothing else.
        const masters = entries.filter((n) => /^\d{8}T\d{6}\.\d{3}Z-\d{3}$/.test(n));
        expect(masters.length, `${e.name} ${repo}: ${entries.join(' ')}`).toBe(2);
        expect(masters.at(-1)).toBe(cur.web);
        expect(entries.sort()).toEqual([...masters, ...masters.map((m) => `${m}.d`)].sort());
      }
      await assertEdgeValid(e, origin);
    }
  }, 120_000);
});
