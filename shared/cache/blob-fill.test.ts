import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { BlobVerifyError, createFillRegistry, type FillSource } from './blob-fill.js';
import { sha256Digest } from '../oci.js';

const KiB = 1024;

// Every test here takes well under a second; a fill that hangs (a lost wake-up, a reader never
// ended) fails in 10 s rather than at the 60 s default, which also keeps mutation runs short.
vi.setConfig({ testTimeout: 10_000 });

function blob(size: number) {
  const data = crypto.randomBytes(size);
  return { data, digest: sha256Digest(data), hex: sha256Digest(data).slice(7) };
}

interface Result {
  data: Buffer;
  ended: boolean;
  error?: Error;
}

/** Consumes a reader; never rejects, so the outcome (end, error, or bare close) can be asserted. */
function collect(r: Readable): Promise<Result> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    r.on('data', (c: Buffer) => parts.push(c));
    r.on('end', () => resolve({ data: Buffer.concat(parts), ended: true }));
    r.on('error', (error) => resolve({ data: Buffer.concat(parts), ended: false, error }));
    r.on('close', () => setImmediate(() => resolve({ data: Buffer.concat(parts), ended: false })));
  });
}

async function* chunks(data: Buffer, chunk = 16 * KiB, delayMs = 0): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += chunk) {
    if (delayMs) await sleep(delayMs);
    yield data.subarray(i, i + chunk);
  }
}

/** A client that took one chunk and stopped reading. */
function firstChunkThenPause(r: Readable): Promise<Buffer> {
  return new Promise((resolve) =>
    r.once('data', (c: Buffer) => {
      r.pause();
      resolve(c);
    }),
  );
}

type GenSource = FillSource & { opens: number; signals: AbortSignal[] };

/** An in-memory upstream: `gen` produces the body, `size` plays Content-Length. */
function genSource(gen: (signal: AbortSignal) => AsyncIterable<Buffer>, size?: number): GenSource {
  const s: GenSource = {
    opens: 0,
    signals: [],
    open: async (signal) => {
      s.opens++;
      s.signals.push(signal);
      return { body: Readable.from(gen(signal), { objectMode: false }), size };
    },
  };
  return s;
}

/** A FillSource doing a real HTTP GET with node:http. */
function httpSource(url: string): FillSource {
  return {
    open: (signal) =>
      new Promise((resolve, reject) => {
        const req = http.get(url, { signal, agent: false }, (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            reject(new Error(`upstream status ${res.statusCode}`));
            return;
          }
          const cl = res.headers['content-length'];
          resolve({ body: res, size: cl === undefined ? undefined : Number(cl) });
        });
        req.on('error', reject);
      }),
  };
}

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** Node's FileHandle prototype: a test spies on its writev/sync to play a full, broken or slow
 * disk, which no real disk does on demand. */
async function fileHandleProto(): Promise<FileHandle> {
  const h = await fs.open(path.join(dir, 'probe'), 'w');
  await h.close();
  return Object.getPrototypeOf(h) as FileHandle;
}

let dir: string;
let blobsDir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-fill-'));
  blobsDir = path.join(dir, 'store', 'blobs', 'sha256');
});

afterEach(async () => {
  // Retries: a test that does not await its fill's end may still see it rename into the directory.
  await fs.rm(dir, { recursive: true, force: true, maxRetries: 5 });
});

async function tmpFiles(): Promise<string[]> {
  return (await fs.readdir(blobsDir).catch(() => [] as string[])).filter((n) => n.startsWith('.tmp-'));
}

async function stored(hex: string): Promise<Buffer | undefined> {
  return fs.readFile(path.join(blobsDir, hex)).catch(() => undefined);
}

describe('blob fill over a real HTTP upstream', () => {
  const good = blob(1024 * KiB + 123);
  let server: http.Server;
  let base: string;
  let requests = 0;

  beforeAll(async () => {
    server = http.createServer(async (req, res) => {
      requests++;
      if (req.url === '/blob') {
        res.writeHead(200, { 'content-length': String(good.data.length) });
        for await (const c of chunks(good.data, 64 * KiB, 2)) {
          if (!res.write(c)) await new Promise((r) => res.once('drain', r));
        }
        res.end();
      } else if (req.url === '/truncated') {
        res.writeHead(200, { 'content-length': String(good.data.length) });
        res.write(good.data.subarray(0, 300 * KiB));
        await sleep(20);
        res.destroy(); // connection drops mid-body
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('10 concurrent readers share one upstream GET and all get the verified bytes', async () => {
    const fdsBefore = openFds();
    requests = 0;
    const done = vi.fn();
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, onDone: done });
    const src = httpSource(`${base}/blob`);
    const open = vi.spyOn(src, 'open');
    const results: Promise<Result>[] = [];
    const joined: boolean[] = [];
    let fill;
    for (let i = 0; i < 10; i++) {
      const r = reg.fill(good.digest, good.data.length, src);
      joined.push(r.joined);
      fill = r.fill;
      results.push(collect(r.fill.reader()));
    }
    expect(joined).toEqual([false, ...Array(9).fill(true)]);
    expect(reg.active()).toBe(1);
    await expect(fill!.ready).resolves.toEqual({ size: good.data.length });
    const out = await Promise.all(results);
    await fill!.done;
    expect(open).toHaveBeenCalledTimes(1);
    expect(requests).toBe(1);
    for (const r of out) {
      expect(r.ended).toBe(true);
      expect(r.data.length).toBe(good.data.length);
      expect(sha256Digest(r.data)).toBe(good.digest);
    }
    expect((await stored(good.hex))?.equals(good.data)).toBe(true);
    expect(await tmpFiles()).toEqual([]);
    expect(reg.active()).toBe(0);
    expect(fill!.bytesWritten()).toBe(good.data.length);
    expect(done).toHaveBeenCalledWith(good.digest, good.data.length);
    // Every reader and the writer closed their fds (sockets are pooled per request and closed).
    await vi.waitFor(() => expect(openFds()).toBeLessThanOrEqual(fdsBefore));
  });

  it('a dropped upstream connection errors every reader and stores nothing', async () => {
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(good.digest, undefined, httpSource(`${base}/truncated`));
    const out = await Promise.all([collect(fill.reader()), collect(fill.reader()), collect(fill.reader(100, 200))]);
    for (const r of out) {
      expect(r.ended).toBe(false);
      expect(r.error).toBeInstanceOf(Error);
      expect(r.data.length).toBeLessThan(good.data.length);
    }
    await expect(fill.done).rejects.toThrow();
    expect(await stored(good.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
    expect(reg.active()).toBe(0);
  });
});

describe('blob fill', () => {
  it('a reader joining after half the bytes still gets the whole body from offset 0', async () => {
    const b = blob(512 * KiB);
    const half = 256 * KiB;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const src = genSource(async function* () {
      yield* chunks(b.data.subarray(0, half));
      await gate;
      yield* chunks(b.data.subarray(half));
    }, b.data.length);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const first = reg.fill(b.digest, b.data.length, src);
    const early = collect(first.fill.reader());
    await vi.waitFor(() => expect(first.fill.bytesReceived()).toBe(half));
    const late = reg.fill(b.digest, b.data.length, genSource(async function* () {}));
    expect(late.joined).toBe(true);
    expect(late.fill).toBe(first.fill);
    const lateOut = collect(late.fill.reader());
    release();
    const [e, l] = await Promise.all([early, lateOut]);
    expect(e.data.equals(b.data)).toBe(true);
    expect(l.ended).toBe(true);
    expect(l.data.equals(b.data)).toBe(true);
    expect(src.opens).toBe(1);
    await first.fill.done;
  });

  it('a slow reader neither stalls the fill nor a fast reader, and then gets everything', async () => {
    const b = blob(2048 * KiB);
    const src = genSource(() => chunks(b.data, 32 * KiB, 1), b.data.length);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, undefined, src);

    const slow = fill.reader();
    const slowParts: Buffer[] = [];
    const firstChunk = new Promise<void>((r) => slow.once('data', () => r()));
    slow.on('data', (c: Buffer) => {
      slowParts.push(c);
      slow.pause(); // a client that stopped reading
    });
    const slowEnd = new Promise<void>((resolve, reject) => {
      slow.on('end', resolve);
      slow.on('error', reject);
    });
    await firstChunk;

    const fast = await collect(fill.reader());
    await fill.done;
    expect(fast.data.equals(b.data)).toBe(true);
    const slowSoFar = slowParts.reduce((n, c) => n + c.length, 0);
    expect(slowSoFar).toBeLessThan(b.data.length / 4); // it really was behind

    slow.removeAllListeners('data');
    slow.on('data', (c: Buffer) => slowParts.push(c));
    slow.resume();
    await slowEnd;
    expect(Buffer.concat(slowParts).equals(b.data)).toBe(true);
  });

  it('a reader left behind the in-memory window reads from the temp file while the fill is still running', async () => {
    const MiB = 1024 * KiB;
    const b = blob(12 * MiB);
    const first = 10 * MiB;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const src = genSource(async function* () {
      yield* chunks(b.data.subarray(0, first), 64 * KiB);
      await gate;
      yield* chunks(b.data.subarray(first), 64 * KiB);
    }, b.data.length);
    // No memory budget: what is in the file leaves memory at once.
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, src);
    const lagging = fill.reader();
    const parts = [await firstChunkThenPause(lagging)];
    // The download went on without it, and the early bytes are now only in the file.
    await vi.waitFor(() => expect(fill.bytesReceived()).toBe(first));
    expect(fill.bytesWritten()).toBeGreaterThanOrEqual(first - 2 * MiB);
    let got = parts[0]!.length;
    const reachedGate = new Promise<void>((r) =>
      lagging.on('data', (c: Buffer) => {
        parts.push(c);
        got += c.length;
        if (got === first) r();
      }),
    );
    lagging.resume();
    await reachedGate;
    expect(Buffer.concat(parts).equals(b.data.subarray(0, first))).toBe(true);
    const ended = new Promise<void>((r) => lagging.once('end', () => r()));
    release();
    await ended;
    await fill.done;
    expect(Buffer.concat(parts).equals(b.data)).toBe(true);
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
  });

  it('a reader behind the download is served from memory, even after the store file is gone', async () => {
    const MiB = 1024 * KiB;
    const b = blob(6 * MiB);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data, 64 * KiB), b.data.length));
    const lagging = fill.reader();
    const parts = [await firstChunkThenPause(lagging)];
    await fill.done;
    // Only memory can answer now: the bytes it still needs were kept for it.
    await fs.rm(path.join(blobsDir, b.hex));
    lagging.on('data', (c: Buffer) => parts.push(c));
    const end = collect(lagging);
    lagging.resume();
    const r = await end;
    expect(r.error).toBeUndefined();
    expect(Buffer.concat(parts).equals(b.data)).toBe(true);
    // A reader arriving after the fill has nothing kept for it: it reads the (missing) file.
    const late = await collect(fill.reader());
    expect(late.ended).toBe(false);
    expect((late.error as NodeJS.ErrnoException | undefined)?.code).toBe('ENOENT');
  });

  it('memory kept for stalled readers stays within the budget the fills share, and is freed when they go', async () => {
    const MiB = 1024 * KiB;
    const budget = 8 * MiB;
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: budget });
    const blobs = [blob(6 * MiB), blob(6 * MiB), blob(6 * MiB), blob(6 * MiB)];
    const stalled: Readable[] = [];
    for (const b of blobs) {
      const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data, 64 * KiB), b.data.length));
      const r = fill.reader();
      await firstChunkThenPause(r); // a client that never reads on
      stalled.push(r);
      await fill.done;
      expect(reg.memoryHeld()).toBeLessThanOrEqual(budget);
    }
    expect(reg.memoryHeld()).toBeGreaterThan(0); // they do keep what their readers still need
    for (const r of stalled) r.destroy();
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(0));
    // Every blob was stored whole all the same.
    for (const b of blobs) expect((await stored(b.hex))?.equals(b.data)).toBe(true);
  });

  it('a reader destroyed mid-way (client disconnect) does not abort the fill', async () => {
    const fdsBefore = openFds();
    const b = blob(1024 * KiB);
    const src = genSource(() => chunks(b.data, 32 * KiB, 2), b.data.length);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, src);
    const quitter = fill.reader();
    const quitterClosed = new Promise((r) => quitter.on('close', r));
    quitter.once('data', () => quitter.destroy());
    const other = collect(fill.reader());
    await quitterClosed;
    expect(fill.bytesWritten()).toBeLessThan(b.data.length);
    await fill.done;
    expect((await other).data.equals(b.data)).toBe(true);
    expect(src.signals[0]!.aborted).toBe(false);
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
    expect(openFds()).toBe(fdsBefore);
  });

  it('corrupted bytes: every reader errors, nothing is stored, and a later fill starts afresh', async () => {
    const fdsBefore = openFds();
    const b = blob(300 * KiB + 7);
    const bad = Buffer.from(b.data);
    bad[bad.length - 1000]! ^= 0xff; // same length, wrong digest
    const fail = vi.fn();
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, onFail: fail });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const badSrc = genSource(async function* () {
      yield* chunks(bad.subarray(0, 128 * KiB));
      await gate;
      yield* chunks(bad.subarray(128 * KiB), 16 * KiB, 1);
    }, bad.length);
    const { fill } = reg.fill(b.digest, b.data.length, badSrc);
    const readers = [collect(fill.reader()), collect(fill.reader()), collect(fill.reader(0, 999)), collect(fill.reader(b.data.length - 10))];
    await vi.waitFor(() => expect(fill.bytesReceived()).toBe(128 * KiB));
    const joiner = reg.fill(b.digest, b.data.length, badSrc);
    expect(joiner.joined).toBe(true);
    readers.push(collect(joiner.fill.reader()));
    release();
    const out = await Promise.all(readers);
    for (const r of out) {
      expect(r.ended).toBe(false);
      expect(r.error).toBeInstanceOf(BlobVerifyError);
    }
    // No reader ever held a complete-looking body: each is short of what it asked for.
    expect(out[0]!.data.length).toBeLessThan(b.data.length);
    expect(out[2]!.data.length).toBeLessThan(1000);
    expect(out[3]!.data.length).toBeLessThan(10);
    await expect(fill.done).rejects.toMatchObject({ name: 'BlobVerifyError', reason: 'digest' });
    await expect(fill.ready).resolves.toEqual({ size: b.data.length });
    expect(fail).toHaveBeenCalledWith(b.digest, expect.any(BlobVerifyError));
    expect(reg.memoryHeld()).toBe(0);
    expect(await stored(b.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
    expect(reg.active()).toBe(0);
    expect(badSrc.opens).toBe(1);
    // A reader asked of the failed fill errors at once.
    expect((await collect(fill.reader())).error).toBeInstanceOf(BlobVerifyError);

    const goodSrc = genSource(() => chunks(b.data), b.data.length);
    const again = reg.fill(b.digest, b.data.length, goodSrc);
    expect(again.joined).toBe(false);
    expect(again.fill).not.toBe(fill);
    const r = await collect(again.fill.reader());
    await again.fill.done;
    expect(goodSrc.opens).toBe(1);
    expect(r.data.equals(b.data)).toBe(true);
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
    expect(await tmpFiles()).toEqual([]);
    expect(openFds()).toBe(fdsBefore);
  });

  it('corrupted bytes with no size known: readers still never see the whole length', async () => {
    const b = blob(200 * KiB);
    const bad = Buffer.from(b.data);
    bad[5]! ^= 1;
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, undefined, genSource(() => chunks(bad, 16 * KiB, 1)));
    const r = await collect(fill.reader());
    expect(r.error).toBeInstanceOf(BlobVerifyError);
    expect(r.data.length).toBeLessThan(b.data.length);
    await expect(fill.done).rejects.toBeInstanceOf(BlobVerifyError);
    expect(await stored(b.hex)).toBeUndefined();
  });

  it('a body that ends early is truncation: readers error, nothing stored', async () => {
    const b = blob(100 * KiB);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data.subarray(0, 60 * KiB))));
    const r = await collect(fill.reader());
    expect(r.ended).toBe(false);
    expect(r.error).toMatchObject({ reason: 'truncated' });
    await expect(fill.done).rejects.toMatchObject({ reason: 'truncated' });
    expect(await stored(b.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
  });

  it('an upstream stream error mid-body errors readers with it', async () => {
    const b = blob(100 * KiB);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const src = genSource(async function* () {
      yield b.data.subarray(0, 50 * KiB);
      await sleep(5);
      throw new Error('upstream reset');
    }, b.data.length);
    const { fill } = reg.fill(b.digest, undefined, src);
    const rs = await Promise.all([collect(fill.reader()), collect(fill.reader(10))]);
    for (const r of rs) expect(r.error?.message).toBe('upstream reset');
    await expect(fill.done).rejects.toThrow('upstream reset');
    expect(await tmpFiles()).toEqual([]);
  });

  it('a failing source.open rejects ready and done (even unobserved) and errors readers', async () => {
    const b = blob(10);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, undefined, { open: async () => Promise.reject(new Error('502 from upstream')) });
    const r = await collect(fill.reader());
    expect(r.error?.message).toBe('502 from upstream');
    // ready and done are deliberately not awaited here: no unhandled rejection may surface.
    await sleep(10);
    // The temp file's removal is asynchronous: on a loaded machine it may take longer than 10 ms.
    await vi.waitFor(async () => {
      expect(reg.active()).toBe(0);
      expect(await tmpFiles()).toEqual([]);
    }, { timeout: 5000 });
  });

  it('more bytes than expectedSize: aborted early', async () => {
    const b = blob(100 * KiB);
    let produced = 0;
    const src = genSource(async function* (signal) {
      // An endless upstream: way beyond the expected size.
      for (let i = 0; i < 1000 && !signal.aborted; i++) {
        const c = i * 16 * KiB < b.data.length ? b.data.subarray(i * 16 * KiB, (i + 1) * 16 * KiB) : crypto.randomBytes(16 * KiB);
        produced += c.length;
        yield c;
      }
    });
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, src);
    const r = await collect(fill.reader());
    expect(r.error).toMatchObject({ reason: 'oversize' });
    await expect(fill.done).rejects.toMatchObject({ reason: 'oversize' });
    expect(produced).toBeLessThan(b.data.length + 128 * KiB);
    expect(src.signals[0]!.aborted).toBe(true);
    expect(fill.bytesWritten()).toBeLessThanOrEqual(b.data.length);
    expect(await stored(b.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
  });

  it('Content-Length disagreeing with the expected size fails before reading the body', async () => {
    const b = blob(1000);
    let pulled = false;
    const src = genSource(async function* () {
      pulled = true;
      yield b.data;
    }, 999);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, 1000, src);
    await expect(fill.ready).rejects.toMatchObject({ reason: 'size' });
    await expect(fill.done).rejects.toMatchObject({ reason: 'size' });
    expect(pulled).toBe(false);
  });

  it('Range readers return the right slice, during the fill and from the store afterwards', async () => {
    const b = blob(700 * KiB + 5);
    let sentAll = false;
    const src = genSource(async function* () {
      yield* chunks(b.data, 16 * KiB, 1);
      sentAll = true;
    }, b.data.length);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, src);
    const small = fill.reader(1000, 1999);
    let smallEndedAfterAll: boolean | undefined;
    small.on('end', () => (smallEndedAfterAll = sentAll));
    const ranges = await Promise.all([
      collect(small),
      collect(fill.reader(300 * KiB, 500 * KiB - 1)),
      collect(fill.reader(600 * KiB)),
      collect(fill.reader(b.data.length - 1, b.data.length - 1)),
      collect(fill.reader(5, b.data.length * 2)), // end past EOF is clamped
    ]);
    expect(ranges[0]!.data.equals(b.data.subarray(1000, 2000))).toBe(true);
    expect(ranges[1]!.data.equals(b.data.subarray(300 * KiB, 500 * KiB))).toBe(true);
    expect(ranges[2]!.data.equals(b.data.subarray(600 * KiB))).toBe(true);
    expect(ranges[3]!.data.equals(b.data.subarray(b.data.length - 1))).toBe(true);
    expect(ranges[4]!.data.equals(b.data.subarray(5))).toBe(true);
    // Even a slice available early is only completed once the whole blob is in and verified.
    expect(smallEndedAfterAll).toBe(true);

    await fill.done;
    expect(reg.active()).toBe(0);
    const after = await collect(fill.reader(10, 20));
    expect(after.data.equals(b.data.subarray(10, 21))).toBe(true);
    expect((await collect(fill.reader())).data.equals(b.data)).toBe(true);
    expect(() => fill.reader(20, 10)).toThrow(RangeError);
    expect(() => fill.reader(-1)).toThrow(RangeError);
  });

  it('without any known size, ready resolves with the body length at the end', async () => {
    const b = blob(150 * KiB + 1);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, undefined, genSource(() => chunks(b.data, 16 * KiB, 1)));
    const r = collect(fill.reader());
    await expect(fill.ready).resolves.toEqual({ size: b.data.length });
    expect((await r).data.equals(b.data)).toBe(true);
    await fill.done;
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
  });

  it('an empty blob', async () => {
    const b = blob(0);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, 0, genSource(async function* () {}, 0));
    const r = await collect(fill.reader());
    expect(r.ended).toBe(true);
    expect(r.data.length).toBe(0);
    await fill.done;
    expect(await stored(b.hex)).toEqual(Buffer.alloc(0));
  });

  it('rename over an identical existing store file is fine', async () => {
    const b = blob(1000);
    await fs.mkdir(blobsDir, { recursive: true });
    await fs.writeFile(path.join(blobsDir, b.hex), b.data);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, 1000, genSource(() => chunks(b.data)));
    await fill.done;
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
    expect(await tmpFiles()).toEqual([]);
  });

  it('validates digests and sizes', () => {
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const src = genSource(async function* () {});
    expect(() => reg.fill('sha512:' + 'a'.repeat(128), 1, src)).toThrow(TypeError);
    expect(() => reg.fill('sha256:' + 'A'.repeat(64), 1, src)).toThrow(TypeError);
    expect(() => reg.fill('sha256:abc', 1, src)).toThrow(TypeError);
    expect(() => reg.fill('sha256:../../etc/passwd', 1, src)).toThrow(TypeError);
    expect(() => reg.fill(blob(1).digest, -1, src)).toThrow(RangeError);
    expect(() => reg.fill(blob(1).digest, 1.5, src)).toThrow(RangeError);
    expect(src.opens).toBe(0);
    expect(reg.active()).toBe(0);
  });

  it('temp files carry the pid so debris cleanup can tell live fills from dead ones', async () => {
    const b = blob(64 * KiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(
      b.digest,
      b.data.length,
      genSource(async function* () {
        yield b.data.subarray(0, 1000);
        await gate;
        yield b.data.subarray(1000);
      }),
    );
    await vi.waitFor(() => expect(fill.bytesReceived()).toBe(1000));
    const temps = await tmpFiles();
    expect(temps).toHaveLength(1);
    expect(temps[0]).toMatch(new RegExp(`^\\.tmp-fill\\.${process.pid}\\.[0-9a-f]{12}$`));
    release();
    await fill.done;
  });
});

describe('blob fill: errors and bookkeeping', () => {
  it('each verification failure names the blob and what was wrong', async () => {
    const b = blob(100 * KiB);
    const bad = Buffer.from(b.data);
    bad[0]! ^= 1;
    const cases: { expected: number | undefined; src: GenSource; reason: string; message: string }[] = [
      {
        expected: b.data.length,
        src: genSource(() => chunks(b.data), b.data.length - 1),
        reason: 'size',
        message: `blob ${b.digest}: upstream announced ${b.data.length - 1} bytes, expected ${b.data.length}`,
      },
      {
        expected: b.data.length - 1,
        src: genSource(() => chunks(b.data)),
        reason: 'oversize',
        message: `blob ${b.digest}: upstream sent more than the expected ${b.data.length - 1} bytes`,
      },
      {
        expected: undefined,
        src: genSource(() => chunks(b.data.subarray(0, 60 * KiB)), b.data.length),
        reason: 'truncated',
        message: `blob ${b.digest}: upstream body ended after ${60 * KiB} of ${b.data.length} bytes`,
      },
      {
        expected: b.data.length,
        src: genSource(() => chunks(bad)),
        reason: 'digest',
        message: `blob ${b.digest}: content hashes to ${sha256Digest(bad)}`,
      },
    ];
    for (const c of cases) {
      const reg = createFillRegistry({ storeBlobsDir: blobsDir });
      const { fill } = reg.fill(b.digest, c.expected, c.src);
      const err = await fill.done.then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(BlobVerifyError);
      expect(err).toMatchObject({ name: 'BlobVerifyError', digest: b.digest, reason: c.reason, message: c.message });
      expect(await stored(b.hex)).toBeUndefined();
    }
  });

  it('bad arguments are refused with a message naming them', () => {
    const b = blob(10);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const src = genSource(async function* () {});
    expect(() => reg.fill('sha256:abc', 1, src)).toThrow(new TypeError('unsupported digest "sha256:abc": only sha256:<64 hex> is cached'));
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
      expect(() => reg.fill(b.digest, bad, src)).toThrow(new RangeError(`invalid expected size ${bad} for ${b.digest}`));
    }
    expect(reg.running(b.digest)).toBe(false);
    const { fill } = reg.fill(b.digest, 10, genSource(() => chunks(b.data), 10));
    for (const bad of [-1, 1.5, NaN]) expect(() => fill.reader(bad)).toThrow(new RangeError(`invalid start ${bad}`));
    for (const [s, e] of [[10, 9], [0, 1.5], [0, -1]] as const) {
      expect(() => fill.reader(s, e)).toThrow(new RangeError(`invalid end ${e} (start ${s})`));
    }
    return fill.done;
  });

  it('running() is true from the first request until the fill is stored or has failed', async () => {
    const b = blob(64 * KiB);
    const other = blob(10);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    expect(reg.running(b.digest)).toBe(false);
    const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
      yield b.data.subarray(0, 1000);
      await gate;
      yield b.data.subarray(1000);
    }));
    expect(reg.running(b.digest)).toBe(true);
    expect(reg.running(other.digest)).toBe(false);
    expect(reg.active()).toBe(1);
    release();
    await fill.done;
    expect(reg.running(b.digest)).toBe(false);
    expect(reg.active()).toBe(0);

    const failing = reg.fill(other.digest, 10, genSource(() => chunks(b.data.subarray(0, 10)), 10));
    expect(reg.running(other.digest)).toBe(true);
    await expect(failing.fill.done).rejects.toMatchObject({ reason: 'digest' });
    expect(reg.running(other.digest)).toBe(false);
  });

  it('a throwing onDone or onFail hook changes neither the outcome nor the readers', async () => {
    const b = blob(50 * KiB);
    const calls: string[] = [];
    const reg = createFillRegistry({
      storeBlobsDir: blobsDir,
      onDone: (digest, bytes) => {
        calls.push(`done ${digest} ${bytes}`);
        throw new Error('hook broke');
      },
      onFail: (digest, err) => {
        calls.push(`fail ${digest} ${err.message}`);
        throw new Error('hook broke');
      },
    });
    const ok = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data)));
    const r = await collect(ok.fill.reader());
    await expect(ok.fill.done).resolves.toBeUndefined();
    expect(r.data.equals(b.data)).toBe(true);
    const other = blob(10);
    const bad = reg.fill(other.digest, undefined, genSource(async function* () {
      throw new Error('upstream reset');
    }));
    await expect(bad.fill.done).rejects.toThrow('upstream reset');
    await expect(bad.fill.ready).rejects.toThrow('upstream reset');
    expect(calls).toEqual([`done ${b.digest} ${b.data.length}`, `fail ${other.digest} upstream reset`]);
  });
});

describe('blob fill: the store write fails after the bytes were verified', () => {
  /** A fill whose rename into the store fails: a non-empty directory holds the blob's name. */
  async function failingStore(b: ReturnType<typeof blob>) {
    await fs.mkdir(path.join(blobsDir, b.hex, 'x'), { recursive: true });
  }

  it('readers still get the verified bytes; the store keeps nothing; later readers get the error', async () => {
    const MiB = 1024 * KiB;
    const b = blob(3 * MiB);
    await failingStore(b);
    const failed = vi.fn();
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, onFail: failed });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data, 64 * KiB), b.data.length));
    const flowing = collect(fill.reader());
    const stalled = fill.reader();
    const parts = [await firstChunkThenPause(stalled)];
    const err = await fill.done.then(() => undefined, (e: unknown) => e as NodeJS.ErrnoException);
    expect(err?.code).toMatch(/^(EISDIR|ENOTEMPTY|EEXIST)$/);
    expect(failed).toHaveBeenCalledWith(b.digest, err);
    expect(reg.running(b.digest)).toBe(false);
    expect(await tmpFiles()).toEqual([]);
    const f = await flowing;
    expect(f.error).toBeUndefined();
    expect(f.data.equals(b.data)).toBe(true);
    // The stalled reader's bytes were kept in memory for it: the temp file is gone.
    expect(reg.memoryHeld()).toBeGreaterThan(0);
    stalled.on('data', (c: Buffer) => parts.push(c));
    const end = collect(stalled);
    stalled.resume();
    const s = await end;
    expect(s.error).toBeUndefined();
    expect(Buffer.concat(parts).equals(b.data)).toBe(true);
    // Its last reader gone, the failed fill lets go of its memory.
    expect(reg.memoryHeld()).toBe(0);
    const late = await collect(fill.reader());
    expect(late.error).toBe(err);
    expect(late.data.length).toBe(0);
  });

  it('a reader whose bytes left memory and who never opened the temp file gets the error', async () => {
    // Larger than a reader's buffer (1 MiB), so the paused reader has not taken it all.
    const b = blob(4096 * KiB);
    await failingStore(b);
    // No memory budget: what is in the file leaves memory at once.
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data, 64 * KiB), b.data.length));
    const stalled = fill.reader();
    const first = await firstChunkThenPause(stalled);
    expect(first.length).toBeGreaterThan(0);
    const err = await fill.done.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(reg.memoryHeld()).toBe(0);
    const end = collect(stalled);
    stalled.resume();
    const s = await end;
    expect(s.ended).toBe(false);
    expect(s.error).toBe(err);
    expect(s.data.length).toBeLessThan(b.data.length);
  });
});

describe('blob fill: upstream body shapes, sizes and writes', () => {
  it('bodies of strings, typed-array views and empty chunks are stored as their bytes', async () => {
    const text = 'derrick '.repeat(4096);
    const bytes = Buffer.from(text);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    // Views into a larger buffer at a non-zero offset, as a web stream may hand them over.
    const backing = new Uint8Array(bytes.length + 64);
    backing.set(bytes, 32);
    const bodies: Iterable<unknown>[] = [
      [text.slice(0, 1000), '', text.slice(1000)],
      [new Uint8Array(0), backing.subarray(32, 32 + 5000), new Uint8Array(0), backing.subarray(32 + 5000, 32 + bytes.length)],
    ];
    for (const parts of bodies) {
      const source: FillSource = { open: async () => ({ body: Readable.from(parts, { objectMode: true }) }) };
      const { fill } = reg.fill(sha256Digest(bytes), undefined, source);
      const r = await collect(fill.reader());
      await fill.done;
      expect(r.data.equals(bytes)).toBe(true);
      expect((await stored(sha256Digest(bytes).slice(7)))?.equals(bytes)).toBe(true);
      await fs.rm(path.join(blobsDir, sha256Digest(bytes).slice(7)));
    }
  });

  it('with no expected size, Content-Length sizes the blob as soon as the upstream answers', async () => {
    const b = blob(200 * KiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, undefined, genSource(async function* () {
      yield b.data.subarray(0, 1000);
      await gate;
      yield b.data.subarray(1000);
    }, b.data.length));
    await expect(fill.ready).resolves.toEqual({ size: b.data.length });
    expect(fill.bytesReceived()).toBeLessThan(b.data.length);
    release();
    await fill.done;

    // ... and bounds it: a longer body is oversize.
    const c = blob(100 * KiB);
    const long = reg.fill(c.digest, undefined, genSource(() => chunks(Buffer.concat([c.data, c.data])), c.data.length));
    await expect(long.fill.done).rejects.toMatchObject({ reason: 'oversize' });
    expect(long.fill.bytesReceived()).toBeLessThanOrEqual(c.data.length);
  });

  it('received bytes go to the temp file in batches while the download runs', async () => {
    const MiB = 1024 * KiB;
    const b = blob(4 * MiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
      yield* chunks(b.data.subarray(0, 3 * MiB), 64 * KiB);
      await gate;
      yield* chunks(b.data.subarray(3 * MiB), 64 * KiB);
    }));
    await vi.waitFor(() => expect(fill.bytesReceived()).toBe(3 * MiB));
    // Past a 1 MiB batch the writer runs without waiting for the end of the body (or 8 MiB).
    await vi.waitFor(() => expect(fill.bytesWritten()).toBeGreaterThanOrEqual(2 * MiB));
    const [temp] = await tmpFiles();
    expect((await fs.stat(path.join(blobsDir, temp!))).size).toBe(fill.bytesWritten());
    // With no budget and no reader, what is written leaves memory.
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(fill.bytesReceived() - fill.bytesWritten()));
    release();
    await fill.done;
    expect(reg.memoryHeld()).toBe(0);
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
  });

  it('fills share the memory budget, each running one keeping at least 2 MiB for its readers', async () => {
    const MiB = 1024 * KiB;
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 3 * MiB });
    const gated = () => {
      const b = blob(8 * MiB);
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
        yield* chunks(b.data.subarray(0, 6 * MiB), 64 * KiB);
        await gate;
        yield* chunks(b.data.subarray(6 * MiB), 64 * KiB);
      }));
      return { b, fill, release, reader: fill.reader() };
    };
    const a = gated();
    await firstChunkThenPause(a.reader); // stays about 1 MiB in
    await vi.waitFor(() => expect(a.fill.bytesWritten()).toBe(6 * MiB));
    // Alone, a fill may keep the whole budget for its stalled reader.
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(3 * MiB));
    const b = gated();
    await firstChunkThenPause(b.reader);
    await vi.waitFor(() => expect(b.fill.bytesWritten()).toBe(6 * MiB));
    // Two running fills: a share of 1.5 MiB each, but never less than 2 MiB while running.
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(4 * MiB));
    a.release();
    b.release();
    await Promise.all([a.fill.done, b.fill.done]);
    // Finished, they keep their shares: 1.5 MiB each.
    expect(reg.memoryHeld()).toBe(3 * MiB);
    a.reader.destroy();
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(1.5 * MiB));
    b.reader.destroy();
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(0));
  });

  it('a fill that lets go of its memory leaves the whole budget to the others', async () => {
    const MiB = 1024 * KiB;
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 6 * MiB });
    const gated = () => {
      const b = blob(8 * MiB);
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
        yield* chunks(b.data.subarray(0, 6 * MiB), 64 * KiB);
        await gate;
        yield* chunks(b.data.subarray(6 * MiB), 64 * KiB);
      }));
      return { fill, release, reader: fill.reader() };
    };
    const a = gated();
    await firstChunkThenPause(a.reader);
    const b = gated();
    await firstChunkThenPause(b.reader);
    await vi.waitFor(() => expect(a.fill.bytesWritten() + b.fill.bytesWritten()).toBe(12 * MiB));
    // Half the budget each: the last 3 MiB of what each received.
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(6 * MiB));
    a.reader.destroy(); // its only reader gone, a's written bytes leave memory
    await vi.waitFor(() => expect(reg.memoryHeld()).toBe(3 * MiB));
    b.release();
    await b.fill.done;
    // b alone now: its last 2 MiB join the 3 MiB it kept, within the whole budget.
    expect(reg.memoryHeld()).toBe(5 * MiB);
    b.reader.destroy();
    a.release();
    await a.fill.done;
    expect(reg.memoryHeld()).toBe(0);
  });
});

describe('blob fill: a reader behind memory and the temp file', () => {
  it('a reader that finds the temp file missing waits for the next change instead of failing', async () => {
    const MiB = 1024 * KiB;
    const b = blob(4 * MiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    // No memory budget: what is in the file leaves memory at once.
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
      yield* chunks(b.data.subarray(0, 3 * MiB), 64 * KiB);
      await gate;
      yield* chunks(b.data.subarray(3 * MiB), 64 * KiB);
    }));
    const r = fill.reader();
    const parts = [await firstChunkThenPause(r)];
    await vi.waitFor(() => expect(fill.bytesWritten()).toBe(3 * MiB));
    const [temp] = await tmpFiles();
    const tempPath = path.join(blobsDir, temp!);
    const aside = path.join(dir, 'aside');
    await fs.rename(tempPath, aside);
    let got = parts[0]!.length;
    r.on('data', (c: Buffer) => {
      parts.push(c);
      got += c.length;
    });
    const end = collect(r);
    r.resume();
    // It drains what it holds, then needs the file, which is not there: it waits, without error.
    await vi.waitFor(() => expect(got).toBeGreaterThanOrEqual(MiB));
    await sleep(50);
    const stuckAt = got;
    expect(stuckAt).toBeLessThan(3 * MiB);
    await fs.rename(aside, tempPath);
    release();
    const out = await end;
    expect(out.error).toBeUndefined();
    expect(out.ended).toBe(true);
    expect(Buffer.concat(parts).equals(b.data)).toBe(true);
    await fill.done;
  });

  it('a reader waiting for a temp file that is gone gets the error when the store write fails', async () => {
    const MiB = 1024 * KiB;
    const b = blob(4 * MiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
      yield* chunks(b.data.subarray(0, 3 * MiB), 64 * KiB);
      await gate;
      yield* chunks(b.data.subarray(3 * MiB), 64 * KiB);
    }));
    const r = fill.reader();
    await firstChunkThenPause(r);
    await vi.waitFor(() => expect(fill.bytesWritten()).toBe(3 * MiB));
    const [temp] = await tmpFiles();
    await fs.rm(path.join(blobsDir, temp!)); // gone for good: the rename into the store will fail
    const end = collect(r);
    r.resume();
    await sleep(50);
    release();
    const err = await fill.done.then(() => undefined, (e: unknown) => e as NodeJS.ErrnoException);
    expect(err?.code).toBe('ENOENT');
    const out = await end;
    expect(out.ended).toBe(false);
    expect(out.error).toBe(err);
    expect(out.data.length).toBeLessThan(3 * MiB);
  });
});

describe('blob fill: the disk fails', () => {
  const diskError = (code: string) => Object.assign(new Error(`${code}: simulated`), { code });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('a failed write to the temp file fails the fill: readers error, nothing stored', async () => {
    const MiB = 1024 * KiB;
    const b = blob(4 * MiB);
    const enospc = diskError('ENOSPC');
    vi.spyOn(await fileHandleProto(), 'writev').mockRejectedValueOnce(enospc);
    const failed = vi.fn();
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, onFail: failed });
    const src = genSource(() => chunks(b.data, 64 * KiB, 1), b.data.length);
    const { fill } = reg.fill(b.digest, b.data.length, src);
    const rs = await Promise.all([collect(fill.reader()), collect(fill.reader(MiB))]);
    await expect(fill.done).rejects.toBe(enospc);
    for (const r of rs) {
      expect(r.ended).toBe(false);
      expect(r.error).toBe(enospc);
    }
    // It stopped the download instead of reading on to the end.
    expect(fill.bytesReceived()).toBeLessThan(b.data.length);
    expect(src.signals[0]!.aborted).toBe(true);
    expect(failed).toHaveBeenCalledWith(b.digest, enospc);
    expect(await stored(b.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
    expect(reg.running(b.digest)).toBe(false);
  });

  it('a failed write at the end of the body fails the fill too', async () => {
    const b = blob(100 * KiB); // under one write batch: the only write is the final one
    const eio = diskError('EIO');
    vi.spyOn(await fileHandleProto(), 'writev').mockRejectedValueOnce(eio);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data), b.data.length));
    const r = collect(fill.reader());
    await expect(fill.done).rejects.toBe(eio);
    // Verified before the write broke: the reader has the right bytes; the store has none.
    expect((await r).data.equals(b.data)).toBe(true);
    // Its unwritten bytes are let go once the reader is done with them.
    expect(reg.memoryHeld()).toBe(0);
    expect(await stored(b.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
  });

  it('a failed fsync fails the fill and stores nothing', async () => {
    const b = blob(100 * KiB);
    const eio = diskError('EIO');
    vi.spyOn(await fileHandleProto(), 'sync').mockRejectedValueOnce(eio);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data), b.data.length));
    await expect(fill.done).rejects.toBe(eio);
    expect(await stored(b.hex)).toBeUndefined();
    expect(await tmpFiles()).toEqual([]);
  });
});

describe('blob fill: what readers hold', () => {
  it('a reader buffers at most about 1 MiB ahead of its client, and memory follows it as it reads on', async () => {
    const MiB = 1024 * KiB;
    const b = blob(6 * MiB);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data, 64 * KiB), b.data.length));
    const r = fill.reader();
    const parts = [await firstChunkThenPause(r)];
    // A second reader further on, stalled too.
    const ahead = fill.reader(3 * MiB);
    await firstChunkThenPause(ahead);
    await fill.done;
    expect(r.readableLength).toBeLessThanOrEqual(MiB + 64 * KiB);
    // Kept for the readers: everything past the slowest one (where it is: what its client took
    // plus what it holds for it).
    expect(reg.memoryHeld()).toBe(b.data.length - (parts[0]!.length + r.readableLength));
    ahead.destroy();
    let got = parts[0]!.length;
    let stopped = false;
    const reached = new Promise<void>((resolve) =>
      r.on('data', (c: Buffer) => {
        parts.push(c);
        got += c.length;
        if (got >= 3 * MiB && !stopped) {
          stopped = true;
          r.pause();
          resolve();
        }
      }),
    );
    r.resume();
    await reached;
    // What it has passed is let go while it is still reading.
    expect(reg.memoryHeld()).toBe(b.data.length - (got + r.readableLength));
    expect(r.readableLength).toBeLessThanOrEqual(MiB + 64 * KiB);
    const end = collect(r);
    r.resume();
    await end;
    expect(Buffer.concat(parts).equals(b.data)).toBe(true);
    expect(reg.memoryHeld()).toBe(0);
  });

  it('a reader releases its file as soon as it has read the last byte, before its client reads the end', async () => {
    const b = blob(100 * KiB);
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data), b.data.length));
    await fill.done;
    const fdsBefore = openFds();
    const r = fill.reader(); // served from the store file: nothing is left in memory
    r.pause();
    r.read(0); // start it without consuming anything
    await vi.waitFor(() => expect(r.readableLength).toBe(b.data.length));
    await vi.waitFor(() => expect(openFds()).toBe(fdsBefore));
    expect(r.readableEnded).toBe(false);
    const end = collect(r);
    r.resume();
    const out = await end;
    expect(out.data.equals(b.data)).toBe(true);
  });

  it('a temp file cut short under a reader is an error, not a hang', async () => {
    const MiB = 1024 * KiB;
    const b = blob(4 * MiB);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const reg = createFillRegistry({ storeBlobsDir: blobsDir, memoryBudget: 0 });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(async function* () {
      yield* chunks(b.data.subarray(0, 3 * MiB), 64 * KiB);
      await gate;
      yield* chunks(b.data.subarray(3 * MiB), 64 * KiB);
    }));
    const r = fill.reader();
    await firstChunkThenPause(r);
    await vi.waitFor(() => expect(fill.bytesWritten()).toBe(3 * MiB));
    const [temp] = await tmpFiles();
    await fs.truncate(path.join(blobsDir, temp!), 0);
    const end = collect(r);
    r.resume();
    const out = await end;
    expect(out.ended).toBe(false);
    expect(out.error?.message).toMatch(new RegExp(`^blob ${b.digest}: file shorter than the \\d+ bytes written$`));
    release();
    await fill.done.catch(() => {});
  });

  it('an upstream that announces the wrong size is not read: its body is destroyed and the request aborted', async () => {
    const b = blob(1000);
    let body: Readable | undefined;
    let signal: AbortSignal | undefined;
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, 1000, {
      open: async (s) => {
        signal = s;
        body = Readable.from([b.data]);
        return { body, size: 1001 };
      },
    });
    await expect(fill.done).rejects.toMatchObject({ reason: 'size' });
    expect(body?.destroyed).toBe(true);
    expect(signal?.aborted).toBe(true);
    expect(await tmpFiles()).toEqual([]);
  });
});

describe('blob fill: a slow disk', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('readers end once the bytes are verified, without waiting for the store fsync', async () => {
    const b = blob(200 * KiB);
    const proto = await fileHandleProto();
    const sync = proto.sync;
    vi.spyOn(proto, 'sync').mockImplementation(async function (this: FileHandle) {
      await sleep(300);
      return sync.call(this);
    });
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    const { fill } = reg.fill(b.digest, b.data.length, genSource(() => chunks(b.data), b.data.length));
    const events: string[] = [];
    const readers = [fill.reader(), fill.reader(0, 99)].map((r, i) => {
      r.on('end', () => events.push(`end ${i}`));
      return collect(r);
    });
    await fill.done;
    events.push('done');
    const out = await Promise.all(readers);
    expect(events).toHaveLength(3);
    expect(events.slice(0, 2).sort()).toEqual(['end 0', 'end 1']);
    expect(events[2]).toBe('done');
    expect(out[0]!.data.equals(b.data)).toBe(true);
    expect(out[1]!.data.equals(b.data.subarray(0, 100))).toBe(true);
  });

  it('a download that outruns the disk waits once 8 MiB are unwritten', async () => {
    const MiB = 1024 * KiB;
    const b = blob(24 * MiB);
    const proto = await fileHandleProto();
    const writev = proto.writev;
    vi.spyOn(proto, 'writev').mockImplementation(async function (this: FileHandle, ...args: Parameters<FileHandle['writev']>) {
      await sleep(20);
      return writev.apply(this, args);
    });
    const reg = createFillRegistry({ storeBlobsDir: blobsDir });
    let maxUnwritten = 0;
    let fill: ReturnType<typeof reg.fill>['fill'] | undefined;
    const src = genSource(async function* () {
      for await (const c of chunks(b.data, 64 * KiB)) {
        if (fill) maxUnwritten = Math.max(maxUnwritten, fill.bytesReceived() - fill.bytesWritten());
        yield c;
      }
    }, b.data.length);
    fill = reg.fill(b.digest, b.data.length, src).fill;
    await fill.done;
    expect(maxUnwritten).toBeGreaterThan(MiB); // the disk really was behind
    expect(maxUnwritten).toBeLessThanOrEqual(8 * MiB + 64 * KiB);
    expect((await stored(b.hex))?.equals(b.data)).toBe(true);
  });
});
