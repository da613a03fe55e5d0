import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layout, masterName } from '../layout.js';
import { findDebris, planRetention, readSharedListings, removeAll, removeMasters } from './retention.js';
import { swapSymlink } from './swap.js';

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-retention-'));
afterAll(() => fs.rm(root, { recursive: true, force: true }));
const l = layout(root);

describe('findDebris', () => {
  it("finds a killed writer's temp repo state, temp master and temp symlink, and only this repo's", async () => {
    await fs.mkdir(l.repoStateDir, { recursive: true });
    await fs.writeFile(path.join(l.repoStateDir, 'a~b.json'), '{}');
    await fs.writeFile(path.join(l.repoStateDir, 'a~b.json.1391209843'), '{"trunc');
    await fs.writeFile(path.join(l.repoStateDir, 'a~bc.json.77'), '{}');
    await fs.mkdir(path.join(l.masterDir('a/b'), '.tmp-20260101T000000.000Z-000.999999.0123456789ab'), { recursive: true });
    await fs.mkdir(l.webDir, { recursive: true });
    await fs.symlink('nowhere', path.join(l.webDir, '.tmp-a~b.999999.0123456789ab'));
    const debris = (await findDebris(l, 'a/b')).map((p) => path.relative(root, p)).sort();
    expect(debris).toEqual([
      'published/master/a~b/.tmp-20260101T000000.000Z-000.999999.0123456789ab',
      'published/web/.tmp-a~b.999999.0123456789ab',
      'store/repos/a~b.json.1391209843',
    ]);
  });
});

describe('planRetention', () => {
  it('keeps the served master and `keep` earlier ones; older ones go only after grace', async () => {
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    const names = [0, 1, 2, 3].map((i) => masterName(new Date(t0 + i * 60_000)));
    for (const n of names) await fs.mkdir(l.master('x', n), { recursive: true });
    await swapSymlink(l.web('x'), `../master/x/${names[3]}`);
    await swapSymlink(l.app('x'), `../master/x/${names[3]}/redirect.json`);
    // names[0] went out of service at names[1]'s time (t0+1m); names[1] at t0+2m.
    const at = (ms: number) => new Date(t0 + ms);
    expect((await planRetention(l, 'x', 1, 10 * 60_000, at(5 * 60_000))).remove).toEqual([]);
    const later = await planRetention(l, 'x', 1, 10 * 60_000, at(11.5 * 60_000));
    expect(later.remove.map((r) => r.master)).toEqual([names[0]]);
    expect(later.keep.sort()).toEqual([names[1], names[2], names[3]].sort());
  });
});

describe('planRetention, case by case', () => {
  const t0 = Date.parse('2026-03-01T00:00:00Z');
  const min = 60_000;
  // names[i] was built at t0 + i minutes; names[i] went out of service when names[i + 1] was built.
  const names = [0, 1, 2, 3, 4, 5].map((i) => masterName(new Date(t0 + i * min))) as [string, string, string, string, string, string];
  const at = (ms: number) => new Date(t0 + ms);
  const repo = (n: string) => `case/${n}`;

  async function setUp(name: string, web?: number, app?: number) {
    for (const n of names) await fs.mkdir(l.master(name, n), { recursive: true });
    // A killed build's temp master is not a master: no plan mentions it.
    await fs.mkdir(path.join(l.masterDir(name), `.tmp-${names[5]}.999999999.0123456789ab`), { recursive: true });
    if (web !== undefined) await swapSymlink(l.web(name), `../master/${name.replace('/', '~')}/${names[web]}`);
    if (app !== undefined) await swapSymlink(l.app(name), `../master/${name.replace('/', '~')}/${names[app]}/redirect.json`);
  }

  it('with nothing ever swapped in, every master is an orphan of a killed first run', async () => {
    await setUp(repo('none'));
    const plan = await planRetention(l, repo('none'), 5, 60 * min, at(6 * min));
    expect(plan).toEqual({ keep: [], remove: names.map((master) => ({ master, why: 'never served' })) });
  });

  it('keeps web and app (app behind web), `keep` masters before the older of them, and drops what came after web', async () => {
    await setUp(repo('behind'), 3, 2);
    // names[0] has been out of service (since names[1], t0+1m) for exactly the grace: still kept.
    let plan = await planRetention(l, repo('behind'), 1, 9 * min, at(10 * min));
    expect(plan.keep).toEqual([names[0], names[1], names[2], names[3]]);
    expect(plan.remove).toEqual([
      { master: names[4], why: 'never served' },
      { master: names[5], why: 'never served' },
    ]);
    // One millisecond more and it goes, with how long it has been out of service.
    plan = await planRetention(l, repo('behind'), 1, 9 * min, at(10 * min + 1));
    expect(plan.keep).toEqual([names[1], names[2], names[3]]);
    expect(plan.remove[0]).toEqual({ master: names[0], why: 'out of service 540s' });
    // keep 0: names[1] (out since t0+2m) is judged by grace too; keep 9 keeps all earlier ones.
    plan = await planRetention(l, repo('behind'), 0, 9 * min, at(12 * min));
    expect(plan.keep).toEqual([names[2], names[3]]);
    expect(plan.remove.slice(0, 2)).toEqual([
      { master: names[0], why: 'out of service 660s' },
      { master: names[1], why: 'out of service 600s' },
    ]);
    plan = await planRetention(l, repo('behind'), 9, 0, at(60 * min));
    expect(plan.keep).toEqual([names[0], names[1], names[2], names[3]]);
    // keep 1, no grace: the one kept is the last before the older served master (app's), not web's.
    plan = await planRetention(l, repo('behind'), 1, 0, at(60 * min));
    expect(plan.keep).toEqual([names[1], names[2], names[3]]);
  });

  it('web alone (no app link) is the served master', async () => {
    await setUp(repo('webonly'), 2);
    const plan = await planRetention(l, repo('webonly'), 1, 0, at(60 * min));
    expect(plan.keep).toEqual([names[1], names[2]]);
    expect(plan.remove.map((r) => r.master)).toEqual([names[0], names[3], names[4], names[5]]);
  });

  it('uses the listing and links the caller read, in any order, instead of reading them again', async () => {
    const shuffled = [names[4], 'not-a-master', names[0], names[2], names[1], names[3]];
    const plan = await planRetention(l, repo('unread'), 1, 30_000, at(3 * min + 30_000), { names: shuffled, cur: { web: names[3], app: names[3] } });
    // names[1] went out at names[2]'s time (t0+2m): 90 s ago, past the 30 s grace.
    expect(plan.keep).toEqual([names[2], names[3]]);
    expect(plan.remove).toEqual([
      { master: names[0], why: 'out of service 150s' },
      { master: names[1], why: 'out of service 90s' },
      { master: names[4], why: 'never served' },
    ]);
  });
});

describe('readSharedListings and findDebris', () => {
  const dead = '999999999.0123456789ab';
  const live = `${process.pid}.0123456789ab`;

  it('keeps only temp names of web/ and app/ and non-JSON names of store/repos/', async () => {
    const r = path.join(root, 'listings');
    const lr = layout(r);
    expect(await readSharedListings(lr)).toEqual({ web: [], app: [], repoStates: [] });
    await fs.mkdir(lr.webDir, { recursive: true });
    await fs.mkdir(lr.appDir, { recursive: true });
    await fs.mkdir(lr.repoStateDir, { recursive: true });
    for (const n of ['x', `.tmp-x.${dead}`]) await fs.writeFile(path.join(lr.webDir, n), '');
    for (const n of ['x.json', `.tmp-x.json.${dead}`]) await fs.writeFile(path.join(lr.appDir, n), '');
    for (const n of ['x.json', 'x.json.123']) await fs.writeFile(path.join(lr.repoStateDir, n), '');
    expect(await readSharedListings(lr)).toEqual({ web: [`.tmp-x.${dead}`], app: [`.tmp-x.json.${dead}`], repoStates: ['x.json.123'] });
  });

  it("a live writer's temps are not debris; a dead or unknown writer's are, for this repo only", async () => {
    const shared = {
      web: [`.tmp-p~q.${dead}`, `.tmp-p~q.${live}`, '.tmp-p~q.no-pid', `.tmp-p~qr.${dead}`],
      app: [`.tmp-p~q.json.${dead}`, `.tmp-p~q.json.${live}`, `.tmp-p~q.${dead}`, `.tmp-p~qr.json.${dead}`],
      repoStates: ['p~q.json.12', 'p~q.json.1a', 'p~q.json.x5', 'p~q.json.', 'p~qr.json.5'],
    };
    const debris = await findDebris(l, 'p/q', shared, ['20260101T000000.000Z-000', `.tmp-20260101T000001.000Z-000.${dead}`]);
    expect(debris).toEqual([
      path.join(l.masterDir('p/q'), `.tmp-20260101T000001.000Z-000.${dead}`),
      path.join(l.webDir, `.tmp-p~q.${dead}`),
      path.join(l.webDir, '.tmp-p~q.no-pid'),
      path.join(l.appDir, `.tmp-p~q.json.${dead}`),
      path.join(l.repoStateDir, 'p~q.json.12'),
    ]);
  });
});

describe('removeMasters and removeAll', () => {
  it('removes each master whole, skips one already gone, and leaves no temp name behind', async () => {
    const dir = path.join(root, 'rm', 'master', 'r');
    const a = path.join(dir, '20260101T000000.000Z-000');
    const b = path.join(dir, '20260101T000001.000Z-000');
    for (const m of [a, b]) {
      await fs.mkdir(path.join(m, 'blobs'), { recursive: true });
      await fs.writeFile(path.join(m, 'blobs', 'x'), 'x');
    }
    await fs.mkdir(path.join(dir, 'keep'));
    await removeMasters([a, path.join(dir, 'gone'), b]);
    expect(await fs.readdir(dir)).toEqual(['keep']);
    // A failure other than "already gone" is an error.
    await fs.writeFile(path.join(dir, 'file'), '');
    await expect(removeMasters([path.join(dir, 'file', 'm')])).rejects.toMatchObject({ code: 'ENOTDIR' });
    await removeAll([path.join(dir, 'keep'), path.join(dir, 'file'), path.join(dir, 'never')]);
    expect(await fs.readdir(dir)).toEqual([]);
  });
});
