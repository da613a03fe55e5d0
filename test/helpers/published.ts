// Builds a real published tree (generated images -> derrick publish) for redirector tests.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseConfig, type Config } from '../../shared/config.js';
import { createLogger } from '../../shared/log.js';
import { runPublish } from '../../publisher/run-publish.js';
import { generateImage, type GenerateImageOptions, type GeneratedImage } from '../../scripts/gen-image.js';

export interface TreeRepo {
  name: string;
  protected?: boolean;
  images: Array<Omit<GenerateImageOptions, 'layoutDir'>>;
}

export interface PublishedTree {
  config: Config;
  configFile: string;
  images: Map<string, GeneratedImage>;
  /** Re-publishes after changing a repo's images. */
  publish(): Promise<void>;
  addImage(repo: string, img: Omit<GenerateImageOptions, 'layoutDir'>): Promise<GeneratedImage>;
}

export async function makePublishedTree(dir: string, repos: TreeRepo[], extraYaml = ''): Promise<PublishedTree> {
  const images = new Map<string, GeneratedImage>();
  const layoutOf = (repo: string) => path.join(dir, 'images', repo.replaceAll('/', '_'));
  for (const r of repos) {
    for (const img of r.images) images.set(`${r.name}:${img.tag}`, await generateImage({ ...img, layoutDir: layoutOf(r.name) }));
  }
  const yaml = [
    'root: ./var',
    'keep: 2',
    'grace: 10m',
    'repos:',
    ...repos.flatMap((r) => [`  - name: ${r.name}`, `    from: oci:${layoutOf(r.name)}`, `    protected: ${!!r.protected}`]),
    extraYaml,
  ].join('\n');
  const configFile = path.join(dir, 'derrick.yaml');
  await fs.writeFile(configFile, yaml);
  const config = parseConfig(yaml, configFile);
  const publish = async () => {
    const out = await runPublish({ config, policy: 'default', log: createLogger({ level: 'silent' }) });
    const bad = out.filter((o) => o.outcome === 'failed');
    if (bad.length) throw new Error(bad.map((o) => o.error).join('\n'));
  };
  await publish();
  return {
    config,
    configFile,
    images,
    publish,
    addImage: async (repo, img) => {
      const g = await generateImage({ ...img, layoutDir: layoutOf(repo) });
      images.set(`${repo}:${img.tag}`, g);
      return g;
    },
  };
}
