// The repos the static catalog may list: every app entry whose redirect file says it is public
// and that the config doesn't name as protected (either one protected is enough to hide it: fail
// closed), read straight from the published tree the way serve reads it.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { RepoFacts } from '../../shared/catalog-page/describe.js';
import type { Config } from '../../shared/config.js';
import { TMP_PREFIX, blobRelPath, manifestRelPath, repoNameFromKey, type Layout } from '../../shared/layout.js';
import { isDigestSyntax, isValidName, sha256Digest } from '../../shared/oci.js';
import { parseRedirectFile, type RedirectFile } from '../../shared/redirect-file.js';

/** Public repo names in the app dir, sorted; `facts` reads one of them when its page is written. */
export async function publicRepoNames(config: Config, l: Layout): Promise<string[]> {
  if (!config.serve.anonymous) return []; // every repo needs credentials: nothing is public
  const protectedNames = new Set(config.repos.filter((r) => r.protected).map((r) => r.name));
  const names: string[] = [];
  for (const base of await fs.readdir(l.appDir).catch(() => [] as string[])) {
    if (!base.endsWith('.json') || base.startsWith(TMP_PREFIX)) continue;
    const name = repoNameFromKey(base.slice(0, -5));
    if (isValidName(name) && !protectedNames.has(name)) names.push(name);
  }
  return names.sort();
}

/** The derrick redirect file behind app/<key>.json, or undefined when it is not a public one. */
async function readPublic(l: Layout, name: string): Promise<{ file: RedirectFile; dir: string } | undefined> {
  const entry = l.app(name);
  let real: string;
  let parsed;
  try {
    real = await fs.realpath(entry);
    parsed = parseRedirectFile(await fs.readFile(real, 'utf8'));
  } catch {
    return undefined; // replaced or damaged meanwhile: left out, as serve would hide it
  }
  if (parsed.version !== 4 || parsed.protected || parsed['repo-registry-id'] !== name) return undefined;
  const file = parsed as RedirectFile;
  return file.derrick ? { file, dir: path.dirname(real) } : undefined;
}

async function readVerified(file: string, digest: string): Promise<Buffer> {
  const bytes = await fs.readFile(file);
  if (sha256Digest(bytes) !== digest) throw new Error(`${file} does not hash to ${digest}`);
  return bytes;
}

export async function publicRepoFacts(l: Layout, name: string): Promise<RepoFacts | undefined> {
  const found = await readPublic(l, name);
  if (!found) return undefined;
  const d = found.file.derrick!;
  const manifests = new Map(Object.entries(d.manifests));
  return {
    name,
    master: d.master,
    tags: new Map(Object.entries(d.tags)),
    manifests,
    referrers: d.referrers,
    readManifest: (digest) => {
      const m = manifests.get(digest);
      return m ? readVerified(path.join(found.dir, manifestRelPath(m.mediaType, digest)), digest) : Promise.reject(new Error(`no manifest ${digest}`));
    },
    readConfig: (digest) => (isDigestSyntax(digest) ? fs.readFile(path.join(found.dir, blobRelPath(digest))) : Promise.reject(new Error('bad digest'))),
  };
}
