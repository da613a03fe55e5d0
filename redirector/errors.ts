// Turns a RegistryError into the spec's JSON body; the one place error responses are made.
import { RegistryError } from '../shared/errors.js';
import { reply, type Reply } from './reply.js';

export function errorReply(method: string, err: RegistryError): Reply {
  const body = JSON.stringify(err.toJSON());
  const headers: Record<string, string> = {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
    ...err.headers,
  };
  return reply(method, err.status, headers, body);
}

