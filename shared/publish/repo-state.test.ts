// The per-repo sync state: written whole (temp + rename, fsync), read back with its defaults,
// and a corrupt or unexpected state refused with an error naming its file.
import fs from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { layout, type Layout } from '../layout.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';
import { readRepoState, readRepoStateSync, writeRepoState, type RepoState } from './repo-state.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;

describe('repo state', () => {
  let tmp: TmpDir;
  let l: Layout;
  beforeEach(async () => {
    tmp = await tmpDir('derrick-repo-state');
    l = layout(tmp.dir);
  });
  afterEach(async () => {
    await tmp.cleanup();
  });

  const state: RepoState = {
    name: 'a/b', source: 'https://up.example/a/b', lastSync: '2026-01-01T00:00:00.000Z',
    etags: { v1: '"e1"' }, tags: { v1: DIGEST }, manifests: { [DIGEST]: { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 3 } },
    blobs: {}, referrers: {}, manifestBlobs: { [DIGEST]: [] },
  };

  it('writes one JSON line under store/repos/<key>.json (making the dir) and reads it back both ways', async () => {
    expect(await readRepoState(l, 'a/b')).toBeUndefined();
    expect(readRepoStateSync(l, 'a/b')).toBeUndefined();
    await writeRepoState(l, state);
    expect(await fs.readFile(l.repoState('a/b'), 'utf8')).toBe(JSON.stringify(state) + '\n');
    expect(await fs.readdir(l.repoStateDir)).toEqual(['a~b.json']);
    expect(await readRepoState(l, 'a/b')).toEqual(state);
    expect(readRepoStateSync(l, 'a/b')).toEqual(state);
  });

  it('an older state without etags or manifestBlobs reads with both empty', async () => {
    await fs.mkdir(l.repoStateDir, { recursive: true });
    const { etags: _e, manifestBlobs: _m, ...old } = state;
    await fs.writeFile(l.repoState('a/b'), JSON.stringify(old));
    const expected = { ...state, etags: {}, manifestBlobs: {} };
    expect(await readRepoState(l, 'a/b')).toEqual(expected);
    expect(readRepoStateSync(l, 'a/b')).toEqual(expected);
  });

  it('a state with an unknown key, a bad value or that cannot be read is an error naming the file', async () => {
    await fs.mkdir(l.repoStateDir, { recursive: true });
    const file = l.repoState('a/b');
    await fs.writeFile(file, JSON.stringify({ ...state, extra: 1 }));
    for (const read of [() => readRepoState(l, 'a/b'), async () => readRepoStateSync(l, 'a/b')]) {
      await expect(read()).rejects.toThrow(`${file}: corrupt repo state: Unrecognized key: "extra"`);
    }
    await fs.writeFile(file, JSON.stringify({ ...state, etags: { v1: 1 } }));
    await expect(readRepoState(l, 'a/b')).rejects.toThrow(`${file}: corrupt repo state: Invalid input: expected string, received number`);
    // A directory where the file should be: not "no state", an error.
    await fs.rm(file);
    await fs.mkdir(file);
    await expect(readRepoState(l, 'a/b')).rejects.toMatchObject({ code: 'EISDIR' });
    expect(() => readRepoStateSync(l, 'a/b')).toThrow(expect.objectContaining({ code: 'EISDIR' }));
  });
});
