// skopeo wrappers: copy between OCI layouts and the test registry, inspect, seed a registry.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ACCEPT_ALL_MANIFESTS, MediaType, digestHex, isIndexType, type Descriptor } from '../../shared/oci.js';
import { run, type RunResult } from './proc.js';
import { tmpDir } from './tmp.js';

export const SKOPEO_BIN = 'skopeo';
const REF_NAME = 'org.opencontainers.image.ref.name';

export interface SkopeoCopyOptions {
  /** Copy every instance of an index / manifest list (`--all`). */
  all?: boolean;
}

function tlsArgs(src: string | undefined, dst: string | undefined): string[] {
  const args: string[] = [];
  if (src?.startsWith('docker://')) args.push('--src-tls-verify=false');
  if (dst?.startsWith('docker://')) args.push('--dest-tls-verify=false');
  return args;
}

async function skopeo(args: string[]): Promise<RunResult> {
  // --insecure-policy: don't depend on /etc/containers/policy.json of the machine running tests.
  const res = await run(SKOPEO_BIN, ['--insecure-policy', ...args], { timeoutMs: 300_000 });
  if (res.code !== 0) {
    throw new Error(`skopeo ${args.join(' ')} failed (exit ${res.code}):\n${res.stderr || res.stdout}`);
  }
  return res;
}

/**
 * `skopeo copy [--all] [--src-tls-verify=false] [--dest-tls-verify=false] <extraArgs> SRC DST`.
 * TLS verification is switched off only for docker:// sides. Rejects on failure with skopeo's stderr.
 */
export async function skopeoCopy(src: string, dst: string, extraArgs: string[] = [], opts: SkopeoCopyOptions = {}): Promise<RunResult> {
  return skopeo(['copy', ...(opts.all ? ['--all'] : []), ...tlsArgs(src, dst), ...extraArgs, src, dst]);
}

export interface SkopeoInspectOptions {
  /** `--raw`: the manifest bytes as stored (default true). */
  raw?: boolean;
  /** `--config`: the image config. */
  config?: boolean;
  extraArgs?: string[];
}

/** `skopeo inspect`; returns the parsed JSON output (by default the raw manifest). */
export async function skopeoInspect(ref: string, opts: SkopeoInspectOptions = {}): Promise<any> {
  const res = await skopeoInspectText(ref, opts);
  return JSON.parse(res);
}

/** `skopeo list-tags docker://…` (TLS not verified): the tags it printed. */
export async function skopeoListTags(ref: string): Promise<string[]> {
  const out = JSON.parse((await skopeo(['list-tags', '--tls-verify=false', ref])).stdout) as { Tags: string[] };
  return out.Tags;
}

/** `skopeo inspect`, returning stdout verbatim (with --raw: the exact manifest bytes). */
export async function skopeoInspectText(ref: string, opts: SkopeoInspectOptions = {}): Promise<string> {
  const args = ['inspect'];
  if (opts.raw ?? true) args.push('--raw');
  if (opts.config) args.push('--config');
  if (ref.startsWith('docker://')) args.push('--tls-verify=false');
  args.push(...(opts.extraArgs ?? []), ref);
  return (await skopeo(args)).stdout;
}

export interface SeedOptions {
  /** `--all`: copy every platform of an index (default true). */
  all?: boolean;
  /** Basic-auth credentials for a registry started with htpasswd auth. */
  creds?: { user: string; pass: string };
}

async function readLayoutDescriptor(layoutDir: string, tag: string): Promise<Descriptor> {
  const index = JSON.parse(await fs.readFile(path.join(layoutDir, 'index.json'), 'utf8')) as { manifests?: Descriptor[] };
  const d = (index.manifests ?? []).find((m) => m.annotations?.[REF_NAME] === tag);
  if (!d) throw new Error(`tag ${tag} not found in ${layoutDir}/index.json`);
  return d;
}

const DOCKER_TYPES: readonly string[] = [MediaType.dockerManifest, MediaType.dockerManifestList];

/**
 * skopeo 1.9 (containers/image 5.23) only looks at index.json descriptors whose mediaType is an
 * OCI manifest or OCI index ("no descriptor found for reference"), so a Docker-typed image in an
 * OCI layout cannot be read through `oci:`. Present it through skopeo's `dir:` transport instead
 * (symlinks into the layout), where the manifest type is read from the manifest itself.
 */
async function dirTransportView(layoutDir: string, top: Descriptor): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const tmp = await tmpDir('derrick-skopeo-dir');
  const blobs = path.resolve(layoutDir, 'blobs', 'sha256');
  const link = async (digest: string, name: string) => {
    await fs.symlink(path.join(blobs, digestHex(digest)), path.join(tmp.dir, name)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  };
  await fs.writeFile(path.join(tmp.dir, 'version'), 'Directory Transport Version: 1.1\n');
  await link(top.digest, 'manifest.json');
  const linkImage = async (manifestDigest: string) => {
    const doc = JSON.parse(await fs.readFile(path.join(blobs, digestHex(manifestDigest)), 'utf8')) as {
      config?: Descriptor;
      layers?: Descriptor[];
    };
    for (const b of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) await link(b.digest, digestHex(b.digest));
  };
  if (isIndexType(top.mediaType)) {
    const index = JSON.parse(await fs.readFile(path.join(blobs, digestHex(top.digest)), 'utf8')) as { manifests?: Descriptor[] };
    for (const child of index.manifests ?? []) {
      await link(child.digest, `${digestHex(child.digest)}.manifest.json`);
      await linkImage(child.digest);
    }
  } else {
    await linkImage(top.digest);
  }
  return tmp;
}

/**
 * Pushes `oci:<layoutDir>:<tag>` to `docker://<registryHost>/<repo>:<tag>` with skopeo
 * (`copy --all --dest-tls-verify=false`) and returns the digest the registry then serves for the
 * tag (Docker-Content-Digest of a GET with every manifest type in Accept).
 */
export async function seedRegistry(registryHost: string, repo: string, layoutDir: string, tag: string, opts: SeedOptions = {}): Promise<string> {
  const top = await readLayoutDescriptor(layoutDir, tag);
  const dst = `docker://${registryHost}/${repo}:${tag}`;
  const extra = opts.creds ? [`--dest-creds=${opts.creds.user}:${opts.creds.pass}`] : [];
  const copyOpts = { all: opts.all ?? true };
  if (DOCKER_TYPES.includes(top.mediaType)) {
    const view = await dirTransportView(layoutDir, top);
    try {
      await skopeoCopy(`dir:${view.dir}`, dst, extra, copyOpts);
    } finally {
      await view.cleanup();
    }
  } else {
    await skopeoCopy(`oci:${layoutDir}:${tag}`, dst, extra, copyOpts);
  }
  return (await fetchManifest(registryHost, repo, tag, opts.creds)).digest;
}

export interface FetchedManifest {
  status: number;
  digest: string;
  mediaType: string;
  body: Buffer;
}

/** GET /v2/<repo>/manifests/<ref> from a registry with every manifest type in Accept. */
export async function fetchManifest(registryHost: string, repo: string, ref: string, creds?: { user: string; pass: string }): Promise<FetchedManifest> {
  const headers: Record<string, string> = { Accept: ACCEPT_ALL_MANIFESTS };
  if (creds) headers.Authorization = 'Basic ' + Buffer.from(`${creds.user}:${creds.pass}`).toString('base64');
  const res = await fetch(`http://${registryHost}/v2/${repo}/manifests/${ref}`, { headers });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`GET manifest ${repo}:${ref} from ${registryHost}: HTTP ${res.status} ${body.toString('utf8')}`);
  const computed = 'sha256:' + createHash('sha256').update(body).digest('hex');
  const digest = res.headers.get('docker-content-digest') ?? computed;
  if (digest !== computed) throw new Error(`registry served ${repo}:${ref} with Docker-Content-Digest ${digest} but the body hashes to ${computed}`);
  return { status: res.status, digest, mediaType: res.headers.get('content-type') ?? '', body };
}
