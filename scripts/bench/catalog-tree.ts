// Writes synthetic repos in derrick's real published layout (master dir with manifests and a
// v4 redirect file, then web and app swapped the way the publisher swaps them), fast enough for
// a 10,000-repo catalog. Each tag is one distinct small OCI manifest; blob files are not
// written (the redirector only redirects to them).
import fs from 'node:fs/promises';
import path from 'node:path';
import { REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME, TAGS_LIST_REL_PATH, layout, manifestRelPath, masterName, repoKey } from '../../shared/layout.js';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { swapSymlink } from '../../shared/publish/swap.js';
import { serializeRedirectFile, type RedirectFile } from '../../shared/redirect-file.js';
import { encodeRedirectIndex } from '../../shared/redirect-index.js';

export interface SyntheticRepo {
  name: string;
  master: string;
  /** tag -> manifest digest */
  tags: Record<string, string>;
  /** config and layer digests */
  blobs: string[];
}

export interface SyntheticOptions {
  tags: number;
  /** Makes the content distinct: two calls with different seeds share no digest. */
  seed: string;
  protected?: boolean;
  /** Master name; default: now, with a per-process sequence so names never collide. */
  master?: string;
  /** Swap web and app to the new master (default true). */
  swap?: boolean;
}

let seq = 0;
const digestOf = (s: string) => sha256Digest(Buffer.from(s));

export function syntheticManifest(seed: string, i: number): { bytes: Buffer; config: string; layer: string } {
  const config = digestOf(`${seed}/${i}/config`);
  const layer = digestOf(`${seed}/${i}/layer`);
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 321 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer, size: 4321 }],
    }),
  );
  return { bytes, config, layer };
}

export async function writeSyntheticRepo(root: string, name: string, o: SyntheticOptions): Promise<SyntheticRepo> {
  const l = layout(root);
  const master = o.master ?? masterName(new Date(), seq++ % 1000);
  const dir = l.master(name, master);
  const manifestDir = path.dirname(path.join(dir, manifestRelPath(MediaType.ociManifest, 'x')));
  await fs.mkdir(manifestDir, { recursive: true });
  await fs.mkdir(path.join(dir, 'tags'), { recursive: true });
  const tags: Record<string, string> = {};
  const manifests: Record<string, { mediaType: string; size: number }> = {};
  const blobs: Record<string, number> = {};
  await Promise.all(
    Array.from({ length: o.tags }, async (_, i) => {
      const m = syntheticManifest(`${o.seed}/${name}`, i);
      const digest = sha256Digest(m.bytes);
      tags[`t${i}`] = digest;
      manifests[digest] = { mediaType: MediaType.ociManifest, size: m.bytes.length };
      blobs[m.config] = 321;
      blobs[m.layer] = 4321;
      await fs.writeFile(path.join(dir, manifestRelPath(MediaType.ociManifest, digest)), m.bytes);
    }),
  );
  const file: RedirectFile = {
    type: 'pulp-docker-redirect',
    version: 4,
    repository: repoKey(name),
    'repo-registry-id': name,
    url: l.masterUrlPath(name, master),
    protected: !!o.protected,
    schema2_data: [],
    manifest_list_data: [],
    manifest_list_amd64_tags: {},
    derrick: { version: 1, master, published: new Date().toISOString(), tags, manifests, blobs, referrers: {} },
  };
  await fs.writeFile(path.join(dir, TAGS_LIST_REL_PATH), JSON.stringify({ name, tags: Object.keys(tags).sort() }));
  const json = serializeRedirectFile(file);
  await fs.writeFile(path.join(dir, REDIRECT_FILE_NAME), json);
  await fs.writeFile(path.join(dir, REDIRECT_INDEX_NAME), encodeRedirectIndex(file, json)!);
  if (o.swap !== false) await swapRepo(root, name, master);
  return { name, master, tags, blobs: Object.keys(blobs) };
}

/** web first, then app: the publisher's order (invariant 2). */
export async function swapRepo(root: string, name: string, master: string): Promise<void> {
  const l = layout(root);
  await swapSymlink(l.web(name), `../master/${repoKey(name)}/${master}`);
  await swapSymlink(l.app(name), `../master/${repoKey(name)}/${master}/${REDIRECT_FILE_NAME}`);
}
