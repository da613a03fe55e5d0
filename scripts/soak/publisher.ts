// The publisher side of the soak: a few generated images in one OCI layout whose tags are moved
// between them before every real `derrick publish` run, and `derrick gc` now and then.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateImage, REF_NAME_ANNOTATION, type GeneratedImage } from '../gen-image.js';
import { runChild, sleep } from './children.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The built CLI: next to this file's dist copy, or under dist/ when run from source (vitest). */
export const CLI = HERE.split(path.sep).includes('dist') ? path.resolve(HERE, '../../cli.js') : path.resolve(HERE, '../../dist/cli.js');

export interface ImageSet {
  layoutDir: string;
  images: GeneratedImage[];
  tags: string[];
  /** Every digest a tag may point at. */
  digests: Set<string>;
}

/** `count` small images (a few KB to ~200 KB, one of them a two-platform index) in one layout. */
export async function makeImageSet(layoutDir: string, count: number, tags: string[]): Promise<ImageSet> {
  const images: GeneratedImage[] = [];
  for (let i = 0; i < count; i++) {
    images.push(
      await generateImage({
        layoutDir,
        tag: `img-${i}`,
        seed: `soak-${i}`,
        layers: [64 * 1024 * (i + 1), 4096 + i],
        ...(i === 1 ? { platforms: ['linux/amd64', 'linux/arm64'] } : {}),
        ...(i === 2 ? { format: 'docker' as const } : {}),
      }),
    );
  }
  const set = { layoutDir, images, tags, digests: new Set(images.map((i) => i.digest)) };
  await moveTags(set);
  return set;
}

/** Points every tag at a random image: index.json rewritten at a temp name and renamed. */
export async function moveTags(set: ImageSet): Promise<void> {
  const manifests = set.tags.map((tag) => {
    const img = set.images[Math.floor(Math.random() * set.images.length)]!;
    return { mediaType: img.mediaType, digest: img.digest, size: img.size, annotations: { [REF_NAME_ANNOTATION]: tag } };
  });
  const index = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests });
  const file = path.join(set.layoutDir, 'index.json');
  await fs.writeFile(file + '.soak-tmp', index);
  await fs.rename(file + '.soak-tmp', file);
}

export interface PublisherStats {
  publishes: number;
  gcRuns: number;
  failed: number;
  errors: string[];
}

function note(stats: PublisherStats, what: string, r: { code: number | null; output: string }) {
  stats.failed++;
  if (stats.errors.length < 10) stats.errors.push(`${what} exited ${r.code}: ${r.output.slice(-600)}`);
}

/** A copy of a set's layout at `layoutDir` (same images), with its own tags. */
export async function copyImageSet(set: ImageSet, layoutDir: string): Promise<ImageSet> {
  await fs.cp(set.layoutDir, layoutDir, { recursive: true });
  const copy = { ...set, layoutDir };
  await moveTags(copy);
  return copy;
}

/** Moves tags and runs `derrick publish <repo>` until `until()`; each run must exit 0. */
export async function publishLoop(configFile: string, repo: string, set: ImageSet, until: () => boolean, stats: PublisherStats): Promise<void> {
  while (!until()) {
    await moveTags(set);
    const r = await runChild(process.execPath, [CLI, 'publish', '-c', configFile, '--wait', '60s', repo], 120_000);
    if (r.code === 0) stats.publishes++;
    else note(stats, 'derrick publish', r);
  }
}

/** `derrick gc` every `everyMs` until `until()`; each run must exit 0. */
export async function gcLoop(configFile: string, everyMs: number, until: () => boolean, stats: PublisherStats): Promise<void> {
  for (;;) {
    const end = Date.now() + everyMs;
    while (Date.now() < end && !until()) await sleep(100);
    if (until()) return;
    const r = await runChild(process.execPath, [CLI, 'gc', '-c', configFile, '--wait', '60s'], 120_000);
    if (r.code === 0) stats.gcRuns++;
    else note(stats, 'derrick gc', r);
  }
}
