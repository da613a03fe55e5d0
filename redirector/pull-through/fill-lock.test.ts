// The cross-process fill lock on real files: one holder; a second claimant waits for the release
// and then finds the object stored; a holder that died (a worker killed mid-fill) leaves a lock
// that is broken at once; a holder that never finishes makes the waiter give up with its pid.
import { spawn, spawnSync } from 'node:child_process';
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
    // How often each claimant looked in the store: once on taking the lock, or once after each wait.
    const asked: Record<string, string[]> = { first: [], second: [] };
    const first = await locks.claim(digest('a'), async () => (asked.first!.push('check'), stored), 5000);
    expect(first).toBeDefined();
    expect(asked.first).toEqual(['check']);
    let settled = false;
    const second = locks
      .claim(digest('a'), async () => (asked.second!.push('check'), stored), 5000)
      .finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    expect(settled, 'waits while the lock is held').toBe(false);
    stored = true;
    await first!.release();
    expect(await second).toBeUndefined();
    expect(asked.second).toEqual(['check']);
    expect(await fs.readdir(l.locksDir)).toEqual([]);
  });

  it('an object stored between the caller\'s check and the lock: no lock is kept, nothing to fetch', async () => {
    const locks = createFillLocks(l);
    const asked: string[] = [];
    expect(await locks.claim(digest('d'), async () => (asked.push('check'), true), 1000)).toBeUndefined();
    expect(asked).toEqual(['check']);
    expect(await fs.readdir(l.locksDir)).toEqual([]);
  });

  it('a holder that dies while another waits: its lock is broken then, long before the wait limit', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      await fs.mkdir(l.locksDir, { recursive: true });
      const file = path.join(l.locksDir, `fill-${'e'.repeat(64)}.lock`);
      await fs.writeFile(file, `${child.pid}\n${new Date().toISOString()}\n`);
      const locks = createFillLocks(l);
      const asked: string[] = [];
      const started = Date.now();
      const claim = locks.claim(digest('e'), async () => (asked.push('check'), false), 20_000);
      await new Promise((r) => setTimeout(r, 300));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const lock = await claim;
      expect(lock).toBeDefined();
      expect(Date.now() - started).toBeLessThan(10_000);
      // Woken by the death, not by a release: the store is checked once after the wait, then the lock taken.
      expect(asked).toEqual(['check', 'check']);
      expect((await fs.readFile(file, 'utf8')).split('\n')[0]).toBe(String(process.pid));
      await lock!.release();
      expect(await fs.readdir(l.locksDir)).toEqual([]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('a lock file naming no pid (being written) holds the waiter, and its timeout names no pid', async () => {
    await fs.mkdir(l.locksDir, { recursive: true });
    const file = path.join(l.locksDir, `fill-${'f'.repeat(64)}.lock`);
    await fs.writeFile(file, '');
    const asked: string[] = [];
    const err = await createFillLocks(l)
      .claim(digest('f'), async () => (asked.push('check'), false), 300)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FillWaitTimeout);
    expect((err as Error).name).toBe('FillWaitTimeout');
    expect((err as FillWaitTimeout).holder).toBeUndefined();
    // No pid to watch: the waiter waits for the file to go, without checking the store meanwhile.
    expect(asked).toEqual([]);
    expect((err as Error).message).toBe(`another derrick process is still fetching ${digest('f')}`);
    await fs.rm(file);
  });

  it('a store check that throws releases the lock it was taken under', async () => {
    const err = await createFillLocks(l)
      .claim(digest('9'), async () => {
        throw new Error('unsupported digest');
      }, 1000)
      .catch((e: unknown) => e);
    expect((err as Error).message).toBe('unsupported digest');
    expect(await fs.readdir(l.locksDir)).toEqual([]);
  });

  it('a locks dir that cannot be written is an error at once, not a wait', async () => {
    const bad = await tmpDir('derrick-fill-lock-bad');
    try {
      const lb = layout(bad.dir);
      await fs.mkdir(path.dirname(lb.locksDir), { recursive: true });
      await fs.writeFile(lb.locksDir, 'not a directory');
      const err = await createFillLocks(lb)
        .claim(digest('a'), async () => false, 60_000)
        .catch((e: unknown) => e);
      expect((err as NodeJS.ErrnoException).code).toBe('ENOTDIR');
    } finally {
      await bad.cleanup();
    }
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
