// The catalog bench's trees, written once and cached under bench/.cache/ (gitignored):
// N repos x T tags in derrick's real layout, and the same catalog as N crane v4 files.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { mapLimit } from '../../shared/publish/fsutil.js';
import { syntheticManifest, writeSyntheticRepo } from './catalog-tree.js';

export const CACHE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bench/.cache');

export const repoName = (i: number) => `cat/r${String(i).padStart(5, '0')}`;

const done = (dir: string) => fs.access(path.join(dir, '.complete')).then(() => true, () => false);

async function cached(dir: string, what: string, write: (dir: string) => Promise<void>): Promise<string> {
  if (await done(dir)) return dir;
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  const t0 = Date.now();
  process.stderr.write(`catalog bench: writing ${what} into ${dir} (once; cached)\n`);
  await write(dir);
  await fs.writeFile(path.join(dir, '.complete'), '');
  process.stderr.write(`catalog bench: ${what} written in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  return dir;
}

/** `<dir>/var` is the root; `<dir>/derrick.yaml` serves it. */
export function derrickTree(repos: number, tags: number): Promise<string> {
  // "-idx": masters carry redirect.idx (trees written before it are rewritten once).
  return cached(path.join(CACHE_DIR, `tree-${repos}x${tags}-idx`), `${repos} repos x ${tags} tags`, async (dir) => {
    const root = path.join(dir, 'var');
    let n = 0;
    await mapLimit(Array.from({ length: repos }, (_, i) => i), 8, async (i) => {
      await writeSyntheticRepo(root, repoName(i), { tags, seed: 'bench', master: '20260101T000000.000Z-000' });
      if (++n % 1000 === 0) process.stderr.write(`  ${n} repos\n`);
    });
  });
}

/** crane v4 files (crane's own format, no derrick data) for the same names: `<dir>/data/*.json`. */
export function craneTree(repos: number, tags: number): Promise<string> {
  return cached(path.join(CACHE_DIR, `crane-${repos}x${tags}`), `${repos} crane v4 files x ${tags} tags`, async (dir) => {
    await fs.mkdir(path.join(dir, 'data'));
    await mapLimit(Array.from({ length: repos }, (_, i) => i), 16, async (i) => {
      const name = repoName(i);
      const schema2: string[] = [];
      for (let t = 0; t < tags; t++) schema2.push(sha256Digest(syntheticManifest(`bench/${name}`, t).bytes), `t${t}`);
      const file = {
        type: 'pulp-docker-redirect', version: 4, repository: `r${i}`, 'repo-registry-id': name,
        url: `http://cdn.example.test/pulp/docker/v2/r${i}/`, protected: false,
        schema2_data: schema2, manifest_list_data: [], manifest_list_amd64_tags: {},
      };
      await fs.writeFile(path.join(dir, 'data', `r${i}.json`), JSON.stringify(file));
    });
  });
}

export const MANIFEST_ACCEPT = MediaType.ociManifest;
