// The content store: nothing is renamed into place unverified (invariant 4), and a failed or
// interrupted write leaves no object and, once its writer is gone, no temp file.
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { layout, type Layout } from '../layout.js';
import { sha256Digest } from '../oci.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { checkStore, storeListing } from '../../test/helpers/tree.js';
import { DigestMismatchError, openStore, type Store } from './store.js';

describe('store', () => {
  let tmp: TmpDir;
  let l: Layout;
  let store: Store;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-store');
    l = layout(tmp.dir);
    store = await openStore(l);
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  const chunks = (buf: Buffer, n = 3) => Readable.from(Array.from({ length: n }, (_, i) => buf.subarray(Math.floor((i * buf.length) / n), Math.floor(((i + 1) * buf.length) / n))));
  const allFiles = () => fs.readdir(l.storeBlobsDir);

  it('stores a verified stream read-only under its hex name, and counts the bytes', async () => {
    const data = Buffer.from('x'.repeat(100_000));
    const d = sha256Digest(data);
    let counted = 0;
    await store.putStream(d, data.length, chunks(data), (n) => (counted += n));
    expect(counted).toBe(data.length);
    expect(await store.has(d)).toBe(true);
    expect(await store.verify(d, data.length)).toBe(true);
    expect(await store.verify(d, data.length + 1)).toBe(false);
    expect((await fs.stat(l.storeBlob(d))).mode & 0o777).toBe(0o444);
    expect((await store.read(d)).equals(data)).toBe(true);
    await checkStore(tmp.dir);
  });

  it('refuses wrong content, a short body and an oversized body, leaving nothing behind', async () => {
    const data = Buffer.from('the real bytes');
    const d = sha256Digest(data);
    const wrong = Buffer.from('the fake bytes');
    await expect(store.putStream(d, data.length, chunks(wrong))).rejects.toThrow(DigestMismatchError);
    await expect(store.putStream(d, data.length, chunks(data.subarray(0, 5)))).rejects.toThrow(/got 5 bytes, expected 14/);
    await expect(store.putStream(d, data.length, chunks(Buffer.concat([data, data])))).rejects.toThrow(DigestMismatchError);
    // A body that fails mid-stream.
    const failing = new Readable({
      read() {
        this.push(data.subarray(0, 4));
        this.destroy(new Error('connection reset'));
      },
    });
    await expect(store.putStream(d, data.length, failing)).rejects.toThrow(/connection reset/);
    await expect(store.putBytes(d, wrong)).rejects.toThrow(DigestMismatchError);
    expect(await store.has(d)).toBe(false);
    expect(await allFiles()).toEqual([]);
  });

  it('verify catches an object corrupted in place; remove and a fresh put repair it', async () => {
    const data = Buffer.from('some layer');
    const d = sha256Digest(data);
    await store.putBytes(d, data);
    await fs.chmod(l.storeBlob(d), 0o644);
    await fs.writeFile(l.storeBlob(d), 'some LAYER');
    expect(await store.verify(d)).toBe(false);
    await store.remove(d);
    await store.putBytes(d, data);
    expect(await store.verify(d)).toBe(true);
    await checkStore(tmp.dir, { fresh: true });
  });

  it('cleanDebris removes the temp files of dead writers only', async () => {
    const dead = path.join(l.storeBlobsDir, '.tmp-999999999.0123456789ab');
    const mine = path.join(l.storeBlobsDir, `.tmp-${process.pid}.0123456789ab`);
    await fs.writeFile(dead, 'partial');
    await fs.writeFile(mine, 'in progress');
    expect(await store.cleanDebris()).toEqual([path.basename(dead)]);
    expect((await allFiles()).sort()).toEqual([path.basename(mine)]);
    expect(await storeListing(tmp.dir)).toEqual([]);
  });
});

describe('store, edge cases', () => {
  let tmp: TmpDir;
  let l: Layout;
  let store: Store;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-store-edges');
    l = layout(tmp.dir);
    store = await openStore(l);
  });
  afterEach(async () => {
    await tmp.cleanup();
  });
  const data = Buffer.from('layer bytes');
  const d = sha256Digest(data);

  it('refuses a digest that is not sha256 on every call, before touching the disk', async () => {
    const bad = 'sha512:' + 'a'.repeat(128);
    const msg = `unsupported digest ${bad}: only sha256 is stored`;
    await expect(store.has(bad)).rejects.toThrow(msg);
    await expect(store.putBytes(bad, data)).rejects.toThrow(msg);
    await expect(store.putStream(bad, data.length, Readable.from([data]))).rejects.toThrow(msg);
    await expect(store.verify(bad)).rejects.toThrow(msg);
    expect(() => store.read(bad)).toThrow(msg);
    expect(await fs.readdir(l.storeBlobsDir)).toEqual([]);
  });

  it('names what is wrong with a refused body: the sizes, or the digest the bytes hash to', async () => {
    const wrong = Buffer.from('LAYER BYTES');
    const e1 = (await store.putStream(d, data.length, Readable.from([wrong])).catch((e: unknown) => e)) as DigestMismatchError;
    expect(e1).toMatchObject({ name: 'DigestMismatchError', expected: d, actual: sha256Digest(wrong), expectedSize: data.length, actualSize: data.length });
    expect(e1.message).toBe(`blob ${d}: content hashes to ${sha256Digest(wrong)}`);
    // An oversized body is cut at the first chunk past the size: its hash is never computed.
    const e2 = (await store.putStream(d, 4, Readable.from([data.subarray(0, 4), data.subarray(4)])).catch((e: unknown) => e)) as DigestMismatchError;
    expect(e2).toMatchObject({ actual: 'unknown', expectedSize: 4, actualSize: data.length });
    expect(e2.message).toBe(`blob ${d}: got ${data.length} bytes, expected 4`);
    const e3 = (await store.putBytes(d, wrong).catch((e: unknown) => e)) as DigestMismatchError;
    expect(e3.message).toBe(`blob ${d}: content hashes to ${sha256Digest(wrong)}`);
    expect(await fs.readdir(l.storeBlobsDir)).toEqual([]);
  });

  it('an object already in place is never replaced: the first writer wins, the second leaves no temp', async () => {
    await store.putBytes(d, data);
    const ino = (await fs.stat(l.storeBlob(d))).ino;
    let counted = 0;
    await store.putStream(d, data.length, Readable.from([data]), (n) => (counted += n));
    expect(counted).toBe(data.length);
    await store.putBytes(d, data);
    expect((await fs.stat(l.storeBlob(d))).ino).toBe(ino);
    expect(await fs.readdir(l.storeBlobsDir)).toEqual([d.slice('sha256:'.length)]);
    expect(await store.has(sha256Digest('absent'))).toBe(false);
    expect(await store.verify(sha256Digest('absent'))).toBe(false);
    // Even the digest of no bytes at all: a missing object is not an empty one.
    expect(await store.verify(sha256Digest(''))).toBe(false);
    await store.remove(sha256Digest('absent')); // nothing to remove is not an error
    // Opening the store again (the next run) finds it as it was.
    const again = await openStore(l);
    expect(await again.verify(d, data.length)).toBe(true);
  });

  it('a temp file that vanishes before its link fails the put; no object appears', async () => {
    // Between the last chunk and the link, the temp file is taken away (by a wrong cleanup).
    const body = Readable.from(
      (async function* () {
        yield data;
        for (const n of await fs.readdir(l.storeBlobsDir)) await fs.rm(path.join(l.storeBlobsDir, n));
      })(),
    );
    await expect(store.putStream(d, data.length, body)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await store.has(d)).toBe(false);
  });

  it('sync fsyncs the directory only after a change, and a sync that failed is tried again', async () => {
    const moved = path.join(tmp.dir, 'moved');
    const hide = () => fs.rename(l.storeBlobsDir, moved);
    const unhide = () => fs.rename(moved, l.storeBlobsDir);
    // Nothing changed: nothing to make durable (the directory is not even opened).
    await hide();
    await expect(store.sync()).resolves.toBeUndefined();
    await unhide();
    for (const change of [() => store.putBytes(d, data), () => store.remove(d)]) {
      await change();
      await hide();
      await expect(store.sync()).rejects.toMatchObject({ code: 'ENOENT' });
      await unhide();
      await expect(store.sync()).resolves.toBeUndefined(); // still owed, and now done
      await hide();
      await expect(store.sync()).resolves.toBeUndefined(); // done: not owed any more
      await unhide();
    }
    // A put of an object already there changes nothing either.
    await store.putBytes(d, data);
    await store.sync();
    await store.putBytes(d, data);
    await hide();
    await expect(store.sync()).resolves.toBeUndefined();
    await unhide();
  });

  it('cleanDebris: temps of dead writers and temps naming no writer go, live ones and objects stay', async () => {
    await store.putBytes(d, data);
    const names = ['.tmp-999999999.0123456789ab', '.tmp-no-pid', `.tmp-${process.pid}.0123456789ab`, 'tmp-999999999.0123456789ab'];
    for (const n of names) await fs.writeFile(path.join(l.storeBlobsDir, n), 'x');
    expect((await store.cleanDebris()).sort()).toEqual(['.tmp-999999999.0123456789ab', '.tmp-no-pid']);
    expect((await listBlobsDir(l)).sort()).toEqual([`.tmp-${process.pid}.0123456789ab`, d.slice('sha256:'.length), 'tmp-999999999.0123456789ab'].sort());
    await fs.rm(l.storeDir, { recursive: true });
    expect(await store.cleanDebris()).toEqual([]);
  });
});

const listBlobsDir = (l: Layout) => fs.readdir(l.storeBlobsDir);
