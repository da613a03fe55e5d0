// Free TCP ports on 127.0.0.1.
import net from 'node:net';

/** A port that was free on 127.0.0.1 a moment ago (listen on :0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (!addr || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not read the listening port'));
        return;
      }
      srv.close((err) => (err ? reject(err) : resolve(addr.port)));
    });
  });
}

/** Resolves once a TCP connection to host:port succeeds; rejects after timeoutMs. */
export async function waitForPort(port: number, timeoutMs = 10_000, host = '127.0.0.1', isAlive?: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    if (isAlive && !isAlive()) throw new Error(`process exited before ${host}:${port} accepted connections`);
    try {
      await new Promise<void>((resolve, reject) => {
        const sock = net.connect({ host, port });
        sock.once('connect', () => {
          sock.destroy();
          resolve();
        });
        sock.once('error', (err) => {
          sock.destroy();
          reject(err);
        });
      });
      return;
    } catch (err) {
      lastErr = err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${host}:${port}: ${String(lastErr)}`);
}
