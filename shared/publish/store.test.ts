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
