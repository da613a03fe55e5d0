// The socket `derrick serve` answers on: plain HTTP, or HTTPS (HTTP/1.1 only) when serve.tls is
// set, with the certificate and key re-read on demand (SIGHUP) without dropping connections.
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { Logger } from '../shared/log.js';

export interface TlsFiles {
  /** PEM certificate (chain), absolute path. */
  cert: string;
  /** PEM private key, absolute path. */
  key: string;
}

export interface Listener {
  server: http.Server;
  scheme: 'http' | 'https';
  /**
   * Re-reads the certificate and key and uses them for new connections. A pair that can't be
   * read or doesn't match is logged and the old one kept. Resolves true when the new pair is in use.
   */
  reloadTls(): Promise<boolean>;
}

/** A certificate/key pair that failed to load; the message names both files. */
export class TlsPairError extends Error {
  constructor(files: TlsFiles, reason: string) {
    super(`serve.tls: cannot use certificate ${files.cert} with key ${files.key}: ${reason}`);
    this.name = 'TlsPairError';
  }
}

/** Reads and checks a pair: createSecureContext refuses unparsable PEM and a key that doesn't match. */
export async function readTlsPair(files: TlsFiles): Promise<{ cert: Buffer; key: Buffer }> {
  let pair: { cert: Buffer; key: Buffer };
  try {
    const [cert, key] = await Promise.all([fs.readFile(files.cert), fs.readFile(files.key)]);
    pair = { cert, key };
    tls.createSecureContext(pair);
  } catch (err) {
    throw new TlsPairError(files, (err as Error).message);
  }
  return pair;
}

/**
 * How long a TLS client may take from connect to a finished handshake. The HTTP timeouts only
 * start after it, and node's default (120 s) lets a silent client hold a socket for two minutes;
 * real clients finish in milliseconds.
 */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * The server, without a request handler yet (add one with `server.on('request', ...)`), so a bad
 * TLS pair fails `derrick serve` before anything else has started.
 */
export async function createListener(
  tlsFiles: TlsFiles | undefined,
  log: Logger,
  opts: { handshakeTimeoutMs?: number } = {},
): Promise<Listener> {
  if (!tlsFiles) {
    return {
      server: http.createServer({ requireHostHeader: false }),
      scheme: 'http',
      reloadTls: async () => {
        log.warn('serve.tls is not set; nothing to reload');
        return false;
      },
    };
  }
  // No h2: node's http2 compat layer is a different server, and the clients pull fine with 1.1.
  const server = https.createServer({
    ...(await readTlsPair(tlsFiles)),
    requireHostHeader: false,
    ALPNProtocols: ['http/1.1'],
    handshakeTimeout: opts.handshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS,
  });
  return {
    server,
    scheme: 'https',
    reloadTls: async () => {
      try {
        // setSecureContext applies to new handshakes only; open connections keep their session.
        server.setSecureContext(await readTlsPair(tlsFiles));
      } catch (err) {
        log.error({ err: (err as Error).message }, 'TLS reload failed; keeping the previous certificate');
        return false;
      }
      log.info({ cert: tlsFiles.cert }, 'TLS certificate reloaded');
      return true;
    },
  };
}
