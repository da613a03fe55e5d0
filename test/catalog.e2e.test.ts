// The catalog page in a real browser (Debian's chromium driven by puppeteer-core; nothing is
// downloaded): search, open a repo, read a tag's platforms and size, copy a pull line; protected
// repos only after signing in; the same page at 1280 and 390 px (screenshots in test/artifacts/);
// and the static copy of `derrick publish --catalog`, served by a real nginx from the config of
// `derrick nginx-conf`, saying what the live page says about every public repo.
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../shared/log.js';
import { formatBytes } from '../shared/units.js';
import { nginxConf } from '../redirector/nginx-conf.js';
import { startServer, type RunningServer } from '../redirector/serve.js';
import { derrick } from './helpers/derrick.js';
import { blobPath } from './helpers/layout.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { freePort } from './helpers/ports.js';
import { requireTool } from './helpers/proc.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { makeHtpasswd } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const CHROMIUM = '/usr/bin/chromium';
const ready = requireTool('chromium', 'the catalog browser tests are skipped') && requireTool('nginx', 'the catalog browser tests are skipped');
const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');
const DOCS_SHOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/catalog.png');
const PUBLIC = ['demo/hello', 'team/api', 'team/web', 'tools/busybox'];

let tmp: TmpDir;
let tree: PublishedTree;
let server: RunningServer;
let nginx: Nginx;
let browser: Browser;

const main = (html: string) => /<main[^>]*>([\s\S]*)<\/main>/.exec(html)![1]!;
const text = async (url: string) => {
  const r = await fetch(url);
  expect(r.status, url).toBe(200);
  return r.text();
};

/** What a tag's image weighs compressed: its config and layers, summed over the platforms. */
async function compressedSize(layoutDir: string, key: string): Promise<number[]> {
  const img = tree.images.get(key)!;
  return Promise.all(
    img.manifests.map(async (m) => {
      let sum = 0;
      for (const d of [m.config, ...m.layers]) sum += (await fs.stat(blobPath(layoutDir, d))).size;
      return sum;
    }),
  );
}

async function shot(page: Page, name: string) {
  await fs.mkdir(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

describe.runIf(ready)('catalog page in chromium', () => {
  beforeAll(async () => {
    tmp = await tmpDir('derrick-catalog');
    await fs.writeFile(path.join(tmp.dir, 'htpasswd'), makeHtpasswd('alice', 's3cret') + '\n');
    const port = await freePort();
    tree = await makePublishedTree(
      tmp.dir,
      [
        { name: 'demo/hello', images: [{ tag: 'latest', platforms: ['linux/amd64', 'linux/arm64', 'linux/arm/v7'] }, { tag: '1.0', layers: [3000, 9000] }] },
        { name: 'tools/busybox', images: [{ tag: 'stable', layers: [20_000] }] },
        { name: 'team/api', images: [{ tag: 'v2', format: 'docker' }] },
        { name: 'team/web', images: [{ tag: 'main' }] },
        { name: 'secret/app', protected: true, images: [{ tag: 'v1' }] },
      ],
      [
        'serve:',
        `  listen: 127.0.0.1:${port}`,
        `  public-url: http://127.0.0.1:${port}`,
        '  htpasswd: ./htpasswd',
        'upstreams:',
        '  - prefix: hub',
        '    url: http://127.0.0.1:9',
      ].join('\n'),
    );
    // The real CLI flag: the repos are unchanged, the catalog is written.
    const out = await derrick(['publish', '--catalog', '-c', tree.configFile, 'tools/busybox']);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain(`catalog: ${PUBLIC.length} public repos written to`);
    server = await startServer(tree.config, { log: createLogger({ level: 'silent' }) });
    nginx = await startNginx(nginxConf(tree.config, { listen: '127.0.0.1:1' }).replace('listen 127.0.0.1:1;', 'listen 127.0.0.1:__PORT__;'));
    browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--headless=new'] });
  });

  afterAll(async () => {
    await browser?.close();
    await nginx?.stop();
    await server?.close();
    await tmp?.cleanup();
  });

  it('searches, opens a repo, reads platforms and size, copies a pull line (1280 and 390 px)', async () => {
    const context = await browser.createBrowserContext();
    await context.overridePermissions(server.url, ['clipboard-read', 'clipboard-write', 'clipboard-sanitized-write']);
    const page = await context.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    await page.goto(server.url + '/', { waitUntil: 'load' });
    expect(await page.$$eval('#repos a', (as) => as.map((a) => a.textContent))).toEqual(PUBLIC);
    await shot(page, 'catalog-list-1280');
    // Keyboard: the first Tab reaches the skip link, which moves focus to the main landmark.
    await page.keyboard.press('Tab');
    expect(await page.evaluate('document.activeElement.textContent')).toBe('Skip to content');
    await page.keyboard.press('Enter');
    expect(await page.evaluate('document.activeElement.id')).toBe('main');

    await page.type('#q', 'hell');
    await page.waitForFunction("document.querySelectorAll('#repos li').length === 1");
    expect(await page.$eval('#repos a', (a) => a.textContent)).toBe('demo/hello');
    expect(page.url()).toContain('?q=hell');
    await Promise.all([page.waitForNavigation(), page.click('#repos a')]);
    expect(new URL(page.url()).pathname).toBe('/ui/r/demo/hello/');

    const platforms = await page.$$eval('#tag-latest .platform', (els) => els.map((e) => e.textContent));
    expect(platforms).toEqual(['linux/amd64', 'linux/arm64', 'linux/arm/v7']);
    const sizes = await compressedSize(path.join(tmp.dir, 'images', 'demo_hello'), 'demo/hello:latest');
    expect(await page.$$eval('#tag-latest .platforms .size', (els) => els.map((e) => e.textContent))).toEqual(sizes.map(formatBytes));
    expect(await page.$eval('#tag-latest .total', (e) => e.textContent)).toBe(formatBytes(sizes.reduce((a, b) => a + b, 0)));
    const single = await compressedSize(path.join(tmp.dir, 'images', 'demo_hello'), 'demo/hello:1.0');
    expect(await page.$eval('[id="tag-1.0"] .total', (e) => e.textContent)).toBe(formatBytes(single[0]!));
    expect(await page.$eval('[id="tag-1.0"] .kind', (e) => e.textContent)).toBe('image');

    const line = `docker pull ${new URL(server.url).host}/demo/hello:latest`;
    const button = `button.copy[data-copy="${line}"]`;
    await page.waitForSelector(button, { visible: true });
    await page.click(button);
    await page.waitForFunction(`document.querySelector('${button}')?.textContent === 'Copied'`);
    expect(await page.evaluate('navigator.clipboard.readText()')).toBe(line);
    expect(await page.evaluate('getSelection().toString()')).toBe(line);
    const repoShot = await shot(page, 'catalog-repo-1280');
    if (process.env.DERRICK_UPDATE_SCREENSHOT) await fs.copyFile(repoShot, DOCS_SHOT);

    // The phone width: the same content, no sideways scrolling.
    await page.setViewport({ width: 390, height: 844, isMobile: true, hasTouch: true });
    await page.reload({ waitUntil: 'load' });
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    expect(await page.$$eval('#tag-latest .platform', (els) => els.length)).toBe(3);
    await shot(page, 'catalog-repo-390');
    await page.goto(server.url + '/ui/', { waitUntil: 'load' });
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(390);
    await shot(page, 'catalog-list-390');
    await context.close();
  });

  it('works with JavaScript off: the search is a GET form, the lines stay selectable', async () => {
    const page = await browser.newPage();
    await page.setJavaScriptEnabled(false);
    await page.goto(server.url + '/ui/', { waitUntil: 'load' });
    await page.type('#q', 'busy');
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    expect(await page.$$eval('#repos a', (as) => as.map((a) => a.textContent))).toEqual(['tools/busybox']);
    await Promise.all([page.waitForNavigation(), page.click('#repos a')]);
    expect(await page.$$eval('button.copy', (bs) => bs.every((b) => b.hidden))).toBe(true);
    expect(await page.$eval('#tag-stable code', (c) => c.textContent)).toMatch(/^sha256:[0-9a-f]{12}$/);
    await page.close();
  });

  it('shows protected repos only after signing in', async () => {
    const anon = await browser.newPage();
    await anon.goto(server.url + '/ui/', { waitUntil: 'load' });
    expect(await anon.$$eval('#repos a', (as) => as.map((a) => a.textContent))).not.toContain('secret/app');
    await anon.close();

    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.authenticate({ username: 'alice', password: 's3cret' });
    await page.goto(server.url + '/ui/', { waitUntil: 'load' });
    await Promise.all([page.waitForNavigation(), page.click('a[href="/ui/login"]')]);
    expect(new URL(page.url()).pathname).toBe('/ui/');
    expect(await page.$eval('.account', (e) => e.textContent)).toContain('alice');
    expect(await page.$$eval('#repos a', (as) => as.map((a) => a.textContent))).toContain('secret/app');
    await Promise.all([page.waitForNavigation(), page.click('a[href="/ui/r/secret/app/"]')]);
    expect(await page.$eval('#tag-v1 code', (c) => c.textContent)).toBe(tree.images.get('secret/app:v1')!.digest.slice(0, 19));
    await context.close();
  });

  it("the static copy, served by nginx, says what the live page says about every public repo", async () => {
    const staticList = await text(nginx.url + '/ui/');
    expect(main(staticList)).toBe(main(await text(server.url + '/ui/')));
    expect(staticList).not.toContain('secret/app');
    for (const name of PUBLIC) {
      expect(main(await text(`${nginx.url}/ui/r/${name}/`)), name).toBe(main(await text(`${server.url}/ui/r/${name}/`)));
    }
    expect((await fetch(nginx.url + '/ui/r/secret/app/')).status).toBe(404);
    expect(JSON.parse(await text(nginx.url + '/ui/names.json')).repositories).toEqual(PUBLIC);
    // A pull-through route: how to pull any upstream tag, on the list and on a (not yet cached) repo's page.
    const host = new URL(server.url).host;
    expect(staticList).toContain(`docker pull ${host}/hub/&lt;repository&gt;:&lt;tag&gt;`);
    const route = await text(server.url + '/ui/r/hub/library/alpine/');
    expect(route).toContain(`docker pull ${host}/hub/library/alpine:&lt;tag&gt;`);
    expect(route).toContain('No tags cached yet.');
    const root = await fetch(nginx.url + '/', { redirect: 'manual' });
    expect(root.status).toBe(302);

    // Search as you type on the static copy, from its names.json.
    const page = await browser.newPage();
    await page.goto(nginx.url + '/ui/', { waitUntil: 'load' });
    await page.type('#q', 'team');
    await page.waitForFunction("document.querySelectorAll('#repos li').length === 2");
    expect(await page.$$eval('#repos a', (as) => as.map((a) => a.textContent))).toEqual(['team/api', 'team/web']);
    await page.close();
  });
});
