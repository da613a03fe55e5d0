// The bench's shaping proxy really limits: a body takes at least size/rate,
// a per-connection cap holds for one connection while two share the link, and each request waits
// the latency.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShapingProxy } from './shaping-proxy.js';

const BODY = Buffer.alloc(2_000_000, 7);

describe('shaping proxy', () => {
  let origin: http.Server;
  let port: number;
  beforeAll(async () => {
    // /close answers with Connection: close, so the origin ends the connection after its last byte.
    origin = http.createServer((req, res) => {
      if (req.url === '/close') res.setHeader('Connection', 'close');
      res.end(BODY);
    });
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    port = (origin.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => origin.close(() => r())));

  const timedGet = async (url: string) => {
    const t0 = performance.now();
    const res = await fetch(url);
    const n = (await res.arrayBuffer()).byteLength;
    expect(n).toBe(BODY.length);
    return performance.now() - t0;
  };

  it('holds a connection to its per-connection rate and two connections to the shared rate', async () => {
    const proxy = await startShapingProxy({ host: '127.0.0.1', port }, { rate: 10e6, perConn: 8e6, latencyMs: 0 });
    try {
      const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/`;
      // 2 MB at 8 MB/s: >= 250 ms less one 20 ms burst.
      expect(await timedGet(url)).toBeGreaterThanOrEqual(225);
      // Two at once share 10 MB/s: 4 MB take >= 400 ms less a burst (each alone would be 250 ms).
      const t0 = performance.now();
      await Promise.all([timedGet(url), timedGet(url)]);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(375);
    } finally {
      proxy.close();
    }
  });

  it('an origin that closes after its last byte: the client still gets every byte', async () => {
    const proxy = await startShapingProxy({ host: '127.0.0.1', port }, { rate: 10e6, perConn: 0, latencyMs: 0 });
    try {
      expect(await timedGet(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}/close`)).toBeGreaterThanOrEqual(175);
    } finally {
      proxy.close();
    }
  });

  it('delays each request by the latency', async () => {
    const proxy = await startShapingProxy({ host: '127.0.0.1', port }, { rate: 1e9, perConn: 0, latencyMs: 100 });
    try {
      const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/`;
      expect(await timedGet(url)).toBeGreaterThanOrEqual(95);
    } finally {
      proxy.close();
    }
  });
});
