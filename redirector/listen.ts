// Opening serve's listener, and the one error a taken (or impossible) address makes.
import type http from 'node:http';

export class ListenError extends Error {
  constructor(
    /** HOST:PORT as configured. */
    readonly address: string,
    /** EADDRINUSE, EACCES, EADDRNOTAVAIL, ENOTFOUND, ... */
    readonly code: string | undefined,
    /** What went wrong, in words: "the address is already in use". */
    readonly reason: string,
  ) {
    super(`cannot listen on ${address}: ${reason}`);
    this.name = 'ListenError';
  }
}

const REASONS: Readonly<Record<string, string>> = {
  EADDRINUSE: 'the address is already in use',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'this host has no such address',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name does not resolve',
};

export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(listen.slice(i + 1)) };
}

/** Listens on HOST:PORT; resolves with the bound port (PORT may be 0), or rejects with a ListenError. */
export function listen(server: http.Server, address: string): Promise<number> {
  const { host, port } = splitListen(address);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new ListenError(address, err.code, (err.code && REASONS[err.code]) ?? err.message));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}
