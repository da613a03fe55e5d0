// Adds annotations to a tag's manifest in an OCI layout made by scripts/gen-image.ts: the
// manifest is rewritten (new digest) and index.json points the tag at it. Tests use it to carry
// hostile text (HTML, <script>) through a real publish into the catalog page.
import fs from 'node:fs/promises';
import path from 'node:path';
import { sha256Digest, digestHex } from '../../shared/oci.js';
import { REF_NAME, readIndexJson, readJsonBlob } from './layout.js';

export async function annotateTag(layoutDir: string, tag: string, annotations: Record<string, string>): Promise<string> {
  const index = await readIndexJson(layoutDir);
  const d = index.manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!d) throw new Error(`${layoutDir}: no tag ${tag}`);
  const manifest = await readJsonBlob(layoutDir, d.digest);
  manifest.annotations = { ...(manifest.annotations ?? {}), ...annotations };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = sha256Digest(bytes);
  await fs.writeFile(path.join(layoutDir, 'blobs', 'sha256', digestHex(digest)), bytes);
  d.digest = digest;
  d.size = bytes.length;
  await fs.writeFile(path.join(layoutDir, 'index.json'), JSON.stringify(index));
  return digest;
}
