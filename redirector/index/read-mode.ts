// Whether a small file is read on the main thread or through libuv's pool (app-entry.ts).
// In-thread is cheaper while the page cache holds the file, which is the normal state of a served
// tree (invariant 7). A synchronous read slower than `slowMs` waited on the disk, and would hold
// every other request with it, so reads go through the pool for the next `poolMs`: a cold page
// cache (after a reboot) costs the loop one disk read per `poolMs`, not one per request.

export interface ReadMode {
  /** Whether a read of `size` bytes may stay on the main thread now. */
  inThread(size: number, now?: number): boolean;
  /** Reports how long an in-thread read took. */
  took(ms: number, now?: number): void;
}

export function createReadMode(o: { maxSize: number; slowMs: number; poolMs: number }): ReadMode {
  let poolUntil = 0;
  return {
    inThread: (size, now = performance.now()) => size <= o.maxSize && now >= poolUntil,
    took: (ms, now = performance.now()) => {
      if (ms > o.slowMs) poolUntil = now + o.poolMs;
    },
  };
}
