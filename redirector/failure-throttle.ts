// Slows down a client address that keeps sending wrong passwords: after `free` failures in a
// row, each further check from that address waits base·2^k ms (capped) before it runs. The wait
// is a timer, so nobody else waits; the count is forgotten after `windowMs` without a failure or
// at the address's first success.
import { TtlCache } from './ttl-cache.js';

export interface FailureThrottleOptions {
  free: number;
  baseMs: number;
  maxMs: number;
  windowMs: number;
  /** Addresses remembered at most (the oldest is forgotten first). */
  maxClients: number;
  now?: () => number;
}

export const DEFAULT_THROTTLE: FailureThrottleOptions = { free: 5, baseMs: 100, maxMs: 2000, windowMs: 60_000, maxClients: 10_000 };

export interface FailureThrottle {
  /** How long a check from this address should wait first (0: not throttled). */
  delayMs(client: string | undefined): number;
  failed(client: string | undefined): void;
  succeeded(client: string | undefined): void;
}

export function createFailureThrottle(o: FailureThrottleOptions = DEFAULT_THROTTLE): FailureThrottle {
  const failures = new TtlCache<string, number>(o.maxClients, o.now);
  return {
    delayMs(client) {
      const n = client === undefined ? 0 : (failures.get(client) ?? 0);
      return n < o.free ? 0 : Math.min(o.maxMs, o.baseMs * 2 ** Math.min(n - o.free, 20));
    },
    failed(client) {
      if (client !== undefined) failures.set(client, (failures.get(client) ?? 0) + 1, o.windowMs);
    },
    succeeded(client) {
      if (client !== undefined) failures.delete(client);
    },
  };
}
