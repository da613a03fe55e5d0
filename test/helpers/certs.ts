// Throwaway certificate authorities and server certificates, made with the real openssl CLI.
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from './proc.js';

export interface Pem {
  /** Certificate file (PEM). */
  cert: string;
  /** Private key file (PEM). */
  key: string;
}

async function openssl(args: string[]): Promise<void> {
  const r = await run('openssl', args, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.code}):\n${r.stderr}`);
}

/** A self-signed CA named `name`, written as <dir>/<name>.crt and .key. */
export async function makeCa(dir: string, name: string): Promise<Pem> {
  await fs.mkdir(dir, { recursive: true });
  const pem = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', pem.key, '-out', pem.cert,
  ]);
  return pem;
}

/**
 * A random positive serial. Not -CAcreateserial: that shares one <ca>.srl file, and two certificates
 * signed at once by the same CA race on it ("Unable to load number from ca.srl").
 */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return `0x${b.toString('hex')}`;
}

/**
 * A server certificate signed by `ca` for the subjectAltNames `san` (e.g. ['IP:127.0.0.1',
 * 'DNS:registry.test']), written as <dir>/<name>.crt and .key.
 */
export async function makeServerCert(dir: string, name: string, ca: Pem, san: string[]): Promise<Pem> {
  await fs.mkdir(dir, { recursive: true });
  const pem = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', pem.key, '-out', csr]);
  await fs.writeFile(ext, `subjectAltName=${san.join(',')}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n`);
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', serialNumber(), '-days', '2', '-extfile', ext, '-out', pem.cert]);
  return pem;
}

/** SHA-256 fingerprint of a PEM certificate, as node's tls reports it (AA:BB:...). */
export async function fingerprint256(certFile: string): Promise<string> {
  const r = await run('openssl', ['x509', '-in', certFile, '-noout', '-fingerprint', '-sha256'], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`openssl x509 -fingerprint failed:\n${r.stderr}`);
  return r.stdout.trim().split('=')[1]!;
}
