// The crane name cache (crane-cache.ts): what a restart may take from it and what it must read
// again, on real files. Files must be SETTLE_MS old to be recorded, so each suite writes its
// files first and waits once.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType } from '../../shared/oci.js';
import { startServer } from '../serve.js';
import { rawRequest } from '../../test/helpers/http.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { SETTLE_MS, craneCacheFile, readCraneCache, writeCraneCache, type CraneCache } from './crane-cache.js';
import { scanCraneDir } from './listing.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function memoryLogger() {
  const lines: string[] = [];
  return { log: createLogger({ level: 'warn', stream: { write: (s: string) => void lines.push(s) } }), lines };
}

/** A crane v4 file; `pad` makes two names produce files of the same size. */
const craneFile = (name: string, o: { protected?: boolean; pad?: string } = {}) =>
  JSON.stringify({
    type: 'pulp-docker-redirect', version: 4, repository: name.replaceAll('/', '-'), 'repo-registry-id': name,
    url: `http://cdn.example.test/${name}/`, protected: !!o.protected, pad: o.pad ?? '',
    schema2_data: [`sha256:${'1'.repeat(64)}`, 'v1'], manifest_list_data: [], manifest_list_amd64_tags: {},
  });

/**
 * One scan as a start does it: names (repo -> file base name), heads read, and the cache written.
 * A request waiting for a name is woken by onFound: it must hear each name once, with its final file.
 */
async function scan(dir: string, cacheDir: string) {
  const mem = memoryLogger();
  let reads = 0;
  const heard: Array<[string, string]> = [];
  const s = await scanCraneDir(dir, 1 << 20, mem.log, () => reads++, (n, e) => heard.push([n, path.basename(e.file)]), cacheDir);
  await s.save?.();
  const names = Object.fromEntries([...s.names].map(([n, e]) => [n, path.basename(e.file)]));
  expect(Object.fromEntries(heard)).toEqual(names);
  expect(heard).toHaveLength(s.names.size);
  return { names, reads, saved: !!s.save, lines: mem.lines };
}

/** A cache of [path, name] pairs, in the given order; entry i has inode i + 1. */
const cacheOf = (...entries: Array<[string, string]>): CraneCache => ({
  rels: entries.map((e) => e[0]),
  names: entries.map((e) => e[1]),
  protected: entries.map((_, i) => i % 2 === 1),
  stats: entries.flatMap((_, i) => [1, i + 1, 100, 1000.5, 2000.25]),
});
const FORMAT = 'derrick crane-names 2';
const doc = (c: Record<string, unknown>) => JSON.stringify({ format: FORMAT, dir: '/data', ...cacheOf(['a.json', 'x/a'], ['b.json', 'x/b']), ...c });

describe('crane name cache file', () => {
  let tmp: TmpDir;
  beforeAll(async () => void (tmp = await tmpDir('derrick-crane-cache')));
  afterAll(async () => tmp?.cleanup());

  it('reads back what was written, for the same dir only', async () => {
    const file = path.join(tmp.dir, 'rt', 'c.json');
    await writeCraneCache(file, '/data', cacheOf(['b.json', 'x/b'], ['a.json', 'x/a']));
    // Written sorted by path, each entry with its own stat and flag.
    expect(await readCraneCache(file, '/data')).toEqual({
      rels: ['a.json', 'b.json'], names: ['x/a', 'x/b'], protected: [true, false], stats: [1, 2, 100, 1000.5, 2000.25, 1, 1, 100, 1000.5, 2000.25],
    });
    const why: string[] = [];
    expect((await readCraneCache(file, '/other', (w) => why.push(w))).rels).toEqual([]);
    expect(why[0]).toContain('made for "/data"');
    // A missing file is no news: nothing to say about it.
    expect((await readCraneCache(path.join(tmp.dir, 'none.json'), '/data', (w) => why.push(w))).rels).toEqual([]);
    expect(why).toHaveLength(1);
    expect(craneCacheFile('/c', '/data')).not.toBe(craneCacheFile('/c', '/data2'));
  });

  it.each([
    ['garbage', 'not json at all'],
    ['a torn write', doc({}).slice(0, -20)],
    ['another format', doc({ format: 'derrick crane-names 1' })],
    ['a bad name in one entry', doc({ names: ['x/a', 'Bad Name'] })],
    ['a string where a number goes', doc({ stats: [1, '2', 100, 1000.5, 2000.25, 1, 1, 100, 1000.5, 2000.25] })],
    ['a stat missing', doc({ stats: [1, 2, 100, 1000.5, 2000.25, 1, 1, 100, 1000.5] })],
    ['a flag missing', doc({ protected: [true] })],
    ['paths out of order', doc({ rels: ['b.json', 'a.json'] })],
  ])('ignores a whole file with %s', async (_what, text) => {
    const file = path.join(tmp.dir, 'bad.json');
    await fs.writeFile(file, text);
    const why: string[] = [];
    expect((await readCraneCache(file, '/data', (w) => why.push(w))).rels).toEqual([]);
    expect(why).toHaveLength(1);
  });

  it('takes a well-formed file as it is', async () => {
    const file = path.join(tmp.dir, 'good.json');
    await fs.writeFile(file, doc({}));
    expect((await readCraneCache(file, '/data')).names).toEqual(['x/a', 'x/b']);
  });

  it('concurrent writers: every read sees one whole version, and no temp file is left', async () => {
    const dir = path.join(tmp.dir, 'race');
    const file = path.join(dir, 'c.json');
    // A temp of a writer that died (pid 2^22 + 1 is above Linux's pid_max) is swept by the next write.
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, '.tmp-crane-names.4194305.abcdef000001'), 'half');
    const versions = Array.from({ length: 8 }, (_, v) => cacheOf(...Array.from({ length: 2000 }, (_, i): [string, string] => [`f${String(i).padStart(5, '0')}.json`, `v${v}/r${i}`])));
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const got = await readCraneCache(file, '/data', (why) => {
          throw new Error(`a reader saw a partial file: ${why}`);
        });
        if (got.rels.length) expect(got).toEqual(versions[Number(/^v(\d+)\//.exec(got.names[0]!)![1])]);
        reads++;
      }
    })();
    for (let round = 0; round < 3; round++) await Promise.all(versions.map((v) => writeCraneCache(file, '/data', v)));
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(0);
    expect(await fs.readdir(dir)).toEqual(['c.json']);
  });
});

describe('crane scan with the name cache', () => {
  let tmp: TmpDir;
  const dirs: Record<string, string> = {};
  const caches: Record<string, string> = {};
  /** Each test gets its own crane dir and cache dir, written here so that one wait settles all. */
  const fixture = async (id: string, files: Record<string, string>) => {
    dirs[id] = path.join(tmp.dir, id, 'data');
    caches[id] = path.join(tmp.dir, id, 'cache');
    await fs.mkdir(dirs[id]!, { recursive: true });
    for (const [f, text] of Object.entries(files)) await fs.writeFile(path.join(dirs[id]!, f), text);
  };

  beforeAll(async () => {
    tmp = await tmpDir('derrick-crane-scan');
    const three = { 'a.json': craneFile('x/a'), 'b.json': craneFile('x/b'), 'c.json': craneFile('x/c') };
    await fixture('restart', three);
    await fixture('stale', three);
    await fixture('corrupt', three);
    await fixture('renamed', { 'a.json': craneFile('dup/x', { pad: 'a' }), 'b.json': craneFile('dup/x', { pad: 'b' }), 'c.json': craneFile('x/c') });
    await fixture('same-size', { 'a.json': craneFile('x/aa'), 'b.json': craneFile('x/b') });
    await fixture('protected', { 'pub.json': craneFile('x/pub'), 'prot.json': craneFile('x/prot', { protected: true }) });
    await sleep(SETTLE_MS + 200);
  });
  afterAll(async () => tmp?.cleanup());

  it('a restart reads no unchanged file, finds the same names, and writes nothing', async () => {
    const first = await scan(dirs.restart!, caches.restart!);
    expect(first).toMatchObject({ reads: 3, saved: true, names: { 'x/a': 'a.json', 'x/b': 'b.json', 'x/c': 'c.json' } });
    const file = (await fs.readdir(caches.restart!))[0]!;
    const before = await fs.stat(path.join(caches.restart!, file));
    const second = await scan(dirs.restart!, caches.restart!);
    expect(second).toMatchObject({ reads: 0, saved: false, names: first.names });
    expect((await fs.stat(path.join(caches.restart!, file))).mtimeMs).toBe(before.mtimeMs);
    // A file added and one removed: only the new one is read.
    await fs.rm(path.join(dirs.restart!, 'b.json'));
    await fs.writeFile(path.join(dirs.restart!, 'd.json'), craneFile('x/d'));
    const third = await scan(dirs.restart!, caches.restart!);
    expect(third).toMatchObject({ reads: 1, saved: true, names: { 'x/a': 'a.json', 'x/c': 'c.json', 'x/d': 'd.json' } });
    // d.json was written just now: not recorded (it could change within its timestamp's tick), so read again.
    expect(await scan(dirs.restart!, caches.restart!)).toMatchObject({ reads: 1, saved: false });
  });

  it('a stale key is not trusted: the file is read again and its own name wins', async () => {
    await scan(dirs.stale!, caches.stale!);
    const file = craneCacheFile(caches.stale!, await fs.realpath(dirs.stale!));
    const c = JSON.parse(await fs.readFile(file, 'utf8')) as CraneCache;
    // The cache claims b.json serves x/evil, under an mtime b.json doesn't have.
    c.names[1] = 'x/evil';
    c.stats[5 + 3]! -= 1000;
    await fs.writeFile(file, JSON.stringify(c));
    const s = await scan(dirs.stale!, caches.stale!);
    expect(s).toMatchObject({ reads: 1, saved: true, names: { 'x/a': 'a.json', 'x/b': 'b.json', 'x/c': 'c.json' } });
    expect((await readCraneCache(file, await fs.realpath(dirs.stale!))).names).toEqual(['x/a', 'x/b', 'x/c']);
  });

  it('a corrupt cache is ignored with a warning and rewritten', async () => {
    await fs.mkdir(caches.corrupt!, { recursive: true });
    const file = craneCacheFile(caches.corrupt!, await fs.realpath(dirs.corrupt!));
    await fs.writeFile(file, '{"format":"derrick crane-names 1","dir":');
    const s = await scan(dirs.corrupt!, caches.corrupt!);
    expect(s).toMatchObject({ reads: 3, saved: true, names: { 'x/a': 'a.json', 'x/b': 'b.json', 'x/c': 'c.json' } });
    expect(s.lines.some((l) => l.includes('ignoring the name cache'))).toBe(true);
    expect(await scan(dirs.corrupt!, caches.corrupt!)).toMatchObject({ reads: 0, lines: [] });
  });

  it('a renamed file is read under its new name, and the last file naming a repo still wins', async () => {
    expect((await scan(dirs.renamed!, caches.renamed!)).names['dup/x']).toBe('b.json');
    await fs.rename(path.join(dirs.renamed!, 'a.json'), path.join(dirs.renamed!, 'z.json'));
    const s = await scan(dirs.renamed!, caches.renamed!);
    expect(s).toMatchObject({ reads: 1, names: { 'dup/x': 'z.json', 'x/c': 'c.json' } });
    // The same answer from a scan without any cache.
    expect((await scan(dirs.renamed!, path.join(tmp.dir, 'renamed', 'fresh-cache'))).names).toEqual(s.names);
  });

  it('a file rewritten in place with the same size and its old mtime is read again (ctime changed)', async () => {
    await scan(dirs['same-size']!, caches['same-size']!);
    const f = path.join(dirs['same-size']!, 'a.json');
    const old = await fs.stat(f, { bigint: true });
    const next = craneFile('x/zz');
    expect(BigInt(Buffer.byteLength(next))).toBe(old.size);
    const fh = await fs.open(f, 'r+');
    await fh.write(next, 0);
    await fh.close();
    // Back to the old mtime to the nanosecond, as cp -p or rsync -t would set it.
    const ns = old.mtimeNs % 1_000_000_000n;
    execFileSync('touch', ['-m', '-d', `@${old.mtimeNs / 1_000_000_000n}.${String(ns).padStart(9, '0')}`, f]);
    const now = await fs.stat(f, { bigint: true });
    expect([now.ino, now.size, now.mtimeNs]).toEqual([old.ino, old.size, old.mtimeNs]);
    expect(now.ctimeNs).not.toBe(old.ctimeNs);
    const s = await scan(dirs['same-size']!, caches['same-size']!);
    expect(s).toMatchObject({ reads: 1, names: { 'x/zz': 'a.json', 'x/b': 'b.json' } });
    expect(s.names['x/aa']).toBeUndefined();
  });

  it('through the server: a restart serves from the cache, reads only the files requested, and keeps protected names hidden', async () => {
    const yaml = `root: ./var\nserve:\n  crane-data: ./data\n  redirect-status: 302\n`;
    const cfgFile = path.join(tmp.dir, 'protected', 'derrick.yaml');
    await fs.writeFile(cfgFile, yaml);
    const cfg = parseConfig(yaml, cfgFile);
    const log = createLogger({ level: 'silent' });
    for (const start of ['first', 'restart']) {
      const server = await startServer(cfg, { listen: '127.0.0.1:0', log });
      try {
        const m = await rawRequest(server.url, '/v2/x/pub/manifests/v1', { headers: { Accept: MediaType.dockerManifest } });
        expect(m.status, start).toBe(302);
        expect(m.headers.location).toBe('http://cdn.example.test/x/pub/manifests/2/v1');
        const cat = await rawRequest(server.url, '/v2/_catalog');
        expect(cat.json()).toEqual({ repositories: ['x/pub'] });
        expect((await rawRequest(server.url, '/v2/x/prot/manifests/v1')).status).toBe(401);
        // The first start reads both heads, then the two files requested (a load decides the 401);
        // the restart reads only the two requested.
        expect(server.index.filesRead(), start).toBe(start === 'first' ? 4 : 2);
      } finally {
        await server.close();
      }
    }
    expect(await fs.readdir(layout(path.join(tmp.dir, 'protected', 'var')).craneNamesDir)).toHaveLength(1);
  });
});
