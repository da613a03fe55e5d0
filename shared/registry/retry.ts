// When and how long to wait before asking an upstream registry again.

/** A registry asking for longer than this is treated as this: a sync must not stall for an hour. */
export const MAX_RETRY_AFTER_MS = 30_000;
const MAX_BACKOFF_MS = 10_000;

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** Retry-After as delta-seconds or an HTTP-date, in ms, capped; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const v = value.trim();
  let ms: number;
  if (/^\d+$/.test(v)) ms = Number(v) * 1000;
  else {
    // An HTTP-date names its month; without this V8 would read "-1" as a year.
    if (!/[a-z]{3}/i.test(v)) return undefined;
    const at = Date.parse(v);
    if (Number.isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
}

/**
 * Exponential backoff with "equal jitter": half the step is fixed so retries never bunch up at
 * zero, half is random so many clients that failed together do not come back together.
 */
export function backoffMs(attempt: number, baseMs: number, random: () => number = Math.random): number {
  const step = Math.min(baseMs * 2 ** attempt, MAX_BACKOFF_MS);
  return step / 2 + random() * (step / 2);
}

export function isRetryableStatus(status: number): boolean {
  // 501 and 505 say the server will never do it; asking again is pointless.
  return status >= 500 && status !== 501 && status !== 505;
}

export function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError');
}

/**
 * Transport failures worth another try. fetch reports every one of them as TypeError("fetch
 * failed") with the socket error as cause, so the TypeError alone is enough; the codes catch
 * errors raised outside fetch (a body stream, a raw socket).
 */
export function isNetworkError(err: unknown): boolean {
  if (isAbortError(err)) return false;
  if (err instanceof TypeError) return true;
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
    if (e instanceof Error && /socket hang up|other side closed/i.test(e.message)) return true;
  }
  return false;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A short reason for a transport failure. fetch's own message is only "fetch failed"; the cause
 * holds the socket error, and OpenSSL's text would otherwise drown the message in file paths.
 */
export function describeNetworkError(err: unknown): string {
  let e = err;
  if (err instanceof Error && err.message === 'fetch failed' && err.cause) e = err.cause;
  if (e instanceof AggregateError && e.errors.length) e = e.errors[0];
  const code = (e as { code?: unknown })?.code;
  const msg = e instanceof Error ? e.message : String(e);
  if (typeof code === 'string' && code.startsWith('ERR_SSL_')) return `TLS handshake failed (${code})`;
  return typeof code === 'string' && !msg.includes(code) ? `${msg} (${code})` : msg;
}
