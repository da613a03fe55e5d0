// Turns a RegistryError into the spec's JSON body; the one place error responses are made.
import { RegistryError } from '../shared/errors.js';

export function errorResponse(method: string, err: RegistryError): Response {
  const body = JSON.stringify(err.toJSON());
  const headers: Record<string, string> = {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
    ...err.headers,
  };
  return new Response(method === 'HEAD' ? null : body, { status: err.status, headers });
}

export { RegistryError };
