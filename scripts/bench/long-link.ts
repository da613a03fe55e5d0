// Long-link row: the upstream behind the shaping proxy at 100 MB/s shared, at most 25 MB/s per TCP
// connection and 20 ms per request, so one connection cannot fill the pipe. A 12-layer image is
// pulled by a client fetching 3 layers at a time (pull-client.ts, in docker's order): directly
// through the proxy (the baseline) and cold through derrick, with pull-ahead (the default) and
// without. Each cold pull is a never-seen image of the same size; rounds interleave the three.
// Also what pull-ahead costs a client that only wanted the manifest: the bytes derrick then
// fetches upstream on its own.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ACCEPT_ALL_MANIFESTS } from '../../shared/oci.js';
import { formatBytes } from '../../shared/units.js';
import { generateImage } from '../gen-image.js';
import { pullImage } from './pull-client.js';
import { startDerrick, type RunningDerrick } from './pull-through.js';
import { exec, startRegistry, startShaper, stopAll, waitForHttp } from './servers.js';
import { row, type BenchContext, type Row } from './table.js';
import { median, timed } from './util.js';

export const LONG_LINK = { rateMBs: 100, perConnMBs: 25, latencyMs: 20 };
const LAYERS = 12;
const LAYER_BYTES = 9 * 1024 * 1024;

async function metric(d: RunningDerrick, name: string): Promise<number> {
  const text = await (await fetch(`${d.url}/metrics`)).text();
  return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
}

export async function run(ctx: BenchContext): Promise<Row[]> {
  const rounds = ctx.quick ? 1 : 3;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-long-link-'));
  try {
    const upstream = await startRegistry(path.join(dir, 'upstream'));
    // Image 0: the manifest-only cost, and derrick's warm-up. Then per round one image for each
    // derrick (a cold pull must be of bytes it has never seen).
    const images = 1 + 2 * rounds;
    ctx.log(`long-link: seeding ${images} images of ${LAYERS} x ${formatBytes(LAYER_BYTES)}`);
    let imageBytes = 0;
    for (let i = 0; i < images; i++) {
      const layoutDir = path.join(dir, `layout-${i}`);
      const img = await generateImage({ layoutDir, tag: 'latest', seed: `long-link-${i}`, layers: Array(LAYERS).fill(LAYER_BYTES), gzip: true });
      imageBytes = img.totalBytes;
      await exec('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layoutDir}:latest`, `docker://${upstream.host}/ll/img${i}:latest`]);
      await fs.rm(layoutDir, { recursive: true, force: true });
      await pullImage(upstream.url, `ll/img${i}`, 'latest'); // the registry's files into the page cache
    }
    const far = await startShaper(upstream.host, LONG_LINK);
    const ahead = await startDerrick(path.join(dir, 'ahead'), far.url);
    const plain = await startDerrick(path.join(dir, 'plain'), far.url, 'embedded', ['pull-ahead: false']);

    // What a manifest-only GET costs with pull-ahead on: the image's blobs, fetched and stored.
    const bytes0 = await metric(ahead, 'derrick_cache_upstream_bytes_total');
    const m = await fetch(`${ahead.url}/v2/hub/ll/img0/manifests/latest`, { headers: { Accept: ACCEPT_ALL_MANIFESTS } });
    const manifest = (await m.json()) as { layers: Array<{ digest: string }> };
    await waitForHttp(`${ahead.url}/v2/hub/ll/img0/blobs/${manifest.layers.at(-1)!.digest}`, ahead.child, 120_000, (s) => s === 307);
    const manifestOnlyBytes = (await metric(ahead, 'derrick_cache_upstream_bytes_total')) - bytes0;
    await pullImage(plain.url, 'hub/ll/img0', 'latest');

    ctx.log(`long-link: ${rounds} rounds of direct / derrick cold with pull-ahead / without`);
    const direct: number[] = [];
    const cold: number[] = [];
    const coldPlain: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const a = `ll/img${1 + 2 * r}`;
      const b = `ll/img${2 + 2 * r}`;
      direct.push(await timed(() => pullImage(far.url, a, 'latest')));
      cold.push(await timed(() => pullImage(ahead.url, `hub/${a}`, 'latest')));
      coldPlain.push(await timed(() => pullImage(plain.url, `hub/${b}`, 'latest')));
      direct.push(await timed(() => pullImage(far.url, b, 'latest')));
    }
    const baseline = { what: 'direct, 3 layers at a time', figure: median(direct) };
    const group = `long link ${LONG_LINK.rateMBs} MB/s, ${LONG_LINK.perConnMBs}/conn, ${LONG_LINK.latencyMs} ms`;
    return [
      row({ group, what: `derrick cold, pull-ahead (${LAYERS} layers, ${formatBytes(imageBytes)})`, figure: median(cold), unit: 'ms', baseline, goal: { op: '<=', value: 0.85 }, raw: { directMs: direct, coldMs: cold, coldNoPullAheadMs: coldPlain, imageBytes, shape: LONG_LINK } }),
      row({ group, what: 'derrick cold, pull-ahead: false', figure: median(coldPlain), unit: 'ms', baseline }),
      row({ group, what: 'manifest GET only: bytes pull-ahead fetches upstream', figure: manifestOnlyBytes / 1e6, unit: 'MB', baseline: { what: 'the image', figure: imageBytes / 1e6 }, raw: { manifestOnlyBytes } }),
    ];
  } finally {
    await stopAll();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
