// A byte range of an open file as a response body. On the node fast path it is pumped into the
// socket through two reused buffers: a fresh buffer per read was most of the embedded file
// server's garbage (and of its GC time) on a warm pull. Elsewhere it becomes a Readable.
import type { FileHandle } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';

/** Bytes per read, and the size of each of the two pump buffers. */
const CHUNK = 1024 * 1024;

export class FileRange {
  constructor(
    readonly fh: FileHandle,
    /** First byte. */
    readonly start: number,
    /** Last byte (inclusive). */
    readonly end: number,
  ) {}

  /** Positional reads of [start, end]; closes the handle at the end or on destroy. */
  toReadable(): Readable {
    const { fh, end } = this;
    let pos = this.start;
    return new Readable({
      highWaterMark: CHUNK,
      read() {
        const remaining = end + 1 - pos;
        if (remaining <= 0) {
          this.push(null);
          return;
        }
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, remaining));
        fh.read(buf, 0, buf.length, pos).then(
          ({ bytesRead }) => {
            if (this.destroyed) return;
            if (bytesRead === 0) return this.destroy(shrank(remaining));
            pos += bytesRead;
            this.push(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
            if (pos > end) this.push(null);
          },
          (err: Error) => this.destroy(err),
        );
      },
      destroy(err, cb) {
        // FileHandle.close waits for an in-flight read.
        fh.close().then(
          () => cb(err),
          () => cb(err),
        );
      },
    });
  }

  /**
   * Writes the range to `res` and ends it. While one buffer is in the socket's hands the next
   * read fills the other; a buffer is refilled only after its write has completed. A read error,
   * or a file shorter than promised, destroys the response (the client must not see a clean end
   * short of Content-Length); a client that goes away stops the pump.
   */
  async pipeTo(res: ServerResponse): Promise<void> {
    const { fh, end } = this;
    const bufs = [Buffer.allocUnsafe(Math.min(CHUNK, end + 1 - this.start)), undefined as Buffer | undefined];
    const pending: Array<Promise<void> | undefined> = [undefined, undefined];
    let gone = false;
    const onClose = () => (gone = true);
    res.once('close', onClose);
    try {
      let pos = this.start;
      for (let k = 0; pos <= end && !gone; k ^= 1) {
        await pending[k]; // that buffer's previous write has completed
        if (gone) break;
        const buf = (bufs[k] ??= Buffer.allocUnsafe(bufs[0]!.length));
        const want = Math.min(buf.length, end + 1 - pos);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) throw shrank(end + 1 - pos);
        pos += bytesRead;
        if (gone) break;
        const written = new Promise<void>((resolve, reject) => res.write(buf.subarray(0, bytesRead), (err) => (err ? reject(err) : resolve())));
        written.catch(() => {}); // awaited later; a failure before then is not "unhandled"
        pending[k] = written;
      }
      if (!gone) {
        await Promise.all(pending);
        res.end();
      }
    } catch (err) {
      res.destroy(err as Error);
    } finally {
      res.off('close', onClose);
      await fh.close().catch(() => {});
    }
  }
}

function shrank(missing: number): Error {
  return new Error(`file shrank while being served (wanted ${missing} more bytes)`);
}
