// Push benchmark: a repo of DERRICK_BENCH_PUSH_MB (default 1024) MiB pushed to a plain rsync daemon
// edge, then one new tag with one new layer published and pushed again. The incremental push's
// bytes on the wire (rsync --stats) are compared with the new layer's size; the first push (the
// whole repo) is the baseline.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/log.js';
import { runPublish } from '../../publisher/run-publish.js';
import { runPush } from '../../publisher/push/run-push.js';
import { generateImage } from '../gen-image.js';
import { freePort, stop } from './util.js';

export interface PushBench {
  repoBytes: number;
  fullSent: number;
  newLayerBytes: number;
  incrementalSent: number;
  fullMs: number;
  incrementalMs: number;
}

export async function benchPush(): Promise<PushBench> {
  const mb = Number(process.env.DERRICK_BENCH_PUSH_MB ?? 1024);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-bench-push-'));
  const port = await freePort();
  await fs.mkdir(path.join(dir, 'edge'), { recursive: true });
  await fs.writeFile(path.join(dir, 'rsyncd.conf'), `pid file = ${dir}/rsyncd.pid\naddress = 127.0.0.1\n[edge]\npath = ${dir}/edge\nuse chroot = no\nmunge symlinks = no\nread only = no\n${process.getuid?.() === 0 ? 'uid = 0\ngid = 0\n' : ''}`);
  const daemon = spawn('rsync', ['--daemon', '--no-detach', '--port', String(port), '--config', path.join(dir, 'rsyncd.conf')], { stdio: 'ignore' });
  try {
    const layoutDir = path.join(dir, 'images');
    const layer = 64 * 1024 * 1024;
    const layers = Array.from({ length: Math.max(1, Math.round((mb * 1024 * 1024) / layer)) }, () => layer);
    const base = await generateImage({ layoutDir, tag: 'v1', layers, gzip: false });
    const yaml = `root: ./var\nrepos:\n  - name: big\n    from: oci:${layoutDir}\ntargets:\n  - name: edge\n    url: rsync://127.0.0.1:${port}/edge\n`;
    const config = parseConfig(yaml, path.join(dir, 'derrick.yaml'));
    const log = createLogger({ level: 'silent' });
    const push = async () => {
      const t0 = performance.now();
      const [r] = await runPush({ config, log });
      if (r!.failed.length) throw new Error(r!.failed.map((f) => f.error).join('\n'));
      return { sent: r!.bytesSent, ms: performance.now() - t0 };
    };
    await runPublish({ config, policy: 'default', log });
    const full = await push();
    const next = await generateImage({ layoutDir, tag: 'v2', seed: 'v2', layers: [layers[0]!], gzip: false });
    await runPublish({ config, policy: 'default', log });
    const incr = await push();
    const newLayerBytes = next.totalBytes - (await sizeOfShared(base.blobs, next.blobs, layoutDir));
    return { repoBytes: base.totalBytes, fullSent: full.sent, newLayerBytes, incrementalSent: incr.sent, fullMs: full.ms, incrementalMs: incr.ms };
  } finally {
    await stop(daemon);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Bytes of the blobs the new image shares with the old one (counted in its totalBytes but not new). */
async function sizeOfShared(old: string[], now: string[], layoutDir: string): Promise<number> {
  let n = 0;
  for (const d of now.filter((x) => old.includes(x))) n += (await fs.stat(path.join(layoutDir, 'blobs', 'sha256', d.slice(7)))).size;
  return n;
}

export function formatPush(p: PushBench): string {
  const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return [
    'push (one rsync-daemon edge on 127.0.0.1, rsync --stats bytes sent)',
    `  whole repo, first push (baseline): ${mib(p.fullSent)} sent for a ${mib(p.repoBytes)} repo in ${(p.fullMs / 1000).toFixed(1)} s`,
    `  one new tag:                       ${mib(p.incrementalSent)} sent for ${mib(p.newLayerBytes)} of new blobs in ${(p.incrementalMs / 1000).toFixed(1)} s`,
    `  ratio to the new blobs: ${(p.incrementalSent / p.newLayerBytes).toFixed(3)}x (goal <= 1.05x)  ${p.incrementalSent <= p.newLayerBytes * 1.05 ? 'OK' : 'MISSED'}`,
  ].join('\n');
}

/** The push row of `npm run bench` (scripts/bench/table.ts): bytes sent for one new tag. */
export async function run(ctx: import('./table.js').BenchContext): Promise<import('./table.js').Row[]> {
  const { row } = await import('./table.js');
  if (ctx.quick && process.env.DERRICK_BENCH_PUSH_MB === undefined) process.env.DERRICK_BENCH_PUSH_MB = '256';
  ctx.log(`push: a ${process.env.DERRICK_BENCH_PUSH_MB ?? 1024} MiB repo to an rsync-daemon edge, then one new tag`);
  const p = await benchPush();
  const mib = (n: number) => n / 1024 / 1024;
  return [
    row({
      group: 'push', what: 'one new tag: MiB sent to the edge', figure: mib(p.incrementalSent), unit: 'MiB',
      baseline: { what: 'new blobs', figure: mib(p.newLayerBytes) }, goal: { op: '<=', value: 1.05 }, raw: p,
    }),
  ];
}
