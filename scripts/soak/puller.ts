// One pull the way a real client does it: resolve the tag (GET by tag with every manifest type
// in Accept), GET the manifest by that digest, then for every blob GET /v2/.../blobs/<digest>,
// expect a redirect and fetch its Location. Every manifest and blob is checked against its
// digest and size, so a pull that raced a tag move either gets one whole image or fails loudly.
import { createHash } from 'node:crypto';
import { ACCEPT_ALL_MANIFESTS, MediaType } from '../../shared/oci.js';

export interface PullTarget {
  repo: string;
  tag: string;
  /** The digests this tag may legitimately resolve to (any image the publisher moves it between). */
  allowed: ReadonlySet<string>;
}

export interface PullStats {
  pulls: number;
  failed: number;
  digestMismatches: number;
  /** Pulls answered with a stale Warning (pull-through with the upstream down). */
  stale: number;
  /** The first few failure messages. */
  errors: string[];
}

export class DigestMismatch extends Error {}

const sha256 = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const TIMEOUT_MS = 30_000;

interface Descriptor {
  digest: string;
  size: number;
  mediaType?: string;
}

async function get(url: string, headers: Record<string, string> = {}, redirect: 'follow' | 'manual' = 'follow') {
  const res = await fetch(url, { headers, redirect, signal: AbortSignal.timeout(TIMEOUT_MS) });
  const body = new Uint8Array(await res.arrayBuffer());
  return { res, body };
}

async function getManifest(base: string, repo: string, ref: string): Promise<{ digest: string; body: Uint8Array; stale: boolean }> {
  const { res, body } = await get(`${base}/v2/${repo}/manifests/${ref}`, { Accept: ACCEPT_ALL_MANIFESTS });
  if (res.status !== 200) throw new Error(`GET ${repo}/manifests/${ref}: HTTP ${res.status} ${new TextDecoder().decode(body).slice(0, 300)}`);
  const digest = res.headers.get('docker-content-digest') ?? '';
  const actual = sha256(body);
  if (digest !== actual) throw new DigestMismatch(`${repo}/manifests/${ref}: Docker-Content-Digest ${digest}, body hashes to ${actual}`);
  if (ref.startsWith('sha256:') && ref !== actual) throw new DigestMismatch(`${repo}/manifests/${ref}: body hashes to ${actual}`);
  return { digest, body, stale: (res.headers.get('warning') ?? '').includes('110') };
}

async function getBlob(base: string, repo: string, d: Descriptor): Promise<void> {
  const url = `${base}/v2/${repo}/blobs/${d.digest}`;
  const first = await get(url, {}, 'manual');
  let body = first.body;
  if (first.res.status === 307 || first.res.status === 302) {
    const location = first.res.headers.get('location');
    if (!location) throw new Error(`GET ${repo}/blobs/${d.digest}: ${first.res.status} without Location`);
    const target = new URL(location, base).toString();
    const second = await get(target);
    if (second.res.status !== 200) throw new Error(`GET ${target} (blob ${d.digest} of ${repo}): HTTP ${second.res.status}`);
    body = second.body;
  } else if (first.res.status !== 200) {
    throw new Error(`GET ${repo}/blobs/${d.digest}: HTTP ${first.res.status} ${new TextDecoder().decode(body).slice(0, 300)}`);
  }
  if (body.length !== d.size) throw new DigestMismatch(`${repo}/blobs/${d.digest}: ${body.length} bytes, the manifest says ${d.size}`);
  const actual = sha256(body);
  if (actual !== d.digest) throw new DigestMismatch(`${repo}/blobs/${d.digest}: body hashes to ${actual}`);
}

/** One whole pull; returns whether a manifest came back stale. Throws on any failure. */
export async function pullOnce(base: string, t: PullTarget): Promise<{ stale: boolean }> {
  const resolved = await getManifest(base, t.repo, t.tag);
  if (!t.allowed.has(resolved.digest)) throw new DigestMismatch(`${t.repo}:${t.tag} resolved to ${resolved.digest}, which no published image has`);
  const top = await getManifest(base, t.repo, resolved.digest);
  let stale = resolved.stale || top.stale;
  const parsed = JSON.parse(new TextDecoder().decode(top.body)) as { mediaType?: string; manifests?: Descriptor[] };
  const images: Uint8Array[] = [];
  if (parsed.mediaType === MediaType.ociIndex || parsed.mediaType === MediaType.dockerManifestList || parsed.manifests) {
    for (const child of parsed.manifests ?? []) {
      const m = await getManifest(base, t.repo, child.digest);
      if (m.body.length !== child.size) throw new DigestMismatch(`${t.repo}/manifests/${child.digest}: ${m.body.length} bytes, the index says ${child.size}`);
      stale ||= m.stale;
      images.push(m.body);
    }
  } else {
    images.push(top.body);
  }
  for (const body of images) {
    const m = JSON.parse(new TextDecoder().decode(body)) as { config: Descriptor; layers: Descriptor[] };
    for (const d of [m.config, ...m.layers]) await getBlob(base, t.repo, d);
  }
  return { stale };
}

/** Pulls random targets until `until()` says stop; counts into `stats`. */
export async function pullLoop(base: () => string, targets: () => PullTarget[], until: () => boolean, stats: PullStats): Promise<void> {
  while (!until()) {
    const all = targets();
    const t = all[Math.floor(Math.random() * all.length)]!;
    try {
      const r = await pullOnce(base(), t);
      if (r.stale) stats.stale++;
    } catch (err) {
      stats.failed++;
      if (err instanceof DigestMismatch) stats.digestMismatches++;
      const e = err as Error & { cause?: unknown };
      if (stats.errors.length < 10) stats.errors.push(`${t.repo}:${t.tag}: ${e.message}${e.cause ? ` (${String(e.cause)})` : ''}`);
    }
    stats.pulls++;
  }
}
