// Publisher benchmark: an incremental publish of a 1,000-tag repo (one tag added) against a
// one-tag publish, both as real CLI runs (what cron does), plus the blob bytes copied.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { layout, MASTER_NAME_RE } from '../../shared/layout.js';
import { generateImage, generateManyTags } from '../gen-image.js';
import { row, type BenchContext, type Row } from './table.js';
import { derrickArgv, median } from './util.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../cli.js');

function publish(config: string, repo: string): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, derrickArgv(CLI, 'publish', '-c', config, repo), { encoding: 'utf8' });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`publish ${repo} failed (${r.status}): ${r.stderr}`);
  if (!/: published /.test(r.stdout)) throw new Error(`publish ${repo} did not publish: ${r.stdout}`);
  return ms;
}

/** Bytes in the newest master's blobs/ that are not the store's own inode (copies, not links). */
async function copiedBytes(root: string, repo: string): Promise<{ files: number; copied: number }> {
  const l = layout(root);
  const masters = (await fs.readdir(l.masterDir(repo))).filter((n) => MASTER_NAME_RE.test(n)).sort();
  const dir = l.master(repo, masters.at(-1)!);
  let files = 0;
  let copied = 0;
  for (const name of await fs.readdir(path.join(dir, 'blobs'))) {
    const st = await fs.stat(path.join(dir, 'blobs', name));
    const store = await fs.stat(l.storeBlob(name));
    files++;
    if (st.ino !== store.ino) copied += st.size;
  }
  return { files, copied };
}

export interface PublishBench {
  tags: number;
  incrementalMs: number;
  oneTagMs: number;
  ratio: number;
  blobFiles: number;
  copiedBytes: number;
}

export async function benchPublish(rounds = 5): Promise<PublishBench> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-publish-'));
  try {
    const many = path.join(dir, 'many');
    const one = path.join(dir, 'one');
    await generateManyTags({ layoutDir: many, count: 1000, prefix: 't' });
    await generateImage({ layoutDir: one, tag: 'latest', seed: 'one-0' });
    const config = path.join(dir, 'derrick.yaml');
    await fs.writeFile(config, `root: ./var\nkeep: 1\ngrace: 0s\nrepos:\n  - name: bench/many\n    from: oci:${many}\n  - name: bench/one\n    from: oci:${one}\n`);
    publish(config, 'bench/many');
    publish(config, 'bench/one');
    const inc: number[] = [];
    const base: number[] = [];
    for (let i = 1; i <= rounds; i++) {
      await generateImage({ layoutDir: many, tag: `added-${i}`, seed: `added-${i}` });
      inc.push(publish(config, 'bench/many'));
      await generateImage({ layoutDir: one, tag: 'latest', seed: `one-${i}` });
      base.push(publish(config, 'bench/one'));
    }
    const c = await copiedBytes(path.join(dir, 'var'), 'bench/many');
    return {
      tags: 1000 + rounds,
      incrementalMs: median(inc),
      oneTagMs: median(base),
      ratio: median(inc) / median(base),
      blobFiles: c.files,
      copiedBytes: c.copied,
    };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export async function run(ctx: BenchContext): Promise<Row[]> {
  const rounds = ctx.quick ? 3 : 5;
  ctx.log(`publish: 1,000-tag repo plus one, against a one-tag repo, ${rounds} rounds`);
  const p = await benchPublish(rounds);
  return [
    row({ group: 'publish', what: `incremental, 1,000 tags + 1 (median of ${rounds})`, figure: p.incrementalMs, unit: 'ms', baseline: { what: 'one-tag publish', figure: p.oneTagMs }, goal: { op: '<=', value: 2 }, raw: p }),
    row({ group: 'publish', what: `blob bytes copied into the master (${p.blobFiles} blobs)`, figure: p.copiedBytes, unit: 'B', goal: { op: '<=', value: 0 } }),
  ];
}
