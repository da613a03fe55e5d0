// A real Distribution registry (Debian's docker-registry 2.8) on 127.0.0.1:<free port>.
import bcrypt from 'bcryptjs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort } from './ports.js';
import { startProcess, waitForHttp, type RunningProcess } from './proc.js';
import { tmpDir } from './tmp.js';

export const DOCKER_REGISTRY_BIN = '/usr/bin/docker-registry';

export interface RegistryOptions {
  /** htpasswd (bcrypt) basic auth; see makeHtpasswd / writeHtpasswd. */
  auth?: { htpasswdFile: string; realm: string };
  /** `auth: token`: Bearer tokens from this token server (see token-issuer.ts), signed by a key of rootCertBundle. */
  token?: { realm: string; service: string; issuer: string; rootCertBundle: string };
  /** Binary to run; default /usr/bin/docker-registry. */
  bin?: string;
  /** Accept pushed manifests whose layers carry http(s) `urls` (foreign layers); refused by default. */
  allowForeignLayers?: boolean;
}

export interface AccessLogEntry {
  method: string;
  /** Request path including any query string, e.g. /v2/repo/blobs/sha256:… */
  path: string;
  status: number;
  bytes: number;
  userAgent: string;
  line: string;
}

export interface Registry {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT, for docker:// references. */
  host: string;
  port: number;
  /** Temp dir holding config.yml and the storage root (data/). */
  dir: string;
  pid: number;
  proc: RunningProcess;
  /** Access log lines (combined log format; the registry writes them to stdout). */
  accessLog(): string[];
  /** The access log, parsed. */
  requests(): AccessLogEntry[];
  /** How many requests with this method had exactly this path (query string ignored). */
  countRequests(method: string, pathOrRe: string | RegExp): number;
  /** GETs of /v2/<repo>/blobs/<digest> (any repo unless given). */
  blobGets(digest: string, repo?: string): number;
  /** Polls until countRequests(method, path) >= n; access lines are written after the response. */
  waitForRequests(method: string, pathOrRe: string | RegExp, n: number, timeoutMs?: number): Promise<number>;
  /** The registry's own log (logrus text on stderr). */
  appLog(): string;
  stop(): Promise<void>;
}

/** One htpasswd line `user:<bcrypt>`. Cost 5 keeps per-request verification in the registry fast. */
export function makeHtpasswd(user: string, pass: string, cost = 5): string {
  if (user.includes(':')) throw new Error('htpasswd user names cannot contain ":"');
  return `${user}:${bcrypt.hashSync(pass, cost)}`;
}

/** Writes an htpasswd file for these users into `dir`; returns its path. */
export async function writeHtpasswd(dir: string, users: Record<string, string>): Promise<string> {
  const file = path.join(dir, 'htpasswd');
  const lines = Object.entries(users).map(([u, p]) => makeHtpasswd(u, p));
  await fs.writeFile(file, lines.join('\n') + '\n', { mode: 0o600 });
  return file;
}

function registryConfig(root: string, port: number, opts: RegistryOptions): string {
  const { auth, token, allowForeignLayers = false } = opts;
  const q = (s: string) => JSON.stringify(s); // JSON strings are valid YAML scalars
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: text',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(root)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    '  secret: derrick-test-secret',
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
  ];
  if (allowForeignLayers) lines.push('validation:', '  manifests:', '    urls:', '      allow:', '        - "^https?://"');
  if (auth) {
    lines.push('auth:', '  htpasswd:', `    realm: ${q(auth.realm)}`, `    path: ${q(auth.htpasswdFile)}`);
  }
  if (token) {
    lines.push('auth:', '  token:', `    realm: ${q(token.realm)}`, `    service: ${q(token.service)}`);
    lines.push(`    issuer: ${q(token.issuer)}`, `    rootcertbundle: ${q(token.rootCertBundle)}`);
  }
  return lines.join('\n') + '\n';
}

// 127.0.0.1 - - [24/Nov/2026:09:56:21 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
const ACCESS_RE = /^(\S+) \S+ (\S+) \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"/;

export function parseAccessLine(line: string): AccessLogEntry | undefined {
  const m = ACCESS_RE.exec(line);
  if (!m) return undefined;
  return { method: m[3]!, path: m[4]!, status: Number(m[5]), bytes: m[6] === '-' ? 0 : Number(m[6]), userAgent: m[7]!, line };
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const tmp = await tmpDir('derrick-registry');
  const root = path.join(tmp.dir, 'data');
  await fs.mkdir(root, { recursive: true });
  const configFile = path.join(tmp.dir, 'config.yml');
  const bin = opts.bin ?? DOCKER_REGISTRY_BIN;

  let proc: RunningProcess | undefined;
  let port = 0;
  let lastError: unknown;
  // freePort() can race with another process grabbing the port; retry a couple of times.
  for (let attempt = 0; attempt < 3 && !proc; attempt++) {
    port = await freePort();
    await fs.writeFile(configFile, registryConfig(root, port, opts));
    const p = startProcess(bin, ['serve', configFile], { cwd: tmp.dir, logFile: path.join(tmp.dir, 'registry.log') });
    try {
      await waitForHttp(`http://127.0.0.1:${port}/v2/`, 15_000, { proc: p });
      proc = p;
    } catch (err) {
      lastError = err;
      await p.stop();
    }
  }
  if (!proc) {
    await tmp.cleanup();
    throw new Error(`docker-registry did not start: ${String(lastError)}`);
  }
  const running = proc;
  const host = `127.0.0.1:${port}`;
  const accessLog = () =>
    running
      .stdout()
      .split('\n')
      .filter((l) => ACCESS_RE.test(l));
  const requests = () => accessLog().map((l) => parseAccessLine(l)!);
  const matches = (p: string, pathOrRe: string | RegExp) =>
    typeof pathOrRe === 'string' ? p.split('?')[0] === pathOrRe : pathOrRe.test(p);
  const countRequests = (method: string, pathOrRe: string | RegExp) =>
    requests().filter((r) => r.method === method.toUpperCase() && matches(r.path, pathOrRe)).length;

  return {
    url: `http://${host}`,
    host,
    port,
    dir: tmp.dir,
    pid: running.pid,
    proc: running,
    accessLog,
    requests,
    countRequests,
    blobGets(digest, repo) {
      if (repo) return countRequests('GET', `/v2/${repo}/blobs/${digest}`);
      return requests().filter((r) => r.method === 'GET' && /^\/v2\/.+\/blobs\/[^/?]+$/.test(r.path.split('?')[0]!) && r.path.split('?')[0]!.endsWith(`/blobs/${digest}`)).length;
    },
    async waitForRequests(method, pathOrRe, n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const c = countRequests(method, pathOrRe);
        if (c >= n || Date.now() > deadline) return c;
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    appLog: () => running.stderr(),
    async stop() {
      await running.stop();
      await tmp.cleanup();
    },
  };
}
