// Crash target 3: a pull-through commit. `derrick serve` fills a new image from a real
// docker-registry as a client pulls it (manifest, then every blob), then commits it as an ordinary
// atomic publish of the cache repo. serve is SIGKILLed at random instants between the first
// request and the commit's last swap, and at the moments a cache master appears, web/ is swapped
// and app/ is swapped. Each round pulls a new tag, so every round has a fill and a commit.
import fs from 'node:fs/promises';
import path from 'node:path';
import { generateImage } from '../gen-image.js';
import { MASTER_NAME_RE, layout, repoKey } from '../../shared/layout.js';
import { MediaType } from '../../shared/oci.js';
import { freePort, runChild, sleep, startChild, waitForHttp, type Child } from '../soak/children.js';
import { CLI } from '../soak/publisher.js';
import { pushImage, startUpstream } from '../soak/upstream.js';
import { RunLength, killAt, type KillAt } from './kill.js';
import { killPlan, type CrashTarget } from './target.js';

const UPSTREAM_REPO = 'crash/pt';
const CACHE_REPO = `hub/${UPSTREAM_REPO}`;

/** Pulls `tag` through serve like a client, then waits until app/ of the cache repo has moved. */
async function pullAndWaitForCommit(base: string, tag: string, appLink: string, before: string | undefined): Promise<void> {
  const m = await fetch(`${base}/v2/${CACHE_REPO}/manifests/${tag}`, { headers: { Accept: `${MediaType.ociManifest}, ${MediaType.dockerManifest}` } });
  const body = await m.text();
  if (m.status !== 200) throw new Error(`manifest ${tag}: HTTP ${m.status} ${body}`);
  const manifest = JSON.parse(body) as { config: { digest: string }; layers: Array<{ digest: string }> };
  for (const d of [manifest.config.digest, ...manifest.layers.map((x) => x.digest)]) {
    const b = await fetch(`${base}/v2/${CACHE_REPO}/blobs/${d}`);
    await b.arrayBuffer();
    if (b.status !== 200) throw new Error(`blob ${d}: HTTP ${b.status}`);
  }
  const deadline = Date.now() + 30_000;
  while ((await fs.readlink(appLink).catch(() => undefined)) === before) {
    if (Date.now() > deadline) throw new Error(`no commit of ${CACHE_REPO}:${tag} within 30 s`);
    await sleep(20);
  }
}

export async function pullThroughTarget(dir: string, o: { kills: number; layers?: number[] }): Promise<CrashTarget> {
  const up = await startUpstream(path.join(dir, 'upstream'));
  const gen = path.join(dir, 'gen');
  const root = path.join(dir, 'var');
  const configFile = path.join(dir, 'derrick.yaml');
  await fs.writeFile(configFile, [
    'root: ./var', 'grace: 10m', 'upstreams:',
    `  - prefix: hub`, `    url: ${JSON.stringify(up.url)}`, '    tls-verify: false', '    tag-ttl: 2s', '',
  ].join('\n'));
  const l = layout(root);
  const layers = o.layers ?? [1024 * 1024, 256 * 1024];
  let n = 0;

  /** Starts serve, pulls a new tag through it and kills serve at `at` (or stops it once committed). */
  const oneRun = async (at: KillAt | undefined) => {
    const tag = `r${n++}`;
    const img = await generateImage({ layoutDir: gen, tag, seed: `pt-${tag}`, layers });
    await pushImage(up.url, UPSTREAM_REPO, gen, img, tag);
    const port = await freePort();
    const serve: Child = startChild(process.execPath, [CLI, 'serve', '-c', configFile, '--listen', `127.0.0.1:${port}`]);
    const base = `http://127.0.0.1:${port}`;
    try {
      await waitForHttp(`${base}/v2/`, 30_000, serve);
    } catch (err) {
      await serve.stop('SIGKILL');
      throw err;
    }
    const before = await fs.readlink(l.app(CACHE_REPO)).catch(() => undefined);
    const started = Date.now();
    const exited = at ? killAt(serve, at) : serve.exited.then(() => undefined);
    const pulled = pullAndWaitForCommit(base, tag, l.app(CACHE_REPO), before).then(
      (): { ms: number; error?: Error } => ({ ms: Date.now() - started }),
      (err: Error) => ({ ms: Date.now() - started, error: err }),
    );
    const first = await Promise.race([exited.then(() => 'exited' as const), pulled.then(() => 'pulled' as const)]);
    const p = await (first === 'pulled' ? pulled : Promise.race([pulled, sleep(5000).then((): { ms: number; error?: Error } => ({ ms: 0 }))]));
    await serve.stop();
    const { signal } = await serve.exited;
    const killed = signal === 'SIGKILL';
    const failure = !killed && p.error ? `pull through serve failed: ${p.error.message}\n${serve.output()}` : undefined;
    return { killed, ms: p.ms, failure };
  };

  const warm = await oneRun(undefined);
  if (warm.failure) throw new Error(warm.failure);
  const length = new RunLength(warm.ms);
  const moments: Record<string, KillAt> = {
    'web-swap': { dir: l.webDir, match: (name) => name === repoKey(CACHE_REPO) },
    'app-swap': { dir: l.appDir, match: (name) => name === `${repoKey(CACHE_REPO)}.json` },
    master: { dir: l.masterDir(CACHE_REPO), match: (name) => MASTER_NAME_RE.test(name) },
  };
  const nextKill = killPlan(Math.ceil(o.kills * 1.3), moments, length);
  return {
    name: 'pull-through',
    root,
    configFile,
    repos: () => [CACHE_REPO],
    async round() {
      const { at, moment } = nextKill();
      const r = await oneRun(at);
      if (!r.killed && !r.failure) length.finished(r.ms);
      return { killed: r.killed, moment, failure: r.failure };
    },
    async recover() {
      const failure = (await oneRun(undefined)).failure;
      if (failure) return failure;
      // A killed serve leaves its fills' temp files in the store (serve does not sweep them at
      // start); the next publish or gc does, as after a killed publish.
      const gc = await runChild(process.execPath, [CLI, 'gc', '-c', configFile], 120_000);
      return gc.code === 0 ? undefined : `gc after the pull-through kills exited ${gc.code}:\n${gc.output}`;
    },
    stop: () => up.stop(),
  };
}
