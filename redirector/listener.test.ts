// The listener alone, over real sockets with an openssl-made certificate: a client that never
// finishes its TLS handshake is cut off, and a reload keeps the old pair when the new one is bad.
import fs from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/log.js';
import { fingerprint256, makeCa, makeServerCert, type Pem } from '../test/helpers/certs.js';
import { requireTool } from '../test/helpers/proc.js';
import { tmpDir, type TmpDir } from '../test/helpers/tmp.js';
import { createListener, type Listener } from './listener.js';

const hasOpenssl = requireTool('openssl', 'the listener TLS tests are skipped');

describe.skipIf(!hasOpenssl)('createListener with TLS', () => {
  let tmp: TmpDir;
  let ca: Pem;
  let a: Pem;
  let b: Pem;
  let files: Pem;
  let listener: Listener;
  let port: number;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-listener');
    ca = await makeCa(tmp.dir, 'ca');
    [a, b] = await Promise.all([makeServerCert(tmp.dir, 'a', ca, ['IP:127.0.0.1']), makeServerCert(tmp.dir, 'b', ca, ['IP:127.0.0.1'])]);
    files = { cert: path.join(tmp.dir, 'live.crt'), key: path.join(tmp.dir, 'live.key') };
    await fs.copyFile(a.cert, files.cert);
    await fs.copyFile(a.key, files.key);
    // 300 ms instead of TLS_HANDSHAKE_TIMEOUT_MS, to keep the test short.
    listener = await createListener(files, createLogger({ level: 'silent' }), { handshakeTimeoutMs: 300 });
    listener.server.on('request', (_req, res) => res.end('ok'));
    await new Promise<void>((r) => listener.server.listen(0, '127.0.0.1', r));
    port = (listener.server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    listener?.server.closeAllConnections();
    await new Promise<void>((r) => (listener ? listener.server.close(() => r()) : r()));
    await tmp?.cleanup();
  });

  const peerFingerprint = async () => {
    const sock = tls.connect({ host: '127.0.0.1', port, ca: await fs.readFile(ca.cert) });
    await new Promise<void>((resolve, reject) => sock.once('secureConnect', resolve).once('error', reject));
    const fp = sock.getPeerCertificate().fingerprint256;
    sock.destroy();
    return fp;
  };

  it('closes a connection that never sends a ClientHello once the handshake timeout passes', async () => {
    const started = Date.now();
    const sock = net.connect(port, '127.0.0.1');
    sock.on('error', () => undefined);
    const closedAfter = await new Promise<number>((resolve) => {
      sock.once('close', () => resolve(Date.now() - started));
      setTimeout(() => resolve(-1), 5000);
    });
    sock.destroy();
    expect(closedAfter).toBeGreaterThanOrEqual(250);
    expect(closedAfter).toBeLessThan(3000);
  });

  it('reloadTls swaps to a good pair and refuses a mismatched one', async () => {
    expect(listener.scheme).toBe('https');
    expect(await peerFingerprint()).toBe(await fingerprint256(a.cert));
    await fs.copyFile(b.cert, files.cert);
    await fs.copyFile(b.key, files.key);
    expect(await listener.reloadTls()).toBe(true);
    expect(await peerFingerprint()).toBe(await fingerprint256(b.cert));
    await fs.copyFile(a.key, files.key);
    expect(await listener.reloadTls()).toBe(false);
    expect(await peerFingerprint()).toBe(await fingerprint256(b.cert));
  });
});
