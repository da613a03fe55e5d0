// A published repo's facts -> the rows of its page: kind, platforms and compressed size of each
// tag, read lazily from the manifests themselves (the redirect file keeps no layer sizes per image).
import { masterNameDate } from '../layout.js';
import { isIndexType, parseManifest, type Descriptor, type ParsedManifest, type Platform } from '../oci.js';
import type { ManifestKind, PlatformRow, RepoView, TagRow } from './model.js';
import { signedDigests } from './signed.js';

export interface ManifestFacts {
  mediaType: string;
  children?: Array<{ digest: string; platform?: Platform }>;
}

/** What both the live index and the published tree can say about one repo. */
export interface RepoFacts {
  name: string;
  /** Master directory name (its timestamp is the publish time). */
  master?: string;
  tags: ReadonlyMap<string, string>;
  manifests: ReadonlyMap<string, ManifestFacts>;
  referrers: Readonly<Record<string, readonly Descriptor[]>>;
  /** The manifest's bytes, verified by whoever reads them. */
  readManifest(digest: string): Promise<Buffer>;
  /** An image config's bytes, for a lone image's platform; absent where blobs can't be read. */
  readConfig?(digest: string): Promise<Buffer>;
}

const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);
/** Manifests read at once for one page. */
const READ_WIDTH = 8;
/** A config larger than this is not read for its platform. */
const MAX_CONFIG_READ = 256 * 1024;

export function platformName(p: Platform | undefined): string {
  if (!p) return 'unknown';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

function kindOf(m: ParsedManifest): ManifestKind {
  if (isIndexType(m.mediaType)) return 'index';
  return m.artifactType && !IMAGE_CONFIG_TYPES.has(m.artifactType) ? 'artifact' : 'image';
}

function sizeOf(m: ParsedManifest): number {
  return m.blobs.reduce((sum, b) => sum + b.size, 0);
}

function safeTime(master: string | undefined): string | undefined {
  if (!master) return undefined;
  try {
    return masterNameDate(master).toISOString();
  } catch {
    return undefined;
  }
}

/** Runs `fn` over `items`, `width` at a time, keeping order. */
async function mapLimited<T, R>(items: readonly T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return out;
}

export async function describeRepo(f: RepoFacts): Promise<RepoView> {
  const parsed = new Map<string, Promise<ParsedManifest | undefined>>();
  const read = (digest: string) => {
    let p = parsed.get(digest);
    if (!p) {
      const facts = f.manifests.get(digest);
      // A child an index names but that isn't published (a pull-through cache fills it on demand)
      // has no size yet. A published manifest that can't be read is an error (a damaged master),
      // not a page that quietly says "not published".
      p = facts ? f.readManifest(digest).then((b) => parseManifest(b, facts.mediaType)) : Promise.resolve(undefined);
      parsed.set(digest, p);
    }
    return p;
  };
  const signed = signedDigests(f.tags.keys(), f.referrers);
  const tags = [...f.tags.keys()].sort();
  const rows = await mapLimited(tags, READ_WIDTH, async (tag): Promise<TagRow> => {
    const digest = f.tags.get(tag)!;
    const facts = f.manifests.get(digest)!;
    const m = await read(digest);
    const row: TagRow = {
      tag,
      digest,
      mediaType: facts.mediaType,
      kind: m ? kindOf(m) : isIndexType(facts.mediaType) ? 'index' : 'image',
      platforms: [],
      signed: signed.has(digest),
      annotations: { ...(m?.annotations ?? {}) },
    };
    if (row.kind === 'index') {
      const children = facts.children ?? m?.manifests.map((d) => ({ digest: d.digest, platform: d.platform })) ?? [];
      row.platforms = await Promise.all(
        children.map(async (c): Promise<PlatformRow> => {
          const cm = await read(c.digest);
          return { platform: platformName(c.platform), digest: c.digest, size: cm ? sizeOf(cm) : undefined };
        }),
      );
      const sizes = row.platforms.map((p) => p.size);
      row.size = sizes.length && sizes.every((s) => s !== undefined) ? sizes.reduce((a, b) => a! + b!, 0) : undefined;
    } else if (m) {
      row.size = sizeOf(m);
      if (row.kind === 'image') row.platforms = [{ platform: await imagePlatform(f, m), digest, size: row.size }];
    }
    return row;
  });
  return { name: f.name, published: safeTime(f.master), tags: rows };
}

/** An image's platform is in its config blob (small; read only when the facts can read blobs). */
async function imagePlatform(f: RepoFacts, m: ParsedManifest): Promise<string> {
  const config = m.blobs[0];
  if (!f.readConfig || !config || config.size > MAX_CONFIG_READ) return 'unknown';
  try {
    const c = JSON.parse((await f.readConfig(config.digest)).toString('utf8')) as Partial<Platform> | null;
    return typeof c?.os === 'string' && typeof c.architecture === 'string'
      ? platformName({ os: c.os, architecture: c.architecture, variant: typeof c.variant === 'string' ? c.variant : undefined })
      : 'unknown';
  } catch {
    return 'unknown';
  }
}
