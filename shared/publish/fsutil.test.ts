// The durable-filesystem helpers every publish step goes through, on a real filesystem: temp
// names a later run can attribute to their writer, files created whole or not at all, hardlinks
// with a copy across filesystems, and no file descriptor left open on any path.
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import {
  exists, fsyncDir, isPidAlive, linkOrCopySync, mapLimit, readdirOrEmpty, readdirOrEmptySync,
  tmpName, tmpNamePid, withPath, writeNewFileSynced,
} from './fsutil.js';

/** A pid above the kernel's pid_max (at most 2^22): no process can have it. */
const NO_SUCH_PID = 999_999_999;

/** Open file descriptors of this process (Linux). */
const openFds = () => fsSync.readdirSync('/proc/self/fd').length;

const errnoError = (code: string, message: string, extra: Partial<NodeJS.ErrnoException> = {}) =>
  Object.assign(new Error(message), { code, ...extra });

describe('fsutil', () => {
  let tmp: TmpDir;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-fsutil');
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  it('tmpName: TMP_PREFIX, the label, our pid and 12 hex digits, unique per call, and tmpNamePid reads the pid back', () => {
    const a = tmpName('/d', 'lbl');
    const b = tmpName('/d', 'lbl');
    expect(a).not.toBe(b);
    expect(a).toMatch(new RegExp(`^/d/\\.tmp-lbl\\.${process.pid}\\.[0-9a-f]{12}$`));
    // The random half is drawn once per process; the counter half moves by one per name.
    expect(a.slice(-12, -6)).toBe(b.slice(-12, -6));
    expect(parseInt(b.slice(-6), 16) - parseInt(a.slice(-6), 16)).toBe(1);
    const bare = tmpName('/d');
    expect(bare).toMatch(new RegExp(`^/d/\\.tmp-${process.pid}\\.[0-9a-f]{12}$`));
    for (const n of [a, b, bare]) expect(tmpNamePid(path.basename(n))).toBe(process.pid);
    expect(tmpNamePid('.tmp-a~b.json.4242.0123456789ab')).toBe(4242);
    expect(tmpNamePid('.tmp-77.0123456789ab')).toBe(77);
    // Not a tmpName: write-file-atomic's temps, a short or non-hex suffix, a suffix not at the end.
    for (const n of ['a~b.json.1391209843', '.tmp-77.0123456789a', '.tmp-77.0123456789ag', '.tmp-77.0123456789abc', '.tmp-x.0123456789ab', '.tmp-77.0123456789ab.x', '.tmp-77x0123456789ab']) {
      expect(tmpNamePid(n), n).toBeUndefined();
    }
  });

  it('isPidAlive: ours and a live one are alive, a pid no process has is not', () => {
    expect(isPidAlive(process.pid)).toBe(true);
    expect(isPidAlive(process.ppid)).toBe(true);
    expect(isPidAlive(NO_SUCH_PID)).toBe(false);
  });

  it('withPath names the file in a path-less errno error and leaves every other error alone', () => {
    const bare = errnoError('ENOSPC', 'ENOSPC: no space left on device, write');
    expect(withPath(bare, '/x/f')).toBe(bare);
    expect(bare).toMatchObject({ path: '/x/f', message: "ENOSPC: no space left on device, write '/x/f'" });

    const named = errnoError('EACCES', "EACCES: permission denied, open '/y'", { path: '/y' });
    withPath(named, '/x/f');
    expect(named).toMatchObject({ path: '/y', message: "EACCES: permission denied, open '/y'" });

    const codeless = new Error('plain');
    withPath(codeless, '/x/f');
    expect(codeless.message).toBe('plain');
    expect((codeless as NodeJS.ErrnoException).path).toBeUndefined();

    const numeric = Object.assign(new Error('numeric code'), { code: 28 });
    withPath(numeric, '/x/f');
    expect(numeric.message).toBe('numeric code');

    const notAnError = { code: 'ENOSPC', message: 'm' };
    expect(withPath(notAnError, '/x/f')).toBe(notAnError);
    expect(notAnError).toEqual({ code: 'ENOSPC', message: 'm' });
  });

  it('writeNewFileSynced creates a new read-only file (or with the mode given) and never overwrites one', async () => {
    const f = path.join(tmp.dir, 'f');
    await writeNewFileSynced(f, 'hello');
    expect(await fs.readFile(f, 'utf8')).toBe('hello');
    expect((await fs.stat(f)).mode & 0o777).toBe(0o444);
    await expect(writeNewFileSynced(f, 'other')).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await fs.readFile(f, 'utf8')).toBe('hello');
    const g = path.join(tmp.dir, 'g');
    await writeNewFileSynced(g, new Uint8Array([1, 2, 3]), 0o640);
    expect([...(await fs.readFile(g))]).toEqual([1, 2, 3]);
    expect((await fs.stat(g)).mode & 0o777).toBe(0o640);
  });

  it('writeNewFileSynced removes its file when the write fails, names it in the error, and closes it', async () => {
    const f = path.join(tmp.dir, 'f');
    const before = openFds();
    // Data the write refuses: the file was created first, so this is a failure after open.
    const err = await writeNewFileSynced(f, 42 as unknown as string).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', path: f });
    expect((err as Error).message).toContain(`'${f}'`);
    expect(await exists(f)).toBe(false);
    expect(openFds()).toBe(before);
  });

  it('fsyncDir and writeNewFileSynced close what they open; fsyncDir refuses a missing directory', async () => {
    const before = openFds();
    for (let i = 0; i < 20; i++) {
      await fsyncDir(tmp.dir);
      await writeNewFileSynced(path.join(tmp.dir, `f${i}`), 'x');
    }
    expect(openFds()).toBe(before);
    await expect(fsyncDir(path.join(tmp.dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fsyncDir(path.join(tmp.dir, 'f0'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });

  it('linkOrCopySync hardlinks on one filesystem, copies across two, and never replaces a file', async () => {
    const src = path.join(tmp.dir, 'src');
    await fs.writeFile(src, 'object bytes');
    const same = path.join(tmp.dir, 'same');
    expect(linkOrCopySync(src, same)).toBe('linked');
    expect((await fs.stat(same)).ino).toBe((await fs.stat(src)).ino);
    expect(() => linkOrCopySync(src, same)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => linkOrCopySync(path.join(tmp.dir, 'missing'), path.join(tmp.dir, 'm'))).toThrow(expect.objectContaining({ code: 'ENOENT' }));

    // /dev/shm is a tmpfs: another filesystem than the temp dir's.
    const shm = fsSync.mkdtempSync('/dev/shm/derrick-fsutil-');
    try {
      expect(fsSync.statSync(shm).dev).not.toBe(fsSync.statSync(tmp.dir).dev);
      const before = openFds();
      const other = path.join(shm, 'copy');
      expect(linkOrCopySync(src, other)).toBe('copied');
      expect(openFds()).toBe(before);
      expect(await fs.readFile(other, 'utf8')).toBe('object bytes');
      expect((await fs.stat(other)).ino).not.toBe((await fs.stat(src)).ino);
      // A copy never replaces what is there either.
      await fs.writeFile(path.join(shm, 'taken'), 'first');
      expect(() => linkOrCopySync(src, path.join(shm, 'taken'))).toThrow(expect.objectContaining({ code: 'EEXIST' }));
      expect(await fs.readFile(path.join(shm, 'taken'), 'utf8')).toBe('first');
    } finally {
      fsSync.rmSync(shm, { recursive: true, force: true });
    }
  });

  it('exists sees files, dirs and dangling symlinks; readdirOrEmpty is [] only for a missing dir', async () => {
    await fs.symlink('nowhere', path.join(tmp.dir, 'dangling'));
    await fs.writeFile(path.join(tmp.dir, 'file'), '');
    expect(await exists(path.join(tmp.dir, 'dangling'))).toBe(true);
    expect(await exists(path.join(tmp.dir, 'file'))).toBe(true);
    expect(await exists(tmp.dir)).toBe(true);
    expect(await exists(path.join(tmp.dir, 'nope'))).toBe(false);

    expect((await readdirOrEmpty(tmp.dir)).sort()).toEqual(['dangling', 'file']);
    expect(readdirOrEmptySync(tmp.dir).sort()).toEqual(['dangling', 'file']);
    expect(await readdirOrEmpty(path.join(tmp.dir, 'nope'))).toEqual([]);
    expect(readdirOrEmptySync(path.join(tmp.dir, 'nope'))).toEqual([]);
    // A file where a directory should be is an error, not an empty listing.
    await expect(readdirOrEmpty(path.join(tmp.dir, 'file'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    expect(() => readdirOrEmptySync(path.join(tmp.dir, 'file'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
  });

  it('mapLimit keeps order, runs at most `limit` at once, and stops taking items after the first error', async () => {
    let inFlight = 0;
    let peak = 0;
    const items = [5, 1, 4, 2, 3, 0];
    const out = await mapLimit(items, 2, async (x, i) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, x * 3));
      inFlight--;
      return `${i}:${x * 10}`;
    });
    expect(out).toEqual(['0:50', '1:10', '2:40', '3:20', '4:30', '5:0']);
    expect(peak).toBe(2);
    expect(await mapLimit([], 4, async () => 1)).toEqual([]);
    expect(await mapLimit([7], 4, async (x) => x + 1)).toEqual([8]);

    const started: number[] = [];
    const err = await mapLimit([0, 1, 2, 3, 4, 5], 1, async (x) => {
      started.push(x);
      if (x === 2) throw new Error(`item ${x} failed`);
      if (x === 3) throw new Error('a later failure');
      return x;
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('item 2 failed');
    expect(started).toEqual([0, 1, 2]);

    // With two workers, the first error wins over one that happens later in the other worker.
    const err2 = await mapLimit([0, 1], 2, async (x) => {
      await new Promise((r) => setTimeout(r, x === 0 ? 1 : 30));
      throw new Error(`failure ${x}`);
    }).catch((e: unknown) => e);
    expect((err2 as Error).message).toBe('failure 0');
  });
});
