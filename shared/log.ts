// pino, quiet by default: warnings and errors only, unless asked.
import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

export function createLogger(opts: { level?: string; json?: boolean; stream?: DestinationStream } = {}): Logger {
  const level = opts.level ?? process.env.DERRICK_LOG_LEVEL ?? (opts.json ? 'info' : 'warn');
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, opts.stream ?? pino.destination(2));
}
