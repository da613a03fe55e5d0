// A table runner for hostile-request corpora: each case is one raw request (sent from a source
// address of its own on 127.0.0.0/8, so per-address throttling of one case never slows another)
// with the exact status and error code it must get, and a list of secrets that must not appear
// anywhere in the response, headers included.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

export interface HostileResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

export interface HostileCase {
  name: string;
  method?: string;
  /** Raw request target, sent as written. */
  path: string;
  headers?: Record<string, string>;
  status: number;
  /** The registry error code of a 4xx/5xx answer. */
  code?: string;
  /** The request is entitled to the protected content (valid credentials or signature). */
  entitled?: boolean;
  check?: (r: HostileResponse) => void;
}

/** What must never reach a request that isn't entitled to it. */
export interface Secrets {
  strings: string[];
  chunks: Buffer[];
}

let nextAddress = 0;
/** A fresh loopback source address per call: 127.<1-250>.<0-255>.<1-254>. */
export function freshSourceAddress(): string {
  const n = nextAddress++;
  return `127.${1 + (Math.floor(n / 65024) % 250)}.${Math.floor(n / 254) % 256}.${1 + (n % 254)}`;
}

export function hostileRequest(base: string, c: Pick<HostileCase, 'method' | 'path' | 'headers'>, localAddress = freshSourceAddress(), timeoutMs = 30_000): Promise<HostileResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method: c.method ?? 'GET', path: c.path, headers: c.headers, agent: false, localAddress },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({ status: res.statusCode!, headers: res.headers, body, text: body.toString('latin1') });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout: ${c.method ?? 'GET'} ${c.path}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Every secret found in the response (body and header values). */
export function leakedSecrets(r: HostileResponse, s: Secrets): string[] {
  const headerText = Object.values(r.headers).flat().join('\n');
  const found = s.strings.filter((x) => r.text.includes(x) || headerText.includes(x));
  for (const chunk of s.chunks) if (r.body.includes(chunk)) found.push(`${chunk.length} content bytes`);
  return found;
}

export function errorCodeOf(r: HostileResponse): string | undefined {
  try {
    return (JSON.parse(r.body.toString('utf8')) as { errors?: { code: string }[] }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** Runs one case; returns what is wrong with the answer (empty: the case holds). */
export async function runHostileCase(base: string, c: HostileCase, secrets: Secrets): Promise<string[]> {
  const r = await hostileRequest(base, c);
  const wrong: string[] = [];
  if (r.status !== c.status) wrong.push(`status ${r.status}, want ${c.status}: ${r.text.slice(0, 200)}`);
  if (c.code !== undefined && c.method !== 'HEAD' && errorCodeOf(r) !== c.code) wrong.push(`code ${errorCodeOf(r)}, want ${c.code}`);
  if (!c.entitled) {
    const leaks = leakedSecrets(r, secrets);
    if (leaks.length) wrong.push(`leaked: ${leaks.join(', ')}`);
  }
  if (c.check && wrong.length === 0) {
    try {
      c.check(r);
    } catch (err) {
      wrong.push(String((err as Error).message));
    }
  }
  return wrong;
}

/** A hash of a tree: every path, symlink target, mode and file content, in order. */
export async function hashTree(dir: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (rel: string) => {
    const entries = (await fs.readdir(path.join(dir, rel), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      const r = path.join(rel, e.name);
      const full = path.join(dir, r);
      const st = await fs.lstat(full);
      h.update(`${r}\0${st.mode}\0`);
      if (e.isSymbolicLink()) h.update(`-> ${await fs.readlink(full)}\0`);
      else if (e.isDirectory()) await walk(r);
      else h.update(await fs.readFile(full));
    }
  };
  await walk('');
  return h.digest('hex');
}
