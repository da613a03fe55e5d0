// Locks across real processes: children run the built lock module (dist/shared/publish/lock.js) and
// hold or race for locks while this process (the TypeScript module) contends with them. The first
// block pins the break rules in this process alone, on lock files laid down by hand.
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startProcess, type RunningProcess } from '../../test/helpers/proc.js';
import { canMountTmpfs, mountSmallFs, type SmallFs } from '../../test/helpers/small-fs.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { LockBusyError, acquireLock, acquireStoreExclusive, acquireStoreShared } from './lock.js';

const LOCK_JS = pathToFileURL(path.resolve(import.meta.dirname, '../../dist/shared/publish/lock.js')).href;

/** A pid above the kernel's pid_max (at most 2^22): its lock file is a dead holder's. */
const DEAD = 999_999_999;
/** Our parent (the test runner): a live process that is not us. */
const LIVE = process.ppid;

// The break rules, in this process, on lock files laid down by hand: a live holder's lock is never
// taken, a dead holder's is taken at once, an unreadable one only once it is old, and breaking
// goes through a guard file that only a dead breaker's copy of is removed.
describe('lock rules (in process)', () => {
  let tmp: TmpDir;
  let dir: string;
  let lockFile: string;
  let storeLock: string;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-lock-rules');
    dir = path.join(tmp.dir, 'locks');
    lockFile = path.join(dir, 'repo-a.lock');
    storeLock = path.join(dir, 'store.lock');
  });
  afterEach(async () => {
    await tmp.cleanup();
  });
  const lay = async (name: string, text: string, ageMs = 0) => {
    await fs.mkdir(dir, { recursive: true });
    const f = path.join(dir, name);
    await fs.writeFile(f, text);
    if (ageMs) await fs.utimes(f, new Date(Date.now() - ageMs), new Date(Date.now() - ageMs));
    return f;
  };
  const listing = async () => (await fs.readdir(dir)).sort();
  const busy = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as LockBusyError);

  it('takes a free lock (making the locks dir), holding our pid and the time, and releases only its own', async () => {
    const t0 = Date.now();
    const lock = await acquireLock(lockFile, 'repo a');
    const [pid, time, end] = (await fs.readFile(lockFile, 'utf8')).split('\n');
    expect([pid, end]).toEqual([String(process.pid), '']);
    expect(Date.parse(time!)).toBeGreaterThanOrEqual(t0 - 1);
    expect(await listing()).toEqual(['repo-a.lock']);
    await lock.release();
    expect(await listing()).toEqual([]);
    await lock.release(); // twice: nothing to do
    // On a fresh root nothing exists yet: the locks dir and its parents are made.
    const fresh = await acquireLock(path.join(tmp.dir, 'new-root', 'locks', 'x.lock'), 'x');
    await fresh.release();
    // A lock that was broken and re-taken by another process is not ours to remove.
    const again = await acquireLock(lockFile, 'repo a');
    await fs.writeFile(lockFile, `${LIVE}\n`);
    await again.release();
    expect(await fs.readFile(lockFile, 'utf8')).toBe(`${LIVE}\n`);
  });

  it("a live holder's lock is never taken: busy at once, or after waiting, naming the pid; a waiter gets it once it goes", async () => {
    await lay('repo-a.lock', `${LIVE}\nsome time\n`);
    const err = await busy(acquireLock(lockFile, 'repo a', 0));
    expect(err).toBeInstanceOf(LockBusyError);
    expect(err).toMatchObject({ name: 'LockBusyError', what: 'repo a', pid: LIVE, message: `repo a is busy (locked by pid ${LIVE})` });
    const t0 = Date.now();
    expect(await busy(acquireLock(lockFile, 'repo a', 400))).toMatchObject({ pid: LIVE });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(await listing()).toEqual(['repo-a.lock']);
    expect(await fs.readFile(lockFile, 'utf8')).toBe(`${LIVE}\nsome time\n`);
    setTimeout(() => void fs.rm(lockFile), 300);
    const t1 = Date.now();
    const lock = await acquireLock(lockFile, 'repo a', 10_000);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(250);
    expect((await fs.readFile(lockFile, 'utf8')).split('\n')[0]).toBe(String(process.pid));
    await lock.release();
  });

  it("a dead holder's lock is broken at once, through a guard that is gone afterwards", async () => {
    await lay('repo-a.lock', `${DEAD}\n`);
    const lock = await acquireLock(lockFile, 'repo a', 0);
    expect(await fs.readFile(lockFile, 'utf8')).toMatch(new RegExp(`^${process.pid}\n`));
    expect(await listing()).toEqual(['repo-a.lock']);
    await lock.release();
  });

  it('a lock without a readable pid is busy while young and broken once old', async () => {
    for (const text of ['', 'not a pid\n']) {
      await lay('repo-a.lock', text, 5_000);
      const err = await busy(acquireLock(lockFile, 'repo a', 0));
      expect(err).toMatchObject({ pid: undefined, message: 'repo a is busy' });
      expect(await fs.readFile(lockFile, 'utf8')).toBe(text);
      await lay('repo-a.lock', text, 15_000);
      const lock = await acquireLock(lockFile, 'repo a', 0);
      await lock.release();
      expect(await listing()).toEqual([]);
    }
  });

  it("a live breaker's guard stops the break; a dead breaker's guard is removed and the break goes on", async () => {
    await lay('repo-a.lock', `${DEAD}\n`);
    await lay('repo-a.lock.break', `${LIVE}\n`);
    expect(await busy(acquireLock(lockFile, 'repo a', 0))).toMatchObject({ pid: DEAD });
    expect(await listing()).toEqual(['repo-a.lock', 'repo-a.lock.break']);
    expect(await fs.readFile(lockFile, 'utf8')).toBe(`${DEAD}\n`);
    // An old unreadable lock behind a live guard: busy, and no pid to name.
    await lay('repo-a.lock', '', 60_000);
    expect(await busy(acquireLock(lockFile, 'repo a', 0))).toMatchObject({ pid: undefined });
    // A guard without a readable pid is a breaker's between its write and link: never removed.
    await lay('repo-a.lock.break', '');
    expect(await busy(acquireLock(lockFile, 'repo a', 0))).toMatchObject({ pid: undefined });
    expect(await listing()).toEqual(['repo-a.lock', 'repo-a.lock.break']);

    await lay('repo-a.lock', `${DEAD}\n`);
    await lay('repo-a.lock.break', `${DEAD}\n`);
    // At once: the dead guard goes, but this attempt reports busy.
    expect(await busy(acquireLock(lockFile, 'repo a', 0))).toMatchObject({ pid: DEAD });
    expect(await listing()).toEqual(['repo-a.lock']);
    await lay('repo-a.lock.break', `${DEAD}\n`);
    // Waiting: the next attempt breaks the lock.
    const lock = await acquireLock(lockFile, 'repo a', 5_000);
    expect(await listing()).toEqual(['repo-a.lock']);
    await lock.release();
  });

  it('a lock file that cannot be written is an error naming it, and leaves nothing behind', async () => {
    await fs.mkdir(tmp.dir, { recursive: true });
    await fs.writeFile(path.join(tmp.dir, 'file'), '');
    const err = await acquireLock(path.join(tmp.dir, 'file', 'x.lock'), 'x').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENOTDIR' });
    expect((err as Error).message).toContain(path.join(tmp.dir, 'file'));
    expect(await fs.readdir(tmp.dir)).toEqual(['file']);
  });

  it("the store lock, shared: registers our pid, refused while a live gc holds it, not blocked by a dead gc's", async () => {
    await lay('store.lock', `${LIVE}\n`);
    expect(await busy(acquireStoreShared(storeLock, 0))).toMatchObject({ pid: LIVE, message: `the store (gc running) is busy (locked by pid ${LIVE})` });
    expect(await listing()).toEqual(['store.lock']);
    const t0 = Date.now();
    await busy(acquireStoreShared(storeLock, 300));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    await lay('store.lock', `${DEAD}\n`);
    const shared = await acquireStoreShared(storeLock, 0);
    expect(await fs.readFile(path.join(dir, `store.lock.shared.${process.pid}`), 'utf8')).toBe(`${process.pid}\n`);
    await shared.release();
    await shared.release(); // twice: nothing to do
    expect(await listing()).toEqual(['store.lock']);
  });

  it('the store lock, exclusive: refused while a live publish is registered, which it never removes; ours and dead ones do not block', async () => {
    await lay('store.lock', `${LIVE}\n`);
    expect(await busy(acquireStoreExclusive(storeLock, 0))).toMatchObject({ pid: LIVE, message: `the store is busy (locked by pid ${LIVE})` });
    await fs.rm(storeLock);
    await lay(`store.lock.shared.${LIVE}`, `${LIVE}\n`);
    expect(await busy(acquireStoreExclusive(storeLock, 0))).toMatchObject({ pid: LIVE, message: `the store (publish running) is busy (locked by pid ${LIVE})` });
    expect(await listing()).toEqual([`store.lock.shared.${LIVE}`]); // our store.lock released again
    const t0 = Date.now();
    await busy(acquireStoreExclusive(storeLock, 300));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    await fs.rm(path.join(dir, `store.lock.shared.${LIVE}`));

    await lay(`store.lock.shared.${DEAD}`, `${DEAD}\n`);
    const mine = await acquireStoreShared(storeLock, 0);
    const gc = await acquireStoreExclusive(storeLock, 0);
    expect(await listing()).toEqual(['store.lock', `store.lock.shared.${process.pid}`]);
    await gc.release();
    await mine.release();
    // A live publish that registers while gc waits: gc gets the store once it is gone.
    await lay(`store.lock.shared.${LIVE}`, `${LIVE}\n`);
    setTimeout(() => void fs.rm(path.join(dir, `store.lock.shared.${LIVE}`)), 300);
    const gc2 = await acquireStoreExclusive(storeLock, 10_000);
    await gc2.release();
    expect(await listing()).toEqual([]);
  });

  it("the store lock sweeps what dead processes left in the locks dir, and nothing of a live one's", async () => {
    const tmpOf = (pid: number | string) => `.tmp-lock.${pid}.0123456789ab`;
    const dead = [`store.lock.shared.${DEAD}`, tmpOf(DEAD), 'repo-a.lock.break', 'repo-dead.lock', 'fill-old-unreadable.lock'];
    const kept = [`store.lock.shared.${LIVE}`, tmpOf(LIVE), '.tmp-lock.no-pid', 'repo-b.lock.break', 'repo-live.lock', 'fill-young-unreadable.lock', 'store.lock.shared.x', 'store.lock.shared.0', 'store.lock.shared.1.5', 'store.lock.shared.-999999999', 'notes.txt'];
    // Names that are no pid (or a process group's) are not taken for a dead process's.
    for (const n of [`store.lock.shared.${DEAD}`, tmpOf(DEAD), `store.lock.shared.${LIVE}`, tmpOf(LIVE), '.tmp-lock.no-pid', 'store.lock.shared.x', 'store.lock.shared.0', 'store.lock.shared.1.5', 'store.lock.shared.-999999999']) await lay(n, '');
    await lay('notes.txt', '', 60_000); // old and without a pid, but not a lock: not ours to judge
    await lay('repo-a.lock.break', `${DEAD}\n`);
    await lay('repo-b.lock.break', `${LIVE}\n`);
    await lay('repo-dead.lock', `${DEAD}\n`);
    await lay('repo-live.lock', `${LIVE}\n`);
    await lay('fill-old-unreadable.lock', '', 60_000);
    await lay('fill-young-unreadable.lock', '');
    const shared = await acquireStoreShared(storeLock, 0);
    expect(await listing()).toEqual([...kept, `store.lock.shared.${process.pid}`].sort());
    expect(dead.some((n) => kept.includes(n))).toBe(false);
    await shared.release();
  });
});

// A lock file is written before it is linked into place: on a full disk the write fails, and the
// acquirer must fail naming the file, not take the lock with an empty file or leave a temp behind.
describe.skipIf(!canMountTmpfs())('locks on a full disk', () => {
  let tmp: TmpDir;
  let small: SmallFs;
  let dir: string;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-lock-full');
    small = await mountSmallFs(path.join(tmp.dir, 'mnt'), '64k');
    dir = path.join(small.dir, 'locks');
    await fs.mkdir(dir);
    await fs.writeFile(path.join(small.dir, 'filler'), Buffer.alloc(1024 * 1024)).catch(() => {});
    expect(small.free()).toBe(0);
  });
  afterAll(async () => {
    await small?.unmount();
    await tmp?.cleanup();
  });

  it('taking a lock fails with ENOSPC naming the file it was writing, and leaves nothing in the locks dir', async () => {
    const e1 = await acquireLock(path.join(dir, 'repo-a.lock'), 'repo a').catch((e: unknown) => e);
    expect(e1).toMatchObject({ code: 'ENOSPC' });
    expect((e1 as Error).message).toContain(`'${dir}/.tmp-lock.${process.pid}.`);
    const e2 = await acquireStoreShared(path.join(dir, 'store.lock')).catch((e: unknown) => e);
    expect(e2).toMatchObject({ code: 'ENOSPC', path: path.join(dir, `store.lock.shared.${process.pid}`) });
    expect(await fs.readdir(dir)).toEqual([]);
  });
});

type Kind = 'repo' | 'shared' | 'exclusive';

/**
 * A child that takes a lock (waiting up to waitMs), prints "got <pid>" or "busy <pid>", holds it for
 * holdMs (or until SIGTERM), releases it and prints "released".
 */
function holder(kind: Kind, file: string, opts: { waitMs?: number; holdMs?: number; startAt?: number } = {}): RunningProcess {
  const script = `
    const m = await import(${JSON.stringify(LOCK_JS)});
    const [kind, file, waitMs, holdMs, startAt] = process.argv.slice(1);
    const delay = Number(startAt) - Date.now();
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    let lock;
    try {
      lock = kind === 'repo' ? await m.acquireLock(file, 'repo test', Number(waitMs))
        : kind === 'shared' ? await m.acquireStoreShared(file, Number(waitMs))
        : await m.acquireStoreExclusive(file, Number(waitMs));
    } catch (err) {
      console.log((err instanceof m.LockBusyError ? 'busy ' : 'error ') + process.pid + ' ' + err.message);
      process.exit(75);
    }
    console.log('got ' + process.pid);
    const done = async () => { await lock.release(); console.log('released'); process.exit(0); };
    process.on('SIGTERM', done);
    if (Number(holdMs) >= 0) setTimeout(done, Number(holdMs)); else setInterval(() => {}, 1000);
  `;
  return startProcess(process.execPath, ['--input-type=module', '-e', script, kind, file, String(opts.waitMs ?? 0), String(opts.holdMs ?? -1), String(opts.startAt ?? 0)]);
}

describe('locks across processes', () => {
  let tmp: TmpDir;
  let lockFile: string;
  let storeLock: string;
  const procs: RunningProcess[] = [];

  beforeEach(async () => {
    tmp = await tmpDir('derrick-locks');
    lockFile = path.join(tmp.dir, 'locks', 'repo-a.lock');
    storeLock = path.join(tmp.dir, 'locks', 'store.lock');
  });
  afterEach(async () => {
    await Promise.all(procs.splice(0).map((p) => p.stop()));
    await tmp.cleanup();
  });
  const spawnHolder = (...args: Parameters<typeof holder>) => {
    const p = holder(...args);
    procs.push(p);
    return p;
  };

  it('a repo lock is exclusive: a second process is refused, naming the holder pid, until release', async () => {
    const a = spawnHolder('repo', lockFile);
    await a.waitForOutput(/^got /m);
    const err = await acquireLock(lockFile, 'repo a', 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockBusyError);
    expect((err as LockBusyError).pid).toBe(a.pid);
    expect((err as LockBusyError).message).toBe(`repo a is busy (locked by pid ${a.pid})`);
    // Another process is refused too.
    const b = spawnHolder('repo', lockFile);
    expect((await b.exited).code).toBe(75);
    expect(b.stdout()).toMatch(/^busy /);
    // A waiter gets it once the holder releases.
    const t0 = Date.now();
    setTimeout(() => void a.stop(), 400);
    const lock = await acquireLock(lockFile, 'repo a', 10_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
    expect(a.stdout()).toContain('released');
    expect((await fs.readFile(lockFile, 'utf8')).split('\n')[0]).toBe(String(process.pid));
    await lock.release();
    await expect(fs.access(lockFile)).rejects.toThrow();
  });

  it('exactly one of several processes racing for a free lock gets it', async () => {
    for (let round = 0; round < 2; round++) {
      const startAt = Date.now() + 1500; // after every child has started
      const racers = Array.from({ length: 5 }, () => spawnHolder('repo', lockFile, { holdMs: 2500, startAt }));
      await Promise.all(racers.map((p) => p.exited));
      const got = racers.filter((p) => /^got /m.test(p.stdout()));
      const busy = racers.filter((p) => /^busy /m.test(p.stdout()));
      expect(got.length, racers.map((p) => p.output()).join('\n')).toBe(1);
      expect(busy.length).toBe(4);
      expect(got[0]!.stdout()).toContain('released');
      await expect(fs.access(lockFile)).rejects.toThrow();
    }
  });

  it('stays mutually exclusive under contention (processes acquiring, holding briefly, releasing in a loop)', async () => {
    // Each holder creates an "inside" marker with O_EXCL while it holds the lock: a second holder
    // at the same time fails to create it and reports the violation.
    const inside = path.join(tmp.dir, 'inside');
    const script = `
      const m = await import(${JSON.stringify(LOCK_JS)});
      const fs = await import('node:fs/promises');
      const [file, inside, until] = process.argv.slice(1);
      let n = 0;
      while (Date.now() < Number(until)) {
        const lock = await m.acquireLock(file, 'stress', 20000);
        try {
          await fs.writeFile(inside, String(process.pid), { flag: 'wx' });
        } catch (err) {
          console.log('VIOLATION ' + process.pid + ' found ' + (await fs.readFile(inside, 'utf8').catch(() => '?')));
          process.exit(1);
        }
        n++;
        await new Promise((r) => setTimeout(r, Math.random() * 3));
        await fs.rm(inside);
        await lock.release();
      }
      console.log('acquired ' + n);
    `;
    const until = Date.now() + 1500 + 6000;
    const ps = Array.from({ length: 4 }, () => {
      const p = startProcess(process.execPath, ['--input-type=module', '-e', script, lockFile, inside, String(until)]);
      procs.push(p);
      return p;
    });
    const codes = await Promise.all(ps.map(async (p) => (await p.exited).code));
    const out = ps.map((p) => p.output()).join('');
    expect(out).not.toContain('VIOLATION');
    expect(codes).toEqual([0, 0, 0, 0]);
    const total = [...out.matchAll(/acquired (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
    expect(total).toBeGreaterThan(100);
  });

  it('a lock file without a readable pid is busy while young and broken as debris once old', async () => {
    await fs.mkdir(path.dirname(lockFile), { recursive: true });
    await fs.writeFile(lockFile, '');
    // Young: it may be a holder's file seen between a release and a re-create; never removed.
    await expect(acquireLock(lockFile, 'repo a', 0)).rejects.toBeInstanceOf(LockBusyError);
    await expect(fs.readFile(lockFile, 'utf8')).resolves.toBe('');
    const old = new Date(Date.now() - 60_000);
    await fs.utimes(lockFile, old, old);
    const lock = await acquireLock(lockFile, 'repo a', 0);
    expect((await fs.readFile(lockFile, 'utf8')).split('\n')[0]).toBe(String(process.pid));
    await lock.release();
  });

  it("a SIGKILLed holder's lock is broken at once by the next acquirer", async () => {
    const a = spawnHolder('repo', lockFile);
    await a.waitForOutput(/^got /m);
    process.kill(a.pid, 'SIGKILL');
    await a.exited;
    expect((await fs.readFile(lockFile, 'utf8')).split('\n')[0]).toBe(String(a.pid)); // left behind
    const t0 = Date.now();
    const lock = await acquireLock(lockFile, 'repo a', 0); // no waiting allowed
    expect(Date.now() - t0).toBeLessThan(1000);
    expect((await fs.readFile(lockFile, 'utf8')).split('\n')[0]).toBe(String(process.pid));
    await lock.release();
    // And by another process too.
    const b = spawnHolder('repo', lockFile);
    await b.waitForOutput(/^got /m);
    process.kill(b.pid, 'SIGKILL');
    await b.exited;
    const c = spawnHolder('repo', lockFile, { holdMs: 0 });
    expect((await c.exited).code).toBe(0);
    expect(c.stdout()).toMatch(/^got /);
    const left = (await fs.readdir(path.dirname(lockFile))).filter((n) => !n.startsWith('store'));
    expect(left).toEqual([]);
  });

  it("gc's store lock sweeps the locks killed processes held (a killed serve's fill locks), never a live holder's", async () => {
    const dir = path.dirname(storeLock);
    const dead = spawnHolder('repo', path.join(dir, 'fill-dead.lock'));
    await dead.waitForOutput(/^got /m);
    process.kill(dead.pid, 'SIGKILL');
    await dead.exited;
    const live = await acquireLock(path.join(dir, 'fill-live.lock'), 'a fill', 0);
    const gc = await acquireStoreExclusive(storeLock, 0);
    expect((await fs.readdir(dir)).sort()).toEqual(['fill-live.lock', 'store.lock']);
    await gc.release();
    await live.release();
  });

  it('the store lock: shared with other publishes, exclusive for gc, both ways', async () => {
    const pub = spawnHolder('shared', storeLock);
    await pub.waitForOutput(/^got /m);
    // Publishes share it.
    const mine = await acquireStoreShared(storeLock, 0);
    await mine.release();
    // gc can't have it while a publish holds it.
    const err = await acquireStoreExclusive(storeLock, 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockBusyError);
    expect((err as LockBusyError).message).toMatch(/publish running.*pid \d+/);
    expect((err as LockBusyError).pid).toBe(pub.pid);
    // A killed publish does not block gc, and the next publish sweeps its registration away.
    process.kill(pub.pid, 'SIGKILL');
    await pub.exited;
    expect(await fs.readdir(path.dirname(storeLock))).toEqual([`store.lock.shared.${pub.pid}`]);
    const next = await acquireStoreShared(storeLock, 0);
    expect(await fs.readdir(path.dirname(storeLock))).toEqual([`store.lock.shared.${process.pid}`]);
    await next.release();
    const t0 = Date.now();
    const gc = await acquireStoreExclusive(storeLock, 0);
    expect(Date.now() - t0).toBeLessThan(1000);
    // While gc holds it, a publish in another process is refused...
    const pub2 = spawnHolder('shared', storeLock);
    expect((await pub2.exited).code).toBe(75);
    expect(pub2.stdout()).toMatch(/^busy .*gc running/);
    // ...and one that waits gets in once gc releases.
    const pub3 = spawnHolder('shared', storeLock, { waitMs: 10_000, holdMs: 0 });
    await new Promise((r) => setTimeout(r, 700));
    expect(pub3.stdout()).not.toContain('got');
    await gc.release();
    expect((await pub3.exited).code).toBe(0);
    expect(pub3.stdout()).toMatch(/^got /);
    // A gc process killed while holding the store lock doesn't block publishes either.
    const gc2 = spawnHolder('exclusive', storeLock);
    await gc2.waitForOutput(/^got /m);
    process.kill(gc2.pid, 'SIGKILL');
    await gc2.exited;
    const after = await acquireStoreShared(storeLock, 0);
    await after.release();
    // Nothing is left but what the dead gc left (the next exclusive acquirer breaks that at once).
    const again = await acquireStoreExclusive(storeLock, 0);
    await again.release();
    expect(await fs.readdir(path.dirname(storeLock))).toEqual([]);
  });
});
