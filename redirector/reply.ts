// A response as plain data, so the same handler can be answered through Hono (a Response) or
// written straight to a node:http ServerResponse on the hot path.
import type { ServerResponse } from 'node:http';
import { Readable, pipeline } from 'node:stream';
import { FileRange } from './file-body.js';

export interface Reply {
  status: number;
  headers: Record<string, string>;
  /**
   * A stream for pull-through blobs, a file range from the embedded file server; an error
   * mid-way must cut the client's connection.
   */
  body: string | Uint8Array | Readable | FileRange | null;
}

export const API_VERSION_HEADER = 'Docker-Distribution-API-Version';

export function reply(method: string, status: number, headers: Record<string, string>, body: Reply['body'] = null): Reply {
  headers[API_VERSION_HEADER] = 'registry/2.0';
  // An explicit length keeps bodiless replies (redirects) off chunked encoding.
  if (body === null && status !== 304 && headers['Content-Length'] === undefined) headers['Content-Length'] = '0';
  if (method === 'HEAD' && body instanceof Readable) body.destroy();
  return { status, headers, body: method === 'HEAD' ? null : body };
}

export function jsonReply(method: string, value: unknown, link?: string): Reply {
  const body = JSON.stringify(value);
  const headers: Record<string, string> = { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) };
  if (link) headers.Link = link;
  return reply(method, 200, headers, body);
}

export function toResponse(r: Reply): Response {
  const stream = r.body instanceof FileRange ? r.body.toReadable() : r.body;
  const body = stream instanceof Readable ? (Readable.toWeb(stream) as ReadableStream) : stream;
  return new Response(body, { status: r.status, headers: r.headers });
}

export function writeReply(res: ServerResponse, r: Reply): void {
  res.writeHead(r.status, r.headers);
  if (r.body instanceof FileRange) {
    void r.body.pipeTo(res);
    return;
  }
  if (r.body instanceof Readable) {
    // On a failed fill the reader errors and pipeline destroys the socket: the client sees a
    // short body, never a complete wrong one.
    pipeline(r.body, res, () => {});
    return;
  }
  res.end(r.body ?? undefined);
}
