// `derrick push [TARGET...]`, and the push after every `derrick publish`: every target at once,
// each under its own lock, so a dead or slow edge holds up no other (its rsyncs time out after
// targets[].timeout). Each target gets the origin's current publishes, whatever it missed in between.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Config, TargetConfig } from '../../shared/config.js';
import { TMP_PREFIX, layout as makeLayout, masterNameDate, repoNameFromKey, type Layout } from '../../shared/layout.js';
import type { Logger } from '../../shared/log.js';
import { formatBytes, formatDuration } from '../../shared/units.js';
import { currentPublish } from '../../shared/publish/current.js';
import { readdirOrEmpty } from '../../shared/publish/fsutil.js';
import { LockBusyError, acquireLock } from '../../shared/publish/lock.js';
import { readPushState, writePushMetrics, writePushState } from './push-state.js';
import { startSshMaster } from './ssh-master.js';
import { pushTarget, type LocalRepo, type TargetResult } from './push-target.js';

export interface PushRunOptions {
  config: Config;
  /** Target names (default: all). */
  targets?: string[];
  waitMs?: number;
  log: Logger;
  print?: (line: string, isError: boolean) => void;
}

/** Every repo the origin serves, with the master its web link names (complete by invariant 2). */
export async function servedRepos(l: Layout): Promise<LocalRepo[]> {
  const out: LocalRepo[] = [];
  for (const key of (await readdirOrEmpty(l.webDir)).sort()) {
    if (key.startsWith(TMP_PREFIX) || key.startsWith('.')) continue;
    const name = repoNameFromKey(key);
    const cur = await currentPublish(l, name);
    if (cur.web) out.push({ name, master: cur.web });
  }
  return out;
}

export function lagSeconds(repos: LocalRepo[], r: TargetResult, now: Date): number {
  const behind = repos.filter((x) => r.serves[x.name] !== x.master).map((x) => masterNameDate(x.master).getTime());
  return behind.length ? Math.max(0, Math.round((now.getTime() - Math.min(...behind)) / 1000)) : 0;
}

export function pushSummaryLines(r: TargetResult): Array<[string, boolean]> {
  const lines: Array<[string, boolean]> = r.failed.map((f) => [`error: push ${r.target}: ${f.repo ? `${f.repo}: ` : ''}${f.error.replace(/^push \S+: /, '')}`, true]);
  const pruned = r.pruned ? `, ${r.pruned} old masters pruned` : '';
  const state = r.failed.length ? 'FAILED' : 'ok';
  lines.push([`push ${r.target}: ${state}: ${r.sent.length} repos sent (${formatBytes(r.bytesSent)}), ${r.unchanged.length} up to date${pruned} in ${formatDuration(r.ms)}`, false]);
  return lines;
}

/**
 * One target under its lock. What this host serves is read after the lock is taken: read before,
 * a push that waited behind a later publish's push would move the edge back to the older publish.
 */
async function pushLocked(config: Config, t: TargetConfig, l: Layout, waitMs: number): Promise<{ r: TargetResult; repos: LocalRepo[] }> {
  let lock;
  try {
    lock = await acquireLock(path.join(l.locksDir, `push-${t.name}.lock`), `push ${t.name}`, waitMs);
  } catch (err) {
    if (!(err instanceof LockBusyError)) throw err;
    const r: TargetResult = { target: t.name, sent: [], unchanged: [], failed: [{ error: err.message }], serves: {}, pruned: 0, bytesSent: 0, ms: 0 };
    return { r, repos: await servedRepos(l) };
  }
  const repos = await servedRepos(l);
  const stage = await fs.mkdtemp(path.join(os.tmpdir(), `derrick-push-${t.name}-`));
  const master = await startSshMaster(t, stage);
  try {
    return { r: await pushTarget(config, t, l, repos, stage, master.controlPath), repos };
  } finally {
    await master.stop();
    await fs.rm(stage, { recursive: true, force: true });
    await lock.release();
  }
}

export async function runPush(opts: PushRunOptions): Promise<TargetResult[]> {
  const { config } = opts;
  const l = makeLayout(config.root);
  const selected = opts.targets?.length ? config.targets.filter((t) => opts.targets!.includes(t.name)) : config.targets;
  const results = await Promise.all(selected.map(async (t) => {
    const { r, repos } = await pushLocked(config, t, l, opts.waitMs ?? 0);
    const at = new Date();
    // An edge that could not even be listed serves what it served after the last push we know of.
    r.serves = { ...(await readPushState(l, t.name))?.serves, ...r.serves };
    await writePushState(l, {
      target: t.name, at: at.toISOString(), ok: r.failed.length === 0, errors: r.failed.map((f) => f.error),
      sent: r.sent.length, unchanged: r.unchanged.length, bytesSent: r.bytesSent, lagSeconds: lagSeconds(repos, r, at), serves: r.serves,
    });
    for (const [line, isError] of pushSummaryLines(r)) opts.print?.(line, isError);
    opts.log.info({ ...r }, 'push done');
    return r;
  }));
  await writePushMetrics(l, config.targets.map((t) => t.name));
  return results;
}

export function pushExitCode(results: TargetResult[]): number {
  return results.some((r) => r.failed.length) ? 1 : 0;
}
