// The symlink swap, the only way a publish becomes visible: the link is replaced by a rename of a
// temp link, never removed first, and a failed swap leaves the old link and no temp behind.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { readLink, readLinkSync, swapSymlink } from './swap.js';

describe('swapSymlink', () => {
  let tmp: TmpDir;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-swap');
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  it('makes the directory, writes the target as given, replaces the link in place, and leaves no temp', async () => {
    const link = path.join(tmp.dir, 'web', 'a~b');
    await swapSymlink(link, '../master/a~b/m1');
    expect(await fs.readlink(link)).toBe('../master/a~b/m1');
    const ino = (await fs.lstat(link)).ino;
    await swapSymlink(link, '../master/a~b/m2');
    expect(await readLink(link)).toBe('../master/a~b/m2');
    expect((await fs.lstat(link)).ino).not.toBe(ino); // a new link renamed over, not an edit
    expect(await fs.readdir(path.dirname(link))).toEqual(['a~b']);
  });

  it('a swap that cannot rename (a directory in the way) throws and removes its temp link', async () => {
    const link = path.join(tmp.dir, 'web', 'a~b');
    await fs.mkdir(path.join(link, 'inside'), { recursive: true });
    await expect(swapSymlink(link, 'm1')).rejects.toMatchObject({ code: 'EISDIR' });
    expect(await fs.readdir(path.dirname(link))).toEqual(['a~b']);
    expect(await fs.readdir(link)).toEqual(['inside']);
  });

  it('readLink: the target, undefined for no link or a plain file, and other errors thrown', async () => {
    await fs.symlink('t', path.join(tmp.dir, 'l'));
    await fs.writeFile(path.join(tmp.dir, 'file'), '');
    expect(readLinkSync(path.join(tmp.dir, 'l'))).toBe('t');
    expect(readLinkSync(path.join(tmp.dir, 'missing'))).toBeUndefined();
    expect(readLinkSync(path.join(tmp.dir, 'file'))).toBeUndefined(); // EINVAL
    expect(await readLink(path.join(tmp.dir, 'missing'))).toBeUndefined();
    expect(() => readLinkSync(path.join(tmp.dir, 'file', 'x'))).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
    await expect(readLink(path.join(tmp.dir, 'file', 'x'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});
