// Concurrent cold pulls row: 10 skopeo pulls of one never-seen image start together through
// derrick; the upstream docker-registry's access log counts the GETs of each blob (goal: 1 each,
// however many clients ask). The upstream is behind the shaping proxy (100 MB/s shared, 20 ms),
// so the pulls overlap the fills as they would against a remote registry.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ACCEPT_ALL_MANIFESTS } from '../../shared/oci.js';
import { formatBytes } from '../../shared/units.js';
import { generateImage } from '../gen-image.js';
import { startDerrick } from './pull-through.js';
import { exec, sleep, startRegistry, startShaper, stopAll } from './servers.js';
import { row, type BenchContext, type Row } from './table.js';

const CLIENTS = 10;

export async function run(ctx: BenchContext): Promise<Row[]> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-single-flight-'));
  try {
    const upstream = await startRegistry(path.join(dir, 'upstream'), { accessLog: true });
    const layoutDir = path.join(dir, 'layout');
    const img = await generateImage({ layoutDir, tag: 'latest', seed: 'single-flight', layers: [8 << 20, 4 << 20, 2 << 20, 1 << 20], gzip: true });
    await exec('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layoutDir}:latest`, `docker://${upstream.host}/sf/img:latest`]);
    // The digests as the upstream serves them (a push may rewrite what it stores).
    const served = (await (await fetch(`${upstream.url}/v2/sf/img/manifests/latest`, { headers: { Accept: ACCEPT_ALL_MANIFESTS } })).json()) as { config: { digest: string }; layers: Array<{ digest: string }> };
    const blobs = [served.config.digest, ...served.layers.map((l) => l.digest)];
    const far = await startShaper(upstream.host, { rateMBs: 100, latencyMs: 20 });
    const d = await startDerrick(path.join(dir, 'derrick'), far.url);
    const before = upstream.accessLog().length;
    ctx.log(`single-flight: ${CLIENTS} concurrent cold skopeo pulls of a ${formatBytes(img.totalBytes)} image`);
    await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => exec('skopeo', ['--insecure-policy', 'copy', '--src-tls-verify=false', `docker://${d.host}/hub/sf/img:latest`, `dir:${path.join(dir, `out-${i}`)}`], 300_000)),
    );
    await sleep(500); // the registry writes an access line after the response
    const lines = upstream.accessLog().slice(before);
    const gets = blobs.map((b) => lines.filter((l) => l.includes('"GET ') && l.includes(`/v2/sf/img/blobs/${b}`)).length);
    return [
      row({
        group: 'single-flight',
        what: `${CLIENTS} concurrent cold pulls: upstream GETs per blob, worst of ${blobs.length}`,
        figure: Math.max(...gets),
        unit: 'GETs',
        goal: { op: '<=', value: 1 },
        raw: { perBlob: Object.fromEntries(blobs.map((b, i) => [b, gets[i]])), clients: CLIENTS, imageBytes: img.totalBytes },
      }),
    ];
  } finally {
    await stopAll();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
