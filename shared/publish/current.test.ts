// What a repo's symlinks point at: a master name only when the link has the shape a swap makes,
// and a master's redirect file only when it is derrick's own version 4.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REDIRECT_FILE_NAME, layout, type Layout } from '../layout.js';
import { serializeRedirectFile } from '../redirect-file.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { currentPublish, readMasterRedirect } from './current.js';
import { buildRedirectFile } from './publish.js';

const M1 = '20260101T000000.000Z-000';
const M2 = '20260101T000001.000Z-000';

describe('currentPublish and readMasterRedirect', () => {
  let tmp: TmpDir;
  let l: Layout;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-current');
    l = layout(tmp.dir);
    await fs.mkdir(l.webDir, { recursive: true });
    await fs.mkdir(l.appDir, { recursive: true });
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  it('reads the master names of web/<key> and app/<key>.json, and nothing from links of another shape', async () => {
    expect(await currentPublish(l, 'a/b')).toEqual({ web: undefined, app: undefined });
    await fs.symlink(`../master/a~b/${M2}/`, l.web('a/b')); // a trailing slash still names the master
    await fs.symlink(`../master/a~b/${M1}/${REDIRECT_FILE_NAME}`, l.app('a/b'));
    expect(await currentPublish(l, 'a/b')).toEqual({ web: M2, app: M1 });

    // web names the master as its last segment, app as the one before the file.
    await fs.symlink(`../master/c/${M1}/${REDIRECT_FILE_NAME}`, l.web('c'));
    await fs.symlink(`../master/c/${M1}`, l.app('c'));
    expect(await currentPublish(l, 'c')).toEqual({ web: undefined, app: undefined });
    await fs.symlink('../master/d/not-a-master', l.web('d'));
    await fs.symlink(`../master/d/x${M1}/${REDIRECT_FILE_NAME}`, l.app('d'));
    expect(await currentPublish(l, 'd')).toEqual({ web: undefined, app: undefined });
  });

  it('readMasterRedirect returns a v4 file, and undefined for a crane v3 file, bad JSON or no file', async () => {
    const state = { name: 'a/b', source: 's', lastSync: '', etags: {}, tags: {}, manifests: {}, blobs: {}, referrers: {}, manifestBlobs: {} };
    const file = buildRedirectFile(state, l, M1, true, undefined, new Date(0));
    await fs.mkdir(l.master('a/b', M1), { recursive: true });
    await fs.writeFile(path.join(l.master('a/b', M1), REDIRECT_FILE_NAME), serializeRedirectFile(file));
    const read = await readMasterRedirect(l, 'a/b', M1);
    expect(read).toMatchObject({ version: 4, protected: true, url: `master/a~b/${M1}/`, derrick: { master: M1 } });

    await fs.mkdir(l.master('a/b', M2), { recursive: true });
    const v3 = { version: 3, repository: 'a/b', 'repo-registry-id': 'a/b', url: 'u', schema2_data: [] };
    await fs.writeFile(path.join(l.master('a/b', M2), REDIRECT_FILE_NAME), JSON.stringify(v3));
    expect(await readMasterRedirect(l, 'a/b', M2)).toBeUndefined();
    await fs.writeFile(path.join(l.master('a/b', M2), REDIRECT_FILE_NAME), '{"version": 4,');
    expect(await readMasterRedirect(l, 'a/b', M2)).toBeUndefined();
    expect(await readMasterRedirect(l, 'a/b', '20260101T000002.000Z-000')).toBeUndefined();
  });
});
