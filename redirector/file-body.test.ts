import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileRange } from './file-body.js';

const MiB = 1024 * 1024;
let dir: string;
let file: string;
let data: Buffer;
let server: http.Server;
let url: string;
/** What the next request serves: a range of `file`, optionally after truncating it. */
let next: { start: number; end: number; truncateTo?: number };

const openFds = () => readdirSync('/proc/self/fd').length;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-file-body-'));
  file = path.join(dir, 'blob');
  data = crypto.randomBytes(3 * MiB + 12345);
  await fs.writeFile(file, data);
  server = http.createServer(async (_req, res) => {
    const { start, end, truncateTo } = next;
    const fh = await fs.open(file, 'r');
    if (truncateTo !== undefined) await fs.truncate(file, truncateTo);
    res.writeHead(200, { 'Content-Length': String(end - start + 1) });
    await new FileRange(fh, start, end).pipeTo(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await fs.rm(dir, { recursive: true, force: true });
});

/** GET with a raw client: the bytes, and whether the response ended cleanly. */
function get(opts: { abortAfter?: number } = {}): Promise<{ body: Buffer; complete: boolean }> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let n = 0;
    const req = http.get(url, { agent: false }, (res) => {
      res.on('data', (c: Buffer) => {
        parts.push(c);
        n += c.length;
        if (opts.abortAfter !== undefined && n >= opts.abortAfter) req.destroy();
      });
      res.on('end', () => resolve({ body: Buffer.concat(parts), complete: res.complete }));
      res.on('error', () => resolve({ body: Buffer.concat(parts), complete: false }));
      res.on('close', () => resolve({ body: Buffer.concat(parts), complete: res.complete }));
    });
    req.on('error', () => resolve({ body: Buffer.concat(parts), complete: false }));
  });
}

describe('FileRange.pipeTo', () => {
  it('writes the exact range through its two reused buffers, and closes the file', async () => {
    const fds = openFds();
    for (const [start, end] of [
      [0, data.length - 1],
      [100, 3 * MiB + 7],
      [MiB, 2 * MiB - 1],
      [5, 5],
    ] as const) {
      next = { start, end };
      const r = await get();
      expect(r.complete, `${start}-${end}`).toBe(true);
      expect(r.body.equals(data.subarray(start, end + 1)), `${start}-${end}`).toBe(true);
    }
    await expect.poll(openFds).toBe(fds);
  });

  it('a file shorter than promised cuts the connection instead of ending short', async () => {
    await fs.writeFile(file, data);
    next = { start: 0, end: data.length - 1, truncateTo: 2 * MiB };
    const r = await get();
    expect(r.complete).toBe(false);
    expect(r.body.length).toBeLessThan(data.length);
    expect(r.body.equals(data.subarray(0, r.body.length))).toBe(true);
    await fs.writeFile(file, data);
  });

  it('a client that goes away mid-way stops the pump and the file is closed', async () => {
    await fs.writeFile(file, data);
    const fds = openFds();
    next = { start: 0, end: data.length - 1 };
    const r = await get({ abortAfter: 64 * 1024 });
    expect(r.complete).toBe(false);
    await expect.poll(openFds).toBe(fds);
  });
});
