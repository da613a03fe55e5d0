// What the machine was when the bench ran: results.json carries it beside every figure, since
// ratios on a loaded 2-core box and on a quiet 16-core one are not the same claim.
import { spawnSync } from 'node:child_process';
import os from 'node:os';

export interface MachineFacts {
  cpuModel: string;
  cpus: number;
  ramBytes: number;
  node: string;
  kernel: string;
  platform: string;
  loadAtStart: number[];
  loadAtEnd?: number[];
}

export function machineFacts(): MachineFacts {
  return {
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    cpus: os.cpus().length,
    ramBytes: os.totalmem(),
    node: process.version,
    kernel: os.release(),
    platform: `${os.platform()} ${os.arch()}`,
    loadAtStart: os.loadavg(),
  };
}

export function gitCommit(): { commit: string; dirty: boolean } {
  const head = spawnSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' });
  const status = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  return { commit: head.status === 0 ? head.stdout.trim() : 'unknown', dirty: status.status === 0 && status.stdout.trim() !== '' };
}
