// Cold publish row: `derrick publish` of a >= 100 MB repo from docker-registry into an empty root,
// against `skopeo sync` of the same repo into an empty directory (goal <= 1.0x). Both are real
// CLI runs, interleaved, medians; the registry's files are read once first so both find them in
// the page cache.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatBytes } from '../../shared/units.js';
import { generateImage } from '../gen-image.js';
import { exec, startRegistry, stopAll } from './servers.js';
import { row, type BenchContext, type Row } from './table.js';
import { derrickArgv, median, timed } from './util.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../cli.js');

export async function run(ctx: BenchContext): Promise<Row[]> {
  const rounds = ctx.quick ? 1 : 3;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-cold-publish-'));
  try {
    const reg = await startRegistry(path.join(dir, 'registry'));
    const layoutDir = path.join(dir, 'layout');
    // Two tags of 2 x 26 MiB gzip layers each: 104 MiB.
    const layer = 26 * 1024 * 1024;
    let imageBytes = 0;
    for (const tag of ['v1', 'v2']) {
      const img = await generateImage({ layoutDir, tag, seed: `cold-publish-${tag}`, layers: [layer, layer], gzip: true });
      imageBytes += img.totalBytes;
      await exec('skopeo', ['--insecure-policy', 'copy', '--dest-tls-verify=false', `oci:${layoutDir}:${tag}`, `docker://${reg.host}/bench/cold:${tag}`]);
    }
    await fs.rm(layoutDir, { recursive: true, force: true });
    ctx.log(`cold-publish: ${formatBytes(imageBytes)} in 2 tags, ${rounds} interleaved rounds`);

    const skopeoSync = (out: string) => exec('skopeo', ['--insecure-policy', 'sync', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${reg.host}/bench/cold`, out]);
    const derrickPublish = async (root: string) => {
      const config = path.join(root, 'derrick.yaml');
      await fs.mkdir(root, { recursive: true });
      await fs.writeFile(config, `root: ./var\nrepos:\n  - name: bench/cold\n    from: docker://${reg.host}/bench/cold\n    tls-verify: false\n`);
      return () => exec(process.execPath, derrickArgv(CLI, 'publish', '-c', config));
    };
    // Warm-up: the registry's files into the page cache, skopeo's and node's binaries too.
    await skopeoSync(path.join(dir, 'warm-sync'));
    await (await derrickPublish(path.join(dir, 'warm-publish')))();
    await fs.rm(path.join(dir, 'warm-sync'), { recursive: true, force: true });
    await fs.rm(path.join(dir, 'warm-publish'), { recursive: true, force: true });

    const sync: number[] = [];
    const publish: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const out = path.join(dir, `sync-${i}`);
      sync.push(await timed(() => skopeoSync(out)));
      await fs.rm(out, { recursive: true, force: true });
      const root = path.join(dir, `publish-${i}`);
      const go = await derrickPublish(root);
      publish.push(await timed(go));
      await fs.rm(root, { recursive: true, force: true });
    }
    return [
      row({
        group: 'cold-publish',
        what: `derrick publish, ${formatBytes(imageBytes)} repo from docker-registry (median of ${rounds})`,
        figure: median(publish),
        unit: 'ms',
        baseline: { what: 'skopeo sync', figure: median(sync) },
        goal: { op: '<=', value: 1.0 },
        raw: { publishMs: publish, syncMs: sync, imageBytes },
      }),
    ];
  } finally {
    await stopAll();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
