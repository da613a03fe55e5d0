// A minimal HTTP CONNECT proxy on 127.0.0.1 that maps names to local ports: it lets a client
// reach a server on 127.0.0.1 under a hostname, with TLS end to end (the proxy sees only bytes).
import http from 'node:http';
import net from 'node:net';

export interface ConnectProxy {
  /** http://127.0.0.1:PORT, for HTTPS_PROXY. */
  url: string;
  /** Every CONNECT target asked for, in order. */
  connects: string[];
  close(): Promise<void>;
}

/** `routes`: "name:port" -> the local port it reaches. Anything else is refused with 403. */
export function startConnectProxy(routes: Record<string, number>): Promise<ConnectProxy> {
  const connects: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = http.createServer((_req, res) => {
    res.writeHead(405, { Allow: 'CONNECT', 'Content-Length': '0' });
    res.end();
  });
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const target = req.url ?? '';
    connects.push(target);
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    const port = routes[target];
    if (port === undefined) {
      client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port }, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        connects,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
