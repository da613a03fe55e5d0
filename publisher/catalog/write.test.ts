// The static catalog's swap: a complete new copy behind published/ui each run, the two newest
// kept, no temp left, and only public repos in it (a repo the config protects stays out even
// while its published file still says public).
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { layout, TMP_PREFIX } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { makePublishedTree, type PublishedTree } from '../../test/helpers/published.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { catalogPaths, servedCatalog, writeStaticCatalog } from './write.js';

const log = createLogger({ level: 'silent' });
let tmp: TmpDir;
let tree: PublishedTree;

beforeAll(async () => {
  tmp = await tmpDir('derrick-static-catalog');
  tree = await makePublishedTree(tmp.dir, [
    { name: 'pub/one', images: [{ tag: 'v1' }] },
    { name: 'pub/two', images: [{ tag: 'v1' }] },
    { name: 'priv/app', protected: true, images: [{ tag: 'v1' }] },
  ]);
});

afterAll(async () => {
  await tmp?.cleanup();
});

describe('writeStaticCatalog', () => {
  it('swaps published/ui to a complete new copy each run and keeps the two newest', async () => {
    const p = catalogPaths(layout(tree.config.root));
    const dirs: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await writeStaticCatalog(tree.config, log);
      expect(r.repos).toBe(2);
      dirs.push(r.dir);
      expect(await servedCatalog(tree.config)).toBe(path.join('ui.d', path.basename(r.dir)));
      const names = JSON.parse(await fs.readFile(path.join(p.link, 'names.json'), 'utf8')).repositories;
      expect(names).toEqual(['pub/one', 'pub/two']);
      await fs.access(path.join(p.link, 'r', 'pub', 'one', 'index.html'));
      await expect(fs.access(path.join(p.link, 'r', 'priv'))).rejects.toThrow();
    }
    const left = await fs.readdir(p.versions);
    expect(left.sort()).toEqual(dirs.slice(1).map((d) => path.basename(d)).sort());
    expect(left.some((e) => e.startsWith(TMP_PREFIX))).toBe(false);
    await expect(fs.access(p.lock)).rejects.toThrow();
  });

  it("leaves out a repo the config protects, though its published file still says public", async () => {
    const yaml = (await fs.readFile(tree.configFile, 'utf8')).replace(/(name: pub\/two\n.*\n)    protected: false/, '$1    protected: true');
    const config = parseConfig(yaml, tree.configFile);
    expect(config.repos.find((r) => r.name === 'pub/two')!.protected).toBe(true);
    const r = await writeStaticCatalog(config, log);
    expect(r.repos).toBe(1);
    const list = await fs.readFile(path.join(r.dir, 'index.html'), 'utf8');
    expect(list).toContain('pub/one');
    expect(list).not.toContain('pub/two');
  });

  it('a damaged master fails the run naming the file, and the previous copy stays served', async () => {
    const l = layout(tree.config.root);
    const before = await servedCatalog(tree.config);
    const master = await fs.realpath(l.web('pub/one'));
    const manifest = path.join(master, 'manifests', 'oci', tree.images.get('pub/one:v1')!.digest);
    await fs.rm(manifest);
    await expect(writeStaticCatalog(tree.config, log)).rejects.toThrow(manifest);
    expect(await servedCatalog(tree.config)).toBe(before);
    expect((await fs.readdir(catalogPaths(l).versions)).some((e) => e.startsWith(TMP_PREFIX))).toBe(false);
  });
});
