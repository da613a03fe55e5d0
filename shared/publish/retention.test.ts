import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layout, masterName } from '../layout.js';
import { findDebris, planRetention } from './retention.js';
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
