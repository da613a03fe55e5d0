// Single-flight, streaming, verifying blob fill: the heart of the pull-through cache.
//
// When a client asks for a blob the store lacks, ONE upstream GET streams into a temp file in the
// store's blob directory. Every requester (the first and any that join later) reads the bytes from
// that growing file, each through its own fd at its own pace, so a slow client never slows the
// upstream download or the other clients. When the body ends, digest and size are checked: on a
// match the temp file is fsynced and renamed to <storeBlobsDir>/<hex>; on a mismatch, upstream
// error or truncation the temp file is removed and every reader is destroyed with the error.
//
// Readers never deliver the last byte of what they were asked for before the whole blob is
// verified and renamed, so a client of a bad fill always sees a short body / broken connection,
// never a complete-looking wrong one.
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
  bytesWritten(): number;
}

export interface FillRegistry {
  /** The running fill for a digest, or a new one; `joined` says whether this call shared an existing fill. */
  fill(digest: string, expectedSize: number | undefined, source: FillSource): { fill: BlobFill; joined: boolean };
  active(): number;
}

export interface FillRegistryOptions {
  storeBlobsDir: string;
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
const CHUNK = 512 * 1024;
/** Bytes gathered before one write to the temp file (and one wake-up of the readers). */
const WRITE_BATCH = 256 * 1024;

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
  /** Bytes whose write() has completed: readers never read past this. */
  written: number;
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
}

function notify(f: FillState): void {
  f.version++;
  const ws = [...f.waiters];
  f.waiters.clear();
  for (const w of ws) w();
}

export function createFillRegistry(opts: FillRegistryOptions): FillRegistry {
  const fills = new Map<string, BlobFill>();

  const fill = (digest: string, expectedSize: number | undefined, source: FillSource) => {
    if (!isSha256Digest(digest)) throw new TypeError(`unsupported digest ${JSON.stringify(digest)}: only sha256:<64 hex> is cached`);
    if (expectedSize !== undefined && !(Number.isSafeInteger(expectedSize) && expectedSize >= 0)) {
      throw new RangeError(`invalid expected size ${expectedSize} for ${digest}`);
    }
    // A digest names exactly one content, so a joiner's source and size are not needed: the
    // running fill verifies the same digest.
    const running = fills.get(digest);
    if (running) return { fill: running, joined: true };
    const f = startFill(digest, expectedSize, source, opts, () => {
      if (fills.get(digest) === f) fills.delete(digest);
    });
    fills.set(digest, f);
    return { fill: f, joined: false };
  };

  return { fill, active: () => fills.size };
}

function startFill(digest: string, expectedSize: number | undefined, source: FillSource, opts: FillRegistryOptions, forget: () => void): BlobFill {
  const hex = digest.slice('sha256:'.length);
  const f: FillState = {
    digest,
    tmpPath: tmpName(opts.storeBlobsDir),
    finalPath: path.join(opts.storeBlobsDir, hex),
    size: expectedSize,
    written: 0,
    tmpCreated: false,
    state: 'running',
    verified: false,
    error: undefined,
    version: 0,
    waiters: new Set(),
    readers: new Set(),
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
      // Chunks are gathered into larger writes: per-chunk write, wake-up and read-back costs
      // (tens of microseconds each, for ~16 KiB chunks) otherwise dominate a local transfer.
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const buf = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
        let off = 0;
        while (off < buf.length) {
          const { bytesWritten } = await fh!.write(buf, off, buf.length - off, f.written + off);
          off += bytesWritten;
        }
        f.written += buf.length;
        notify(f);
      };
      for await (const chunk of body) {
        // A view, not a copy: web-stream chunks are fresh arrays that nobody reuses.
        const u8 = chunk as Uint8Array;
        const buf: Buffer = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
        if (f.size !== undefined && f.written + pendingBytes + buf.length > f.size) {
          // Stop early: don't fill the disk (or the readers) with an oversized body.
          throw new BlobVerifyError(digest, 'oversize', `blob ${digest}: upstream sent more than the expected ${f.size} bytes`);
        }
        hash.update(buf);
        pending.push(buf);
        pendingBytes += buf.length;
        // Write when the batch is full, or when nothing more is buffered: a slow upstream's
        // bytes still reach the readers at once.
        if (pendingBytes >= WRITE_BATCH || body.readableLength === 0) await flush();
      }
      await flush();
      if (f.size !== undefined && f.written !== f.size) {
        throw new BlobVerifyError(digest, 'truncated', `blob ${digest}: upstream body ended after ${f.written} of ${f.size} bytes`);
      }
      if (f.size === undefined) {
        f.size = f.written;
        resolveReady({ size: f.size });
      }
      const actual = 'sha256:' + hash.digest('hex');
      if (actual !== digest) throw new BlobVerifyError(digest, 'digest', `blob ${digest}: content hashes to ${actual}`);
      f.verified = true;
      notify(f);

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
    if (f.verified) return;
    notify(f);
    for (const r of [...f.readers]) r.destroy(e);
  };

  void run();

  return {
    digest,
    ready,
    done,
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
  else if (f.state === 'running') f.readers.add(stream);

  /** Highest offset (exclusive) this reader may deliver right now. */
  const limit = (): number => {
    if (f.state === 'ok' || f.verified) return Math.min(endExcl, f.written);
    // Unverified: hold back the final byte of the requested range (and, with the size unknown,
    // the last byte written, which may be the final one) so a bad fill never looks complete.
    const avail = f.size !== undefined ? f.written : f.written - 1;
    return Math.min(avail, Math.min(endExcl, f.size ?? Infinity) - 1);
  };

  const park = () => {
    waiter = () => {
      waiter = undefined;
      void pump();
    };
    f.waiters.add(waiter);
  };

  const pump = async (): Promise<void> => {
    try {
      for (;;) {
        if (stream.destroyed) return;
        const v = f.version;
        // A reader with an open fd on verified bytes finishes even if storing them failed.
        if (f.state === 'failed' && !(f.verified && fh)) {
          stream.destroy(f.error);
          return;
        }
        if (!fh) {
          let file: string;
          if (f.state === 'ok') file = f.finalPath;
          else if (f.tmpCreated) file = f.tmpPath;
          else {
            park();
            return;
          }
          let h: FileHandle;
          try {
            h = await fs.open(file, 'r');
          } catch (err) {
            // The temp file vanished: it is being renamed into place or removed after a failure.
            // Either way the state changes (and notifies) next; re-check, or wait for it.
            if ((err as NodeJS.ErrnoException).code === 'ENOENT' && file === f.tmpPath) {
              if (f.version !== v || f.state !== 'running') continue;
              park();
              return;
            }
            throw err;
          }
          if (stream.destroyed) {
            await h.close();
            return;
          }
          // The fd follows the inode, so it stays valid across the rename into the store.
          fh = h;
          continue;
        }
        const lim = limit();
        if (pos < lim) {
          const n = Math.min(CHUNK, lim - pos);
          const buf = Buffer.allocUnsafe(n);
          const { bytesRead } = await fh.read(buf, 0, n, pos);
          if (stream.destroyed) return;
          if (bytesRead === 0) throw new Error(`blob ${f.digest}: file shorter than the ${lim} bytes written`);
          pos += bytesRead;
          if (!stream.push(buf.subarray(0, bytesRead))) {
            pumping = false; // resumed by read() once the consumer drains
            return;
          }
          continue;
        }
        if (f.state === 'ok') {
          const h = fh;
          fh = undefined;
          await h.close(); // release the fd now, not when the consumer gets round to 'end'
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
