// A cosign-format key pair for skopeo's --sign-by-sigstore-private-key (skopeo 1.9 cannot make
// one): an ECDSA P-256 key, the private half as PKCS#8 sealed with nacl/secretbox under a key
// scrypt derives from the passphrase, in a PEM block; the public half as PKIX "PUBLIC KEY".
import { generateKeyPairSync, randomBytes, scryptSync, type KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import nacl from 'tweetnacl';

export interface SigstoreKeyFiles {
  privateKey: string;
  publicKey: string;
  passphraseFile: string;
  /** The same key, for a test that writes the signature itself (see cosign-sign.ts). */
  key: KeyObject;
  pub: KeyObject;
}

/** cosign's parameters (sigstore/cosign pkg/cosign/keys.go, via securesystemslib's encrypted package). */
const SCRYPT = { N: 32768, r: 8, p: 1 };

export async function writeSigstoreKeyPair(dir: string, passphrase = 'derrick-test'): Promise<SigstoreKeyFiles> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const salt = randomBytes(32);
  const nonce = randomBytes(nacl.secretbox.nonceLength);
  const key = scryptSync(passphrase, salt, nacl.secretbox.keyLength, { ...SCRYPT, maxmem: 64 * 1024 * 1024 });
  const sealed = nacl.secretbox(new Uint8Array(der), new Uint8Array(nonce), new Uint8Array(key));
  const body = JSON.stringify({
    kdf: { name: 'scrypt', params: SCRYPT, salt: salt.toString('base64') },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: Buffer.from(sealed).toString('base64'),
  });
  const b64 = Buffer.from(body).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  const files: SigstoreKeyFiles = {
    privateKey: path.join(dir, 'sigstore.key'),
    publicKey: path.join(dir, 'sigstore.pub'),
    passphraseFile: path.join(dir, 'sigstore.pass'),
    key: privateKey,
    pub: publicKey,
  };
  await fs.writeFile(files.privateKey, `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n${b64}\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n`, { mode: 0o600 });
  await fs.writeFile(files.publicKey, publicKey.export({ format: 'pem', type: 'spki' }) as string);
  await fs.writeFile(files.passphraseFile, passphrase + '\n', { mode: 0o600 });
  return files;
}
