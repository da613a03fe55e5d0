// Inter-process locks for cron runs on one host: a lock is a file created atomically with
// link(2), holding the owner's pid. A lock whose owner died (SIGKILL, OOM) is broken at once,
// not after a timeout, so a crashed publish never blocks the next one.
//
// The calls on a lock file are synchronous on purpose: a publish run takes and releases one lock
// per repo, and for 1,000 repos the promise and threadpool round trips of these tiny calls cost
// ten times the calls themselves (measured: 0.9 s of CPU against 0.07 s).
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import path from 'node:path';
import { TMP_PREFIX } from '../layout.js';
import { isPidAlive, readdirOrEmpty, tmpName, tmpNamePid, withPath } from './fsutil.js';

export class LockBusyError extends Error {
  constructor(
    readonly what: string,
    readonly pid: number | undefined,
  ) {
    super(`${what} is busy${pid ? ` (locked by pid ${pid})` : ''}`);
    this.name = 'LockBusyError';
  }
}

export interface Lock {
  release(): Promise<void>;
}

async function ownerPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await fs.readFile(file, 'utf8')).split('\n')[0] ?? '', 10);
    return Number.isFinite(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function ownerPidSync(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fsSync.readFileSync(file, 'utf8').split('\n')[0] ?? '', 10);
    return Number.isFinite(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function unlinkIfThere(file: string): void {
  try {
    fsSync.unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Writes a lock file; on failure (a full disk) removes what was written and names the file. */
async function writeLockFile(file: string, text: string): Promise<void> {
  try {
    await fs.writeFile(file, text);
  } catch (err) {
    await fs.rm(file, { force: true });
    throw withPath(err, file);
  }
}

/** The same, synchronous (see the file comment). `withPath` keeps the error's code. */
function writeLockFileSync(file: string, text: string): void {
  try {
    fsSync.writeFileSync(file, text);
  } catch (err) {
    fsSync.rmSync(file, { force: true });
    throw withPath(err, file);
  }
}

/** Creates `file` holding our pid, whole or not at all (link of a written temp); false if it exists. */
async function tryCreate(file: string): Promise<boolean> {
  const tmp = tmpName(path.dirname(file), 'lock');
  try {
    writeLockFileSync(tmp, `${process.pid}\n${new Date().toISOString()}\n`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    // The locks dir is made on first use, not checked on every lock.
    await fs.mkdir(path.dirname(file), { recursive: true });
    writeLockFileSync(tmp, `${process.pid}\n${new Date().toISOString()}\n`);
  }
  try {
    fsSync.linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    unlinkIfThere(tmp);
  }
}

/**
 * A lock file with no readable pid is normal for an instant (released and re-created between our
 * calls); only one that stays so this long is taken for debris and broken.
 */
const UNREADABLE_LOCK_GRACE_MS = 10_000;

/** Age of the lock file, or undefined when it is gone. */
async function lockAgeMs(file: string): Promise<number | undefined> {
  try {
    return Date.now() - (await fs.stat(file)).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Breaking a dead owner's lock is itself guarded by a short-lived lock, so two waiters can't
 * both decide the same lock is stale and each remove the other's fresh one. Returns who holds the
 * lock (a live pid, or 'unknown' for a file without a readable one), or undefined when nothing
 * stands in the way any more: try again at once.
 */
async function breakIfStale(file: string): Promise<number | 'unknown' | undefined> {
  const pid = await ownerPid(file);
  if (pid !== undefined && isPidAlive(pid)) return pid;
  if (pid === undefined) {
    const age = await lockAgeMs(file);
    // Released since our attempt: nothing to break. Going on would remove the lock another process
    // may create in the meantime (two holders at once; the contention test caught exactly that).
    if (age === undefined) return undefined;
    if (age < UNREADABLE_LOCK_GRACE_MS) return 'unknown';
  }
  const guard = `${file}.break`;
  if (!(await tryCreate(guard))) {
    const gpid = await ownerPid(guard);
    // Only a dead breaker's guard is removed; a missing owner means it was just released.
    if (gpid !== undefined && !isPidAlive(gpid)) await fs.rm(guard, { force: true });
    return pid ?? 'unknown';
  }
  try {
    // Under the guard nobody else breaks, and a dead owner never releases: the file read again is
    // the one to remove only if it still names the same dead pid, or (debris) still has none and
    // is still old. "Still none" alone is not enough: the file may have been released and made
    // afresh by a live holder between the two reads.
    const again = await ownerPid(file);
    const stale = pid !== undefined ? again === pid : again === undefined && ((await lockAgeMs(file)) ?? 0) >= UNREADABLE_LOCK_GRACE_MS;
    if (stale) await fs.rm(file, { force: true });
  } finally {
    await fs.rm(guard, { force: true });
  }
  return undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Takes the lock at `file`, waiting up to `waitMs` (0: fail at once with LockBusyError). */
export async function acquireLock(file: string, what: string, waitMs = 0): Promise<Lock> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (await tryCreate(file)) {
      return {
        release: async () => {
          if (ownerPidSync(file) === process.pid) unlinkIfThere(file);
        },
      };
    }
    const holder = await breakIfStale(file);
    if (holder === undefined) continue;
    if (Date.now() >= deadline) throw new LockBusyError(what, holder === 'unknown' ? undefined : holder);
    await sleep(100 + Math.random() * 150);
  }
}

/**
 * Removes what killed processes left in the locks dir: their shared registrations, the temp files
 * of an interrupted tryCreate, break guards and the locks they held. Nothing else cleans them up between two gc runs.
 */
async function sweepDead(storeLock: string): Promise<void> {
  const dir = path.dirname(storeLock);
  const shared = `${path.basename(storeLock)}.shared.`;
  for (const name of await readdirOrEmpty(dir)) {
    let pid: number | undefined;
    if (name.startsWith(shared)) pid = Number(name.slice(shared.length));
    else if (name.startsWith(TMP_PREFIX)) pid = tmpNamePid(name);
    else if (name.endsWith('.break')) pid = await ownerPid(path.join(dir, name));
    else if (name.endsWith('.lock') && name !== path.basename(storeLock)) {
      // A killed process's repo, push or fill lock (serve's workers take one per fill): broken
      // under the guard, like any acquirer would, so a live holder's fresh lock is never removed.
      await breakIfStale(path.join(dir, name));
      continue;
    }
    if (pid !== undefined && Number.isInteger(pid) && pid > 0 && !isPidAlive(pid)) await fs.rm(path.join(dir, name), { force: true });
  }
}

/**
 * The store lock is shared by publishes (many repos may sync into the store at once) and
 * exclusive for gc (which deletes what no repo references). A shared holder registers a file
 * and then checks for an exclusive holder; gc takes the exclusive file and then waits for the
 * shared holders to drain. Each side writes before it reads, so they can't both miss each other.
 */
export async function acquireStoreShared(storeLock: string, waitMs = 0): Promise<Lock> {
  const dir = path.dirname(storeLock);
  await fs.mkdir(dir, { recursive: true });
  const mine = `${storeLock}.shared.${process.pid}`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    await writeLockFile(mine, `${process.pid}\n`);
    const holder = await ownerPid(storeLock);
    if (holder === undefined || !isPidAlive(holder)) {
      await sweepDead(storeLock);
      return { release: () => fs.rm(mine, { force: true }) };
    }
    await fs.rm(mine, { force: true });
    if (Date.now() >= deadline) throw new LockBusyError('the store (gc running)', holder);
    await sleep(100 + Math.random() * 150);
  }
}

export async function acquireStoreExclusive(storeLock: string, waitMs = 0): Promise<Lock> {
  const lock = await acquireLock(storeLock, 'the store', waitMs);
  const deadline = Date.now() + waitMs;
  const prefix = `${path.basename(storeLock)}.shared.`;
  for (;;) {
    const live: number[] = [];
    for (const name of await readdirOrEmpty(path.dirname(storeLock))) {
      if (!name.startsWith(prefix)) continue;
      const pid = Number(name.slice(prefix.length));
      if (pid !== process.pid && isPidAlive(pid)) live.push(pid);
      else if (pid !== process.pid) await fs.rm(path.join(path.dirname(storeLock), name), { force: true });
    }
    if (live.length === 0) {
      // gc is the run that also cleans up: what killed processes left in the locks dir goes too.
      await sweepDead(storeLock);
      return lock;
    }
    if (Date.now() >= deadline) {
      await lock.release();
      throw new LockBusyError('the store (publish running)', live[0]);
    }
    await sleep(100 + Math.random() * 150);
  }
}
