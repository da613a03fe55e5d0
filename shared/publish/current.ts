// What a repo's symlinks point at now.
import fs from 'node:fs';
import path from 'node:path';
import type { Layout } from '../layout.js';
import { MASTER_NAME_RE, REDIRECT_FILE_NAME } from '../layout.js';
import { parseRedirectFile, type RedirectFile } from '../redirect-file.js';
import { readLinkSync } from './swap.js';

export interface CurrentPublish {
  /** Master served by web/<repo>. */
  web?: string;
  /** Master whose redirect file app/<file>.json names. */
  app?: string;
}

function masterOf(target: string | undefined, expectFile: boolean): string | undefined {
  if (!target) return undefined;
  const parts = target.split('/').filter(Boolean);
  const name = expectFile ? parts.at(-2) : parts.at(-1);
  return name && MASTER_NAME_RE.test(name) ? name : undefined;
}

// Both read with synchronous calls: small local files, read once per repo by runs over many repos,
// where a promise and threadpool round trip per call cost more than the call itself.
export async function currentPublish(l: Layout, name: string): Promise<CurrentPublish> {
  return {
    web: masterOf(readLinkSync(l.web(name)), false),
    app: masterOf(readLinkSync(l.app(name)), true),
  };
}

export async function readMasterRedirect(l: Layout, name: string, master: string): Promise<RedirectFile | undefined> {
  try {
    const file = parseRedirectFile(fs.readFileSync(path.join(l.master(name, master), REDIRECT_FILE_NAME), 'utf8'));
    return file.version === 4 ? (file as RedirectFile) : undefined;
  } catch {
    return undefined;
  }
}
