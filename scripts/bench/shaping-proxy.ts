// A TCP proxy that makes a loopback upstream look far away: every byte towards the client passes a
// bandwidth limit shared by all connections and one per connection, and every byte towards the
// upstream (each request) is held `latency` ms, as is each new connection. The bench runs it as
// its own process, so its timers do not queue behind the client's or derrick's work:
//
//   node dist/scripts/bench/shaping-proxy.js --target 127.0.0.1:5000 --rate 100 --per-conn 25 --latency 20
//
// (rates in MB/s, 1 MB = 1e6 bytes; --per-conn 0 means no per-connection limit). It prints
// "listening <port>" once bound to 127.0.0.1.
import net from 'node:net';
import { parseArgs } from 'node:util';

export interface Shape {
  /** Shared limit, bytes per second towards the client. */
  rate: number;
  /** Per-connection limit, bytes per second (0: none). */
  perConn: number;
  latencyMs: number;
}

/**
 * A token bucket: `rate` bytes per second, holding at most BURST_MS worth, so that a timer firing
 * late (a loaded machine) is caught up without letting a long idle spell turn into a burst.
 */
const BURST_MS = 20;
interface Bucket {
  rate: number;
  tokens: number;
  last: number;
}
const bucket = (rate: number): Bucket => ({ rate, tokens: 0, last: performance.now() });
function refill(b: Bucket, now: number): void {
  b.tokens = Math.min((b.rate * BURST_MS) / 1000, b.tokens + ((now - b.last) * b.rate) / 1000);
  b.last = now;
}
/** ms until `b` holds `n` tokens. */
const waitFor = (b: Bucket, n: number) => Math.max(0, ((n - b.tokens) * 1000) / b.rate);

/** Bytes read ahead from the upstream per connection before it is paused. */
const READ_AHEAD = 4 * 1024 * 1024;
/** The smallest send worth a timer. */
const QUANTUM = 16 * 1024;

/** Starts the proxy; resolves with its server once listening. */
export function startShapingProxy(target: { host: string; port: number }, shape: Shape, port = 0): Promise<net.Server> {
  const link = bucket(shape.rate);
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const upstream = net.connect(target);
    upstream.setNoDelay(true);
    const own = shape.perConn > 0 ? bucket(shape.perConn) : undefined;
    let upNext = performance.now() + shape.latencyMs;
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    // The upstream closing after its last byte (end) is not an error: the queued bytes still go
    // out, then the client's side is ended. Any other close cuts the client off.
    let ended = false;
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', () => ended || close());
    // Requests: each chunk is held `latency` ms, in order.
    client.on('data', (chunk) => {
      const now = performance.now();
      upNext = Math.max(upNext, now + shape.latencyMs);
      setTimeout(() => upstream.write(chunk), upNext - now);
    });
    // Responses: queued, and let through as the shared and the connection's buckets allow.
    const queue: Buffer[] = [];
    let queued = 0;
    let timer: NodeJS.Timeout | undefined;
    let draining = false;
    const pump = () => {
      timer = undefined;
      if (client.destroyed || draining) return;
      const now = performance.now();
      refill(link, now);
      if (own) refill(own, now);
      let n = Math.floor(Math.min(queued, link.tokens, own ? own.tokens : Infinity));
      while (n > 0) {
        const head = queue[0]!;
        const part = head.length <= n ? queue.shift()! : head.subarray(0, n);
        if (part !== head || head.length > n) queue[0] = head.subarray(part.length);
        queued -= part.length;
        n -= part.length;
        link.tokens -= part.length;
        if (own) own.tokens -= part.length;
        if (!client.write(part)) {
          draining = true;
          client.once('drain', () => {
            draining = false;
            pump();
          });
          break;
        }
      }
      if (queued < READ_AHEAD / 4 && upstream.isPaused()) upstream.resume();
      if (queued === 0) {
        if (ended) client.end();
        return;
      }
      if (draining) return;
      const want = Math.min(queued, QUANTUM);
      timer = setTimeout(pump, Math.max(1, waitFor(link, want), own ? waitFor(own, want) : 0));
    };
    upstream.on('data', (chunk: Buffer) => {
      queue.push(chunk);
      queued += chunk.length;
      if (queued >= READ_AHEAD) upstream.pause();
      if (!timer && !draining) pump();
    });
    upstream.on('end', () => {
      ended = true;
      if (!timer && !draining) pump();
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

if (process.argv[1]?.endsWith('shaping-proxy.js')) {
  const { values } = parseArgs({ options: { target: { type: 'string' }, rate: { type: 'string' }, 'per-conn': { type: 'string', default: '0' }, latency: { type: 'string', default: '0' }, port: { type: 'string', default: '0' } } });
  const [host, p] = (values.target ?? '').split(':');
  if (!host || !p || !values.rate) {
    console.error('usage: shaping-proxy --target HOST:PORT --rate MB/s [--per-conn MB/s] [--latency ms] [--port N]');
    process.exit(2);
  }
  const server = await startShapingProxy({ host, port: Number(p) }, { rate: Number(values.rate) * 1e6, perConn: Number(values['per-conn']) * 1e6, latencyMs: Number(values.latency) }, Number(values.port));
  console.log(`listening ${(server.address() as net.AddressInfo).port}`);
  process.on('SIGTERM', () => process.exit(0));
}
