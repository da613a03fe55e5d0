// Single-flight, streaming, verifying blob fill: the heart of the pull-through cache.
//
// When a client asks for a blob the store lacks, ONE upstream GET streams into a temp file in the
// store's blob directory. Every requester (the first and any that join later) reads at its own
// pace: it is handed the received chunks straight from memory while they are kept (until every
// reader has passed them, within a memory budget the registry's fills share), and reads the temp
// file through its own fd when it is further behind, so a slow client never slows the upstream
// download or the other clients. When the body ends, digest and size are checked: on a match the
// temp file is fsynced and renamed to <storeBlobsDir>/<hex>; on a mismatch, upstream error or
// truncation the temp file is removed and every reader is destroyed with the error.
//
// Readers never deliver the last byte of what they were asked for before the whole blob is
// verified, so a client of a bad fill always sees a short body / broken connection, never a
// complete-looking wrong one. They end as soon as it is verified: the store's fsync and rename
// are not the client's wait.
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import crypto from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { TMP_PREFIX } from '../layout.js';
import { isSha256Digest } from '../oci.js';

export interface FillSource {
  /** Starts the upstream GET; abort `signal` is fired when the fill gives up (oversize, mismatch, error). */
  open(signal: AbortSignal): Promise<{ body: Readable; size?: number }>;
}

export interface BlobFill {
  readonly digest: string;
  /**
   * Resolves with the size once the upstream answered (headers), rejects with its error. When
   * neither the caller nor the upstream (Content-Length) gave a size, it resolves when the body
   * has ended, because only then is the size known.
   */
  readonly ready: Promise<{ size: number }>;
  /**
   * Bytes from `start` (default 0) to `end` (inclusive, like fs.createReadStream; default: the
   * end of the blob), following the temp file as it grows; errors if the fill fails. The caller
   * must handle the stream's 'error' (stream.pipeline does).
   */
  reader(start?: number, end?: number): Readable;
  /** Resolves once verified and renamed into the store; rejects (with the reason) otherwise. */
  readonly done: Promise<void>;
  /** Bytes received from the upstream so far (readers may have them before the file does). */
  bytesReceived(): number;
  /** Bytes in the temp file so far. */
  bytesWritten(): number;
}

export interface FillRegistry {
  /** The running fill for a digest, or a new one; `joined` says whether this call shared an existing fill. */
  fill(digest: string, expectedSize: number | undefined, source: FillSource): { fill: BlobFill; joined: boolean };
  /** Whether a fill of the digest is running (a new request would join it). */
  running(digest: string): boolean;
  active(): number;
  /** Bytes the fills hold in memory now: unwritten, and kept for readers behind the download. */
  memoryHeld(): number;
}

export interface FillRegistryOptions {
  storeBlobsDir: string;
  /** Bytes all running fills may keep in memory for readers behind the download (default 256 MiB). */
  memoryBudget?: number;
  onDone?(digest: string, bytes: number): void;
  onFail?(digest: string, err: Error): void;
}

/** The upstream body did not match the digest or size it was asked for. */
export class BlobVerifyError extends Error {
  constructor(
    readonly digest: string,
    readonly reason: 'digest' | 'size' | 'oversize' | 'truncated',
    message: string,
  ) {
    super(message);
    this.name = 'BlobVerifyError';
  }
}

/** Read size per fs read, and each reader's buffer; a reader holds at most about this much in memory. */
const CHUNK = 1024 * 1024;
/**
 * Received bytes not yet in the temp file, above which the fill stops reading the upstream until
 * the disk catches up. Below it the download never waits for a write: awaiting each ~64 KiB
 * write before reading on serialised a thread-pool round trip per chunk and capped a fill at
 * ~100 MB/s on loopback.
 */
const MAX_UNWRITTEN = 8 * 1024 * 1024;
/**
 * Received bytes gathered before a write to the temp file. Readers take the bytes from memory, so
 * the file may lag: fewer, larger writes cost less per byte than one per upstream chunk.
 */
const WRITE_BATCH = 1024 * 1024;
/**
 * Bytes already in the file that a registry's fills keep in memory, together, for readers behind
 * the download. A client slower than the upstream (the usual case: it verifies and writes what it
 * gets) then reads memory, not the file; every file read is a fresh buffer, and that allocation
 * rate, not the copying, is what drove V8 into a full GC every ~80 ms of a cold pull.
 */
const MEMORY_BUDGET = 256 * 1024 * 1024;
/** Most of the budget one fill may hold. */
const MAX_KEEP = 64 * 1024 * 1024;
/** What a running fill keeps however many share the budget: readers just behind the download. */
const MIN_KEEP = 2 * 1024 * 1024;
/** Buffers per writev (well under IOV_MAX). */
const MAX_IOV = 256;

/** Same shape as shared/publish/fsutil tmpName (`.tmp-fill.<pid>.<12 hex>`), so store debris cleanup
 * can tell a live fill's temp from a dead process's. Duplicated because shared/ must not import publisher/. */
function tmpName(dir: string): string {
  return path.join(dir, `${TMP_PREFIX}fill.${process.pid}.${crypto.randomBytes(6).toString('hex')}`);
}

const noop = () => {};

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** Mutable state of one fill, shared by the writer and all of its readers. */
interface FillState {
  readonly digest: string;
  readonly tmpPath: string;
  readonly finalPath: string;
  /** Known total size: the caller's expectation, else Content-Length, else set at end of body. */
  size: number | undefined;
  /** Bytes received and hashed: in memory, in the file, or both. Readers never read past this. */
  received: number;
  /** Bytes whose write to the temp file has completed. */
  written: number;
  /** Received chunks covering [memStart, received), in order; memStart <= written always, so
   * every byte is in memory or in the file. */
  mem: Buffer[];
  /** Absolute offset of each chunk in `mem`. */
  memOffsets: number[];
  memStart: number;
  tmpCreated: boolean;
  state: 'running' | 'ok' | 'failed';
  /**
   * The digest matched. Readers may deliver the last byte from here on: the client's bytes are
   * right, and whether the store keeps a copy (fsync, rename) is no longer the client's concern.
   */
  verified: boolean;
  error: Error | undefined;
  /** Bumped on every change; a reader that saw an old version re-checks instead of parking. */
  version: number;
  /** Parked readers, woken (and removed) on the next change: no timers, no polling. */
  waiters: Set<() => void>;
  /** Live readers, destroyed with the error if the fill fails (even paused ones, to free their fds). */
  readers: Set<Readable>;
  /** Where each unfinished reader is: chunks all of them have passed leave memory first. */
  cursors: Set<{ pos: number }>;
  readonly pool: MemoryPool;
}

/** The fills of one registry that hold written chunks in memory, and the budget they share. */
interface MemoryPool {
  readonly budget: number;
  readonly holders: Set<FillState>;
}

/** Bytes of written chunks `f` may keep: its share of the pool (a finished fill has no minimum). */
function keepLimit(f: FillState): number {
  const { budget, holders } = f.pool;
  const share = Math.floor(budget / Math.max(1, holders.size));
  return Math.min(MAX_KEEP, f.state === 'running' ? Math.max(Math.min(MIN_KEEP, budget), share) : share);
}

/** Index of the chunk in `mem` holding absolute offset `pos` (memStart <= pos < received). */
function chunkAt(f: FillState, pos: number): number {
  const offs = f.memOffsets;
  let lo = 0;
  let hi = offs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (offs[mid]! <= pos) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Drops chunks that are in the file and that no reader still needs, or that are beyond the fill's
 * share of the memory budget (a reader that far behind reads the file).
 */
function trimMemory(f: FillState): void {
  // Failed after verifying (the store write broke): the memory was only kept for its last readers.
  if (f.state === 'failed' && f.cursors.size === 0) return dropMemory(f);
  let slowest = Infinity;
  for (const c of f.cursors) slowest = Math.min(slowest, c.pos);
  const limit = keepLimit(f);
  let n = 0;
  while (n < f.mem.length) {
    const end = f.memOffsets[n]! + f.mem[n]!.length;
    if (end > f.written) break; // only in memory
    if (end > slowest && f.received - f.memOffsets[n]! <= limit) break; // still wanted, and affordable
    n++;
  }
  if (n > 0) {
    f.mem.splice(0, n);
    f.memOffsets.splice(0, n);
    f.memStart = f.mem.length ? f.memOffsets[0]! : f.received;
  }
  if (f.mem.length === 0) f.pool.holders.delete(f);
}

/** Appends a received chunk; a fill that starts holding memory shrinks the others' shares. */
function keepChunk(f: FillState, buf: Buffer): void {
  if (f.mem.length === 0) f.memStart = f.received;
  f.mem.push(buf);
  f.memOffsets.push(f.received);
  f.received += buf.length;
  const { holders } = f.pool;
  if (!holders.has(f)) {
    holders.add(f);
    for (const h of holders) if (h !== f) trimMemory(h);
  }
}

/** Lets go of every chunk (a failed fill). */
function dropMemory(f: FillState): void {
  f.mem = [];
  f.memOffsets = [];
  f.memStart = f.received;
  f.pool.holders.delete(f);
}

function notify(f: FillState): void {
  f.version++;
  const ws = [...f.waiters];
  f.waiters.clear();
  for (const w of ws) w();
}

export function createFillRegistry(opts: FillRegistryOptions): FillRegistry {
  const fills = new Map<string, BlobFill>();
  const pool: MemoryPool = { budget: opts.memoryBudget ?? MEMORY_BUDGET, holders: new Set() };

  const fill = (digest: string, expectedSize: number | undefined, source: FillSource) => {
    if (!isSha256Digest(digest)) throw new TypeError(`unsupported digest ${JSON.stringify(digest)}: only sha256:<64 hex> is cached`);
    if (expectedSize !== undefined && !(Number.isSafeInteger(expectedSize) && expectedSize >= 0)) {
      throw new RangeError(`invalid expected size ${expectedSize} for ${digest}`);
    }
    // A digest names exactly one content, so a joiner's source and size are not needed: the
    // running fill verifies the same digest.
    const running = fills.get(digest);
    if (running) return { fill: running, joined: true };
    const f = startFill(digest, expectedSize, source, opts, pool, () => {
      if (fills.get(digest) === f) fills.delete(digest);
    });
    fills.set(digest, f);
    return { fill: f, joined: false };
  };

  const memoryHeld = () => {
    let n = 0;
    for (const f of pool.holders) n += f.received - f.memStart;
    return n;
  };
  return { fill, running: (digest) => fills.has(digest), active: () => fills.size, memoryHeld };
}

function startFill(
  digest: string,
  expectedSize: number | undefined,
  source: FillSource,
  opts: FillRegistryOptions,
  pool: MemoryPool,
  forget: () => void,
): BlobFill {
  const hex = digest.slice('sha256:'.length);
  const f: FillState = {
    digest,
    tmpPath: tmpName(opts.storeBlobsDir),
    finalPath: path.join(opts.storeBlobsDir, hex),
    size: expectedSize,
    received: 0,
    written: 0,
    mem: [],
    memOffsets: [],
    memStart: 0,
    tmpCreated: false,
    state: 'running',
    verified: false,
    error: undefined,
    version: 0,
    waiters: new Set(),
    readers: new Set(),
    cursors: new Set(),
    pool,
  };

  let resolveReady!: (v: { size: number }) => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<{ size: number }>((res, rej) => ((resolveReady = res), (rejectReady = rej)));
  let resolveDone!: () => void;
  let rejectDone!: (e: Error) => void;
  const done = new Promise<void>((res, rej) => ((resolveDone = res), (rejectDone = rej)));
  // Either may go unobserved (a caller that only streams); marking them handled here keeps a
  // failed fill from becoming an unhandled rejection, while awaiting them still throws.
  ready.catch(noop);
  done.catch(noop);

  const ac = new AbortController();

  const run = async () => {
    let fh: FileHandle | undefined;
    let body: Readable | undefined;
    try {
      await fs.mkdir(opts.storeBlobsDir, { recursive: true });
      // 0o444 like the store's other objects; the fd we hold is writable regardless.
      fh = await fs.open(f.tmpPath, 'wx', 0o444);
      f.tmpCreated = true;
      notify(f);

      const opened = await source.open(ac.signal);
      body = opened.body;
      if (opened.size !== undefined && f.size !== undefined && opened.size !== f.size) {
        throw new BlobVerifyError(digest, 'size', `blob ${digest}: upstream announced ${opened.size} bytes, expected ${f.size}`);
      }
      f.size ??= opened.size;
      if (f.size !== undefined) resolveReady({ size: f.size });

      const hash = crypto.createHash('sha256');
      const file = fh;
      // The file writer runs beside the download: it writes whatever has arrived since its last
      // write in one writev, so the upstream is read at network speed and the disk sees large writes.
      let writing: Promise<void> | undefined;
      let writeError: Error | undefined;
      let stopWriting = false;
      const writeAll = async () => {
        while (f.written < f.received && !writeError && !stopWriting) {
          const i = chunkAt(f, f.written);
          const bufs: Buffer[] = [f.mem[i]!.subarray(f.written - f.memOffsets[i]!)];
          for (let j = i + 1; j < f.mem.length && bufs.length < MAX_IOV; j++) bufs.push(f.mem[j]!);
          const { bytesWritten } = await file.writev(bufs, f.written);
          f.written += bytesWritten;
          trimMemory(f);
        }
      };
      const kickWriter = () => {
        writing ??= writeAll().then(
          () => {
            writing = undefined;
          },
          (err: unknown) => {
            writeError ??= asError(err);
            writing = undefined;
          },
        );
      };
      /** Waits for the writer to finish what it has (and to pick up anything that arrived meanwhile). */
      const drain = async () => {
        while (f.written < f.received) {
          if (writeError) throw writeError;
          kickWriter();
          await writing;
        }
        if (writeError) throw writeError;
      };
      try {
        for await (const chunk of body) {
          // A view, not a copy: web-stream chunks are fresh arrays that nobody reuses.
          const u8 = chunk as Uint8Array;
          const buf: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
          if (buf.length === 0) continue;
          if (f.size !== undefined && f.received + buf.length > f.size) {
            // Stop early: don't fill the disk (or the readers) with an oversized body.
            throw new BlobVerifyError(digest, 'oversize', `blob ${digest}: upstream sent more than the expected ${f.size} bytes`);
          }
          hash.update(buf);
          keepChunk(f, buf);
          notify(f);
          if (f.received - f.written >= WRITE_BATCH) kickWriter();
          if (writeError) throw writeError;
          if (f.received - f.written > MAX_UNWRITTEN) await drain();
        }
        if (f.size !== undefined && f.received !== f.size) {
          throw new BlobVerifyError(digest, 'truncated', `blob ${digest}: upstream body ended after ${f.received} of ${f.size} bytes`);
        }
        if (f.size === undefined) {
          f.size = f.received;
          resolveReady({ size: f.size });
        }
        const actual = 'sha256:' + hash.digest('hex');
        if (actual !== digest) throw new BlobVerifyError(digest, 'digest', `blob ${digest}: content hashes to ${actual}`);
        f.verified = true;
        notify(f);
        await drain();
      } finally {
        // Never close the fd under a write in flight.
        stopWriting = true;
        await writing;
      }

      await fh.sync();
      const h = fh;
      fh = undefined;
      await h.close();
      // Renaming over an identical existing object is harmless (content addressed).
      await fs.rename(f.tmpPath, f.finalPath);
    } catch (err) {
      const e = asError(err);
      fail(e);
      ac.abort(e);
      body?.destroy();
      await fh?.close().catch(noop);
      await fs.rm(f.tmpPath, { force: true }).catch(noop);
      try {
        opts.onFail?.(digest, e);
      } catch {
        // a throwing hook must not change the outcome
      }
      rejectReady(e);
      rejectDone(e);
      return;
    }
    f.state = 'ok';
    f.readers.clear(); // only needed to fail them; live ones keep reading from their own fd
    // What readers still behind need stays in memory until they pass it; the rest goes now.
    trimMemory(f);
    forget();
    notify(f);
    try {
      opts.onDone?.(digest, f.written);
    } catch {
      // a throwing hook must not change the outcome
    }
    resolveDone();
  };

  /** Marks the fill failed at once: readers error now, and a new request starts a fresh fill
   * instead of joining this one while its temp file is being removed. */
  const fail = (e: Error) => {
    if (f.state !== 'running') return;
    f.state = 'failed';
    f.error = e;
    forget();
    // Verified bytes stay good for the readers (their fds outlive the temp file): only the
    // store's copy is lost. Unverified ones must never look complete.
    if (f.verified) {
      // Readers that already ended left the unwritten bytes in memory: nobody trims them later.
      trimMemory(f);
      // A reader parked for a temp file that vanished must wake to see the failure, or it hangs.
      notify(f);
      return;
    }
    dropMemory(f);
    notify(f);
    for (const r of [...f.readers]) r.destroy(e);
  };

  void run();

  return {
    digest,
    ready,
    done,
    bytesReceived: () => f.received,
    bytesWritten: () => f.written,
    reader: (start = 0, end?: number) => createReader(f, start, end),
  };
}

function createReader(f: FillState, start: number, end: number | undefined): Readable {
  if (!(Number.isSafeInteger(start) && start >= 0)) throw new RangeError(`invalid start ${start}`);
  if (end !== undefined && !(Number.isSafeInteger(end) && end >= start)) throw new RangeError(`invalid end ${end} (start ${start})`);
  const endExcl = end === undefined ? Infinity : end + 1;

  let fh: FileHandle | undefined;
  let pos = start;
  const cursor = { pos };
  const leave = () => {
    if (f.cursors.delete(cursor)) trimMemory(f);
  };
  /** A pump is running or parked on a waiter; read() must not start a second one. */
  let pumping = false;
  let waiter: (() => void) | undefined;

  const stream = new Readable({
    highWaterMark: CHUNK,
    read() {
      if (pumping) return;
      pumping = true;
      void pump();
    },
    destroy(err, cb) {
      f.readers.delete(stream);
      leave();
      if (waiter) f.waiters.delete(waiter);
      waiter = undefined;
      const h = fh;
      fh = undefined;
      // FileHandle.close waits for an in-flight read, so a pump mid-read is safe.
      if (h) h.close().then(() => cb(err), (e: Error) => cb(err ?? e));
      else cb(err);
    },
  });
  if (f.state === 'failed') stream.destroy(f.error); // 'error' is emitted on a later tick
  else {
    f.cursors.add(cursor);
    if (f.state === 'running') f.readers.add(stream);
  }

  /** Highest offset (exclusive) this reader may deliver right now. */
  const limit = (): number => {
    if (f.state === 'ok' || f.verified) return Math.min(endExcl, f.received);
    // Unverified: hold back the final byte of the requested range (and, with the size unknown,
    // the last byte received, which may be the final one) so a bad fill never looks complete.
    const avail = f.size !== undefined ? f.received : f.received - 1;
    return Math.min(avail, Math.min(endExcl, f.size ?? Infinity) - 1);
  };

  const park = () => {
    waiter = () => {
      waiter = undefined;
      void pump();
    };
    f.waiters.add(waiter);
  };

  /** Opens the temp or store file for reads behind the in-memory window; false: wait for a change. */
  const openFile = async (v: number): Promise<boolean | 'retry'> => {
    let file: string;
    if (f.state === 'ok') file = f.finalPath;
    else if (f.tmpCreated) file = f.tmpPath;
    else return false;
    let h: FileHandle;
    try {
      h = await fs.open(file, 'r');
    } catch (err) {
      // The temp file vanished: it is being renamed into place or removed after a failure.
      // Either way the state changes (and notifies) next; re-check, or wait for it.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && file === f.tmpPath) {
        return f.version !== v || f.state !== 'running' ? 'retry' : false;
      }
      throw err;
    }
    if (stream.destroyed) {
      await h.close();
      return false;
    }
    // The fd follows the inode, so it stays valid across the rename into the store.
    fh = h;
    return true;
  };

  const pump = async (): Promise<void> => {
    try {
      for (;;) {
        if (stream.destroyed) return;
        const v = f.version;
        // A reader on verified bytes finishes even if storing them failed.
        if (f.state === 'failed' && !f.verified) {
          stream.destroy(f.error);
          return;
        }
        const lim = limit();
        if (pos < lim && pos >= f.memStart && f.mem.length > 0) {
          // The bytes are in memory: hand over the received chunks themselves (no copy, no read).
          let i = chunkAt(f, pos);
          let more = true;
          while (more && pos < lim && i < f.mem.length) {
            const c = f.mem[i]!;
            const from = pos - f.memOffsets[i]!;
            const to = Math.min(c.length, lim - f.memOffsets[i]!);
            pos += to - from;
            more = stream.push(from === 0 && to === c.length ? c : c.subarray(from, to));
            i++;
          }
          cursor.pos = pos;
          // Passed the oldest chunk in memory: it may be nobody's any more.
          if (f.mem.length && pos >= f.memOffsets[0]! + f.mem[0]!.length) trimMemory(f);
          if (!more) {
            pumping = false; // resumed by read() once the consumer drains
            return;
          }
          continue;
        }
        if (pos < lim) {
          // Behind the in-memory window: the bytes are in the file.
          if (!fh) {
            if (f.state === 'failed') {
              // Verified, but the temp file is gone with the failed store write.
              stream.destroy(f.error);
              return;
            }
            const opened = await openFile(v);
            if (opened === 'retry') continue;
            if (!opened) {
              if (!stream.destroyed) park();
              return;
            }
          }
          const n = Math.min(CHUNK, lim - pos, f.memStart - pos);
          const buf = Buffer.allocUnsafe(n);
          const { bytesRead } = await fh!.read(buf, 0, n, pos);
          if (stream.destroyed) return;
          if (bytesRead === 0) throw new Error(`blob ${f.digest}: file shorter than the ${pos + n} bytes written`);
          pos += bytesRead;
          cursor.pos = pos;
          if (!stream.push(buf.subarray(0, bytesRead))) {
            pumping = false;
            return;
          }
          continue;
        }
        if ((f.verified || f.state === 'ok') && pos >= Math.min(endExcl, f.size!)) {
          // Done once the bytes are verified: the store's fsync and rename are not the client's wait.
          const h = fh;
          fh = undefined;
          if (h) await h.close(); // release the fd now, not when the consumer gets round to 'end'
          f.readers.delete(stream);
          leave();
          if (!stream.destroyed) stream.push(null);
          return;
        }
        if (f.version !== v) continue;
        park();
        return;
      }
    } catch (err) {
      stream.destroy(asError(err));
    }
  };

  return stream;
}
