// The lazy, bounded index through the real server: a request racing its repo's first load,
// eviction and reload under the memory bound, a publish while a repo is evicted, and the grace
// of a replaced master for a repo that was evicted in between.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { startServer, type RunningServer } from '../serve.js';
import { syntheticManifest, writeSyntheticRepo } from '../../scripts/bench/catalog-tree.js';
import { rawRequest } from '../../test/helpers/http.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let tmp: TmpDir | undefined;
let server: RunningServer | undefined;

afterEach(async () => {
  await server?.close();
  await tmp?.cleanup();
  server = tmp = undefined;
});

async function start(extra: string, repos: string[], tags = 5) {
  tmp = await tmpDir('derrick-lazy');
  const root = path.join(tmp.dir, 'var');
  const written = new Map<string, Awaited<ReturnType<typeof writeSyntheticRepo>>>();
  for (const name of repos) written.set(name, await writeSyntheticRepo(root, name, { tags, seed: 'a' }));
  const yaml = `root: ./var\ngrace: 10m\nserve:\n${extra}`;
  const file = path.join(tmp.dir, 'derrick.yaml');
  await fs.writeFile(file, yaml);
  server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
  return { root, written };
}

const get = (p: string) => rawRequest(server!.url, p);

describe('lazy index', () => {
  it('starts without reading any redirect file, and a request racing the first load shares it', async () => {
    const { written } = await start('  manifest-cache: 1MiB\n', ['r/a', 'r/b', 'r/c']);
    expect(server!.index.size()).toBe(3);
    expect(server!.index.loadedCount()).toBe(0);
    expect(server!.index.filesRead()).toBe(0);
    const want = written.get('r/b')!.tags.t1!;
    const replies = await Promise.all(Array.from({ length: 20 }, () => get('/v2/r/b/manifests/t1')));
    for (const r of replies) {
      expect(r.status).toBe(200);
      expect(r.headers['docker-content-digest']).toBe(want);
    }
    expect(replies[0]!.body.equals(syntheticManifest('a/r/b', 1).bytes)).toBe(true);
    // One read of the redirect file and one of the manifest, for twenty racing requests.
    expect(server!.index.filesRead()).toBe(2);
    expect(server!.index.loadedCount()).toBe(1);
  });

  it('evicts under serve.index-memory and reloads an evicted repo on its next request', async () => {
    const names = Array.from({ length: 8 }, (_, i) => `many/r${i}`);
    const { root, written } = await start('  index-memory: 6KiB\n', names, 10);
    const fileSize = (await fs.stat(path.join(layout(root).appDir, 'many~r0.json'))).size;
    const bound = Math.max(1, Math.floor(6144 / fileSize));
    for (const n of names) expect((await get(`/v2/${n}/manifests/t3`)).status).toBe(200);
    expect(server!.index.loadedCount()).toBeLessThanOrEqual(bound);
    expect(server!.index.loadedCount()).toBeLessThan(names.length);
    expect(server!.index.peek('many/r0')).toBeUndefined();
    const before = server!.index.filesRead();
    const again = await get('/v2/many/r0/manifests/t4');
    expect(again.status).toBe(200);
    expect(again.headers['docker-content-digest']).toBe(written.get('many/r0')!.tags.t4);
    expect(server!.index.filesRead()).toBeGreaterThan(before);
    const blob = written.get('many/r1')!.blobs[0]!;
    expect((await get(`/v2/many/r1/blobs/${blob}`)).status).toBe(307);
  });

  it('serves a publish made while the repo was evicted, and keeps the replaced master in grace', async () => {
    const names = ['e/victim', 'e/x1', 'e/x2', 'e/x3'];
    const { root, written } = await start('  index-memory: 1B\n', names);
    const old = written.get('e/victim')!;
    const oldBlob = old.blobs[0]!;
    // Loaded (a redirect for the old master is handed out), then evicted by other traffic.
    expect((await get(`/v2/e/victim/blobs/${oldBlob}`)).status).toBe(307);
    for (const n of ['e/x1', 'e/x2']) expect((await get(`/v2/${n}/tags/list`)).status).toBe(200);
    expect(server!.index.peek('e/victim')).toBeUndefined();
    // A new publish with no blob in common, swapped while the repo is not in memory.
    await sleep(5);
    const next = await writeSyntheticRepo(root, 'e/victim', { tags: 3, seed: 'b' });
    await server!.index.reload(layout(root).app('e/victim'));
    expect(server!.index.peek('e/victim')).toBeUndefined();
    for (const n of ['e/x3']) expect((await get(`/v2/${n}/tags/list`)).status).toBe(200);
    const tags = await get('/v2/e/victim/tags/list');
    expect(tags.json().tags).toEqual(['t0', 't1', 't2']);
    const m = await get('/v2/e/victim/manifests/t2');
    expect(m.headers['docker-content-digest']).toBe(next.tags.t2);
    // Evicted again; the old master's blob still redirects: it was replaced less than grace ago.
    expect((await get('/v2/e/x1/tags/list')).status).toBe(200);
    expect(server!.index.peek('e/victim')).toBeUndefined();
    const inGrace = await get(`/v2/e/victim/blobs/${oldBlob}`);
    expect(inGrace.status).toBe(307);
    expect(inGrace.headers.location).toContain(`/master/e~victim/${old.master}/blobs/${oldBlob}`);
    expect((await get(`/v2/e/victim/manifests/${old.tags.t0}`)).status).toBe(200);
    expect((await get(`/v2/e/victim/blobs/${next.blobs[0]}`)).status).toBe(307);
  });

  it('ends the grace of a replaced master after `grace`, evicted or not', async () => {
    tmp = await tmpDir('derrick-lazy-grace');
    const root = path.join(tmp.dir, 'var');
    const old = await writeSyntheticRepo(root, 'g/app', { tags: 2, seed: 'a' });
    await writeSyntheticRepo(root, 'g/other', { tags: 2, seed: 'a' });
    const yaml = 'root: ./var\ngrace: 1s\nserve:\n  index-memory: 1B\n';
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
    expect((await get(`/v2/g/app/blobs/${old.blobs[1]}`)).status).toBe(307);
    expect((await get('/v2/g/other/tags/list')).status).toBe(200);
    await sleep(5);
    await writeSyntheticRepo(root, 'g/app', { tags: 2, seed: 'b' });
    await server.index.reload();
    expect((await get(`/v2/g/app/blobs/${old.blobs[1]}`)).status).toBe(307);
    await sleep(1200);
    expect((await get('/v2/g/other/tags/list')).status).toBe(200);
    const late = await get(`/v2/g/app/blobs/${old.blobs[1]}`);
    expect(late.status).toBe(404);
    expect(late.json().errors[0].code).toBe('BLOB_UNKNOWN');
  });

  it('hides a protected repo from an anonymous _catalog without loading every repo', async () => {
    tmp = await tmpDir('derrick-lazy-catalog');
    const root = path.join(tmp.dir, 'var');
    await writeSyntheticRepo(root, 'pub/a', { tags: 1, seed: 'a' });
    await writeSyntheticRepo(root, 'priv/b', { tags: 1, seed: 'a', protected: true });
    await writeSyntheticRepo(root, 'pub/c', { tags: 1, seed: 'a' });
    const yaml = 'root: ./var\nrepos: []\nserve: {}\n';
    const file = path.join(tmp.dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log: createLogger({ level: 'silent' }) });
    const anon = await get('/v2/_catalog');
    expect(anon.json().repositories).toEqual(['pub/a', 'pub/c']);
    expect(server.index.loadedCount()).toBe(0);
    const reads = server.index.filesRead();
    expect((await get('/v2/_catalog')).json().repositories).toEqual(['pub/a', 'pub/c']);
    expect(server.index.filesRead()).toBe(reads);
    expect((await get('/v2/priv/b/tags/list')).status).toBe(401);
  });
});
