// The cross-process fill lock on real files: one holder; a second claimant waits for the release
// and then finds the object stored; a holder that died (a worker killed mid-fill) leaves a lock
// that is broken at once; a holder that never finishes makes the waiter give up with its pid.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { layout, type Layout } from '../../shared/layout.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { createFillLocks, FillWaitTimeout } from './fill-lock.js';

const digest = (c: string) => `sha256:${c.repeat(64)}`;

describe('fill lock', () => {
  let tmp: TmpDir;
  let l: Layout;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-fill-lock');
    l = layout(tmp.dir);
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  it('a second claimant waits for the holder, then finds the object stored instead of fetching', async () => {
    const locks = createFillLocks(l);
    let stored = false;
    const first = await locks.claim(digest('a'), async () => stored, 5000);
    expect(first).toBeDefined();
    let settled = false;
    const second = locks.claim(digest('a'), async () => stored, 5000).finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled, 'waits while the lock is held').toBe(false);
    stored = true;
    await first!.release();
    expect(await second).toBeUndefined();
    expect(await fs.readdir(l.locksDir)).toEqual([]);
  });

  it('a lock left by a dead process is broken at once; a scoped lock is another file', async () => {
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    await fs.mkdir(l.locksDir, { recursive: true });
    const file = path.join(l.locksDir, `fill-${'b'.repeat(64)}.lock`);
    await fs.writeFile(file, `${dead}\n`);
    const locks = createFillLocks(l);
    const lock = await locks.claim(digest('b'), async () => false, 1000);
    expect(lock).toBeDefined();
    expect((await fs.readFile(file, 'utf8')).split('\n')[0]).toBe(String(process.pid));
    const scoped = await locks.claim(digest('b'), async () => false, 1000, 'demo~repo');
    expect(await fs.readdir(l.locksDir)).toEqual([`fill-${'b'.repeat(64)}.lock`, `fill-demo~repo@${'b'.repeat(64)}.lock`].sort());
    await lock!.release();
    await scoped!.release();
  });

  it('a holder that never finishes: the waiter gives up with FillWaitTimeout naming the pid', async () => {
    const locks = createFillLocks(l);
    const held = await locks.claim(digest('c'), async () => false, 1000);
    const err = await locks.claim(digest('c'), async () => false, 300).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FillWaitTimeout);
    expect((err as Error).message).toBe(`another derrick process (pid ${process.pid}) is still fetching ${digest('c')}`);
    await held!.release();
  });
});
