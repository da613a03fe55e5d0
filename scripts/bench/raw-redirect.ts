// Baseline for the redirector benchmark: a bare node:http server answering the same 302.
import http from 'node:http';

const port = Number(process.argv[2] ?? 0);
const location = '/published/master/bench/20260101T000000.000Z-000/blobs/sha256:' + '0'.repeat(64);
const server = http.createServer((_req, res) => {
  res.writeHead(302, { Location: location, 'Docker-Distribution-API-Version': 'registry/2.0', 'Content-Length': '0' });
  res.end();
});
server.keepAliveTimeout = 65_000;
server.listen(port, '127.0.0.1', () => {
  const addr = server.address();
  console.log(`listening ${typeof addr === 'object' && addr ? addr.port : port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
