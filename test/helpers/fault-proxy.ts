// A fault-injecting HTTP proxy on 127.0.0.1:<free port> in front of a real registry. Rules match
// method + path and corrupt, truncate, delay or replace the answer, for the first `times` matching
// requests (then they pass); every request is recorded, so tests can count attempts and time retries.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type FaultAction =
  /** Forward, then flip some bytes of the body (same length, same headers). */
  | { kind: 'corrupt' }
  /** Forward, send the headers with the full Content-Length and half the body, then destroy the socket. */
  | { kind: 'truncate' }
  /** Answer with this status, headers and body without asking upstream. */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Wait, then forward. */
  | { kind: 'delay'; ms: number }
  /**
   * Forward the headers and half the body, then send the rest after `ms` or once `until` settles
   * (a download held in progress for as long as a test needs).
   */
  | { kind: 'stall'; ms?: number; until?: Promise<unknown> }
  /** Read the request, then close the connection without an answer (a connection error). */
  | { kind: 'reset' }
  /** 401 with a Basic challenge unless the request carries these credentials; then forward. */
  | { kind: 'basic-auth'; user: string; pass: string; realm?: string };

export interface FaultRule {
  /** Exact method (GET, HEAD) or any when absent. */
  method?: string;
  path: RegExp;
  action: FaultAction;
  /** Apply to the first `times` matching requests only (default: every one). */
  times?: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  /** Date.now() when the request arrived. */
  at: number;
  /** The fault applied, if any. */
  fault?: FaultAction['kind'];
  /** Status sent (for forwarded requests, upstream's). */
  status?: number;
}

export interface FaultProxy {
  port: number;
  /** 127.0.0.1:PORT, for docker:// references. */
  host: string;
  url: string;
  /** Adds a rule (first match wins, in the order added); returns a counter of its applications. */
  addRule(rule: FaultRule): { hits(): number };
  clearRules(): void;
  requests: RecordedRequest[];
  /** Requests with this method whose path matches. */
  count(method: string, path: RegExp): number;
  close(): Promise<void>;
}

const UNAUTHORIZED_BODY = JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required', detail: null }] });

/** Flips a byte every `stride` bytes (at least one, never the length). */
export function corruptBytes(body: Buffer): Buffer {
  const out = Buffer.from(body);
  if (out.length === 0) return out;
  const stride = Math.max(1, Math.floor(out.length / 16));
  for (let i = Math.floor(stride / 2); i < out.length; i += stride) out[i]! ^= 0xff;
  return out;
}

export async function startFaultProxy(upstream: { host: string; port: number }): Promise<FaultProxy> {
  const rules: Array<FaultRule & { used: number }> = [];
  const requests: RecordedRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const forward = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    rec: RecordedRequest,
    mutate?: (status: number, headers: http.IncomingHttpHeaders, body: Buffer) => void,
  ) => {
    const up = http.request(
      { host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        rec.status = ur.statusCode;
        if (!mutate) {
          res.writeHead(ur.statusCode ?? 502, ur.headers);
          ur.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        ur.on('data', (c: Buffer) => chunks.push(c));
        ur.on('end', () => mutate(ur.statusCode ?? 502, ur.headers, Buffer.concat(chunks)));
        ur.on('error', () => res.destroy());
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  };

  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    const rec: RecordedRequest = { method: req.method ?? 'GET', path, at: Date.now() };
    requests.push(rec);
    const rule = rules.find((r) => (!r.method || r.method === req.method) && r.path.test(path) && (r.times === undefined || r.used < r.times));
    if (!rule) return forward(req, res, rec);
    const a = rule.action;
    if (a.kind === 'basic-auth') {
      const want = 'Basic ' + Buffer.from(`${a.user}:${a.pass}`).toString('base64');
      if (req.headers.authorization === want) return forward(req, res, rec);
    }
    rule.used++;
    rec.fault = a.kind;
    switch (a.kind) {
      case 'reset':
        req.resume();
        req.socket.destroy();
        return;
      case 'status':
        rec.status = a.status;
        req.resume();
        res.writeHead(a.status, { 'Content-Type': 'application/json', ...a.headers });
        res.end(a.body ?? '');
        return;
      case 'basic-auth':
        rec.status = 401;
        req.resume();
        res.writeHead(401, {
          'Content-Type': 'application/json',
          'WWW-Authenticate': `Basic realm="${a.realm ?? 'fault-proxy'}"`,
          'Docker-Distribution-Api-Version': 'registry/2.0',
        });
        res.end(UNAUTHORIZED_BODY);
        return;
      case 'delay':
        setTimeout(() => forward(req, res, rec), a.ms);
        return;
      case 'corrupt':
        forward(req, res, rec, (status, headers, body) => {
          res.writeHead(status, headers);
          res.end(req.method === 'HEAD' ? undefined : corruptBytes(body));
        });
        return;
      case 'stall':
        forward(req, res, rec, (status, headers, body) => {
          res.writeHead(status, { ...headers, 'content-length': String(body.length) });
          res.flushHeaders();
          const half = Math.floor(body.length / 2);
          res.write(body.subarray(0, half));
          const rest = () => res.end(body.subarray(half));
          if (a.until) void a.until.finally(rest);
          else setTimeout(rest, a.ms ?? 1000);
        });
        return;
      case 'truncate':
        forward(req, res, rec, (status, headers, body) => {
          res.writeHead(status, { ...headers, 'content-length': String(body.length) });
          res.flushHeaders();
          res.write(body.subarray(0, Math.floor(body.length / 2)), () => {
            // Give the half a moment on the wire, then cut the connection.
            setTimeout(() => res.socket?.destroy(), 20);
          });
        });
        return;
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A TLS probe (tls-verify: false tries https first) is not HTTP: close it quietly.
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    addRule(rule) {
      const r = { ...rule, used: 0 };
      rules.push(r);
      return { hits: () => r.used };
    },
    clearRules() {
      rules.length = 0;
    },
    requests,
    count: (method, path) => requests.filter((r) => r.method === method && path.test(r.path)).length,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
