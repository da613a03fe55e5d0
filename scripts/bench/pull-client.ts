// A registry client the way docker and ctr pull: the manifest by tag (an index is resolved to its
// linux/amd64 image), the config, then the layers in manifest order, `parallel` at a time, each
// followed through redirects, hashed and checked against its digest and size. The bytes are
// discarded: the row measures the transfer, not a disk.
import { createHash } from 'node:crypto';
import { ACCEPT_ALL_MANIFESTS } from '../../shared/oci.js';

interface Descriptor {
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string };
}

async function getJson(url: string): Promise<{ json: any; digest: string }> {
  const res = await fetch(url, { headers: { Accept: ACCEPT_ALL_MANIFESTS }, signal: AbortSignal.timeout(120_000) });
  if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status} ${await res.text()}`);
  const bytes = Buffer.from(await res.arrayBuffer());
  return { json: JSON.parse(bytes.toString()), digest: 'sha256:' + createHash('sha256').update(bytes).digest('hex') };
}

async function fetchBlob(base: string, repo: string, d: Descriptor): Promise<void> {
  const res = await fetch(`${base}/v2/${repo}/blobs/${d.digest}`, { signal: AbortSignal.timeout(300_000) });
  if (res.status !== 200 || !res.body) throw new Error(`GET blob ${d.digest}: HTTP ${res.status}`);
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of res.body) {
    hash.update(chunk);
    size += chunk.length;
  }
  const got = 'sha256:' + hash.digest('hex');
  if (got !== d.digest || size !== d.size) throw new Error(`blob ${d.digest}: got ${got}, ${size} bytes (want ${d.size})`);
}

/** Pulls `repo:tag` from `base` (http://host:port); resolves with the image manifest's digest. */
export async function pullImage(base: string, repo: string, tag: string, parallel = 3): Promise<string> {
  let { json, digest } = await getJson(`${base}/v2/${repo}/manifests/${tag}`);
  if (Array.isArray(json.manifests)) {
    const child = (json.manifests as Descriptor[]).find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64') ?? json.manifests[0];
    ({ json, digest } = await getJson(`${base}/v2/${repo}/manifests/${child.digest}`));
  }
  await fetchBlob(base, repo, json.config as Descriptor);
  const layers = [...(json.layers as Descriptor[])];
  const worker = async () => {
    for (let d = layers.shift(); d; d = layers.shift()) await fetchBlob(base, repo, d);
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return digest;
}
