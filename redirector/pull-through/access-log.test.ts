import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../shared/log.js';
import { createAccessLog } from './access-log.js';
import { newCacheRepo, type CacheRepo } from './cache-repo.js';

const log = createLogger({ level: 'silent' });
let dir: string;
let file: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derrick-access-'));
  file = path.join(dir, 'cache-access.json');
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function repoWith(name: string, tags: string[]): CacheRepo {
  const r = newCacheRepo(name, name.split('/').slice(1).join('/'));
  for (const t of tags) r.tags.set(t, { digest: `sha256:${'0'.repeat(64)}`, checkedAt: 0 });
  return r;
}

describe('cache access log', () => {
  it('survives a restart: the times recorded come back for tags that still exist', async () => {
    const repos = new Map([['hub/a', repoWith('hub/a', ['v1', 'v2'])]]);
    const a = createAccessLog(file, repos, log, 60_000);
    a.touch(repos.get('hub/a')!, 'v1');
    const t1 = repos.get('hub/a')!.access.get('v1')!;
    expect(t1).toBeGreaterThan(0);
    await expect(fs.access(file)).rejects.toThrow(); // not written per pull
    await a.flush();

    // A new process: v2 was never pulled, v1 has its time, an unknown repo is ignored.
    const fresh = new Map([
      ['hub/a', repoWith('hub/a', ['v1', 'v2'])],
      ['hub/b', repoWith('hub/b', ['v1'])],
    ]);
    const b = createAccessLog(file, fresh, log);
    expect(await b.restore(fresh)).toBe(1);
    expect(fresh.get('hub/a')!.access.get('v1')).toBe(t1);
    expect(fresh.get('hub/a')!.access.has('v2')).toBe(false);
    expect(fresh.get('hub/b')!.access.size).toBe(0);
  });

  it('writes after the interval without a flush', async () => {
    const repos = new Map([['hub/a', repoWith('hub/a', ['v1'])]]);
    const a = createAccessLog(file, repos, log, 20);
    a.touch(repos.get('hub/a')!, 'v1');
    await expect.poll(async () => JSON.parse(await fs.readFile(file, 'utf8').catch(() => '{}')).repos?.['hub/a']?.v1).toBe(repos.get('hub/a')!.access.get('v1'));
  });

  it('an unreadable file is ignored, not fatal', async () => {
    await fs.writeFile(file, '{"version": 1, "repos": {"hub/a": {"v1": "yesterday"}}}');
    const repos = new Map([['hub/a', repoWith('hub/a', ['v1'])]]);
    expect(await createAccessLog(file, repos, log).restore(repos)).toBe(0);
    await fs.writeFile(file, 'not json');
    expect(await createAccessLog(file, repos, log).restore(repos)).toBe(0);
    expect(repos.get('hub/a')!.access.size).toBe(0);
  });

  it('writes only when something was pulled, only the repos that were, and a failed write is logged, not thrown', async () => {
    const repos = new Map([
      ['hub/a', repoWith('hub/a', ['v1'])],
      ['hub/b', repoWith('hub/b', ['v1'])],
    ]);
    const a = createAccessLog(file, repos, log, 60_000);
    await a.flush();
    await expect(fs.access(file)).rejects.toThrow();
    a.touch(repos.get('hub/a')!, 'v1');
    await a.flush();
    expect(JSON.parse(await fs.readFile(file, 'utf8'))).toEqual({ version: 1, repos: { 'hub/a': { v1: repos.get('hub/a')!.access.get('v1') } } });
    // Nothing new since: the next flush writes nothing.
    await fs.rm(file);
    await a.flush();
    await expect(fs.access(file)).rejects.toThrow();

    const lost = createAccessLog(path.join(dir, 'no such dir', 'cache-access.json'), repos, log, 60_000);
    lost.touch(repos.get('hub/b')!, 'v1');
    await expect(lost.flush()).resolves.toBeUndefined();
  });

  it('tells the operator, naming the file, when the times cannot be written or read', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info', stream: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
    const repos = new Map([['hub/a', repoWith('hub/a', ['v1'])]]);
    const lostFile = path.join(dir, 'no such dir', 'cache-access.json');
    const lost = createAccessLog(lostFile, repos, logger, 60_000);
    lost.touch(repos.get('hub/a')!, 'v1');
    await lost.flush();
    expect(lines).toEqual([expect.objectContaining({ level: 40, msg: 'could not record cache access times', file: lostFile, err: expect.stringContaining('ENOENT') })]);
    await fs.writeFile(file, 'not json');
    await createAccessLog(file, repos, logger).restore(repos);
    expect(lines[1]).toMatchObject({ level: 40, msg: 'ignoring unreadable cache access times', file });
    expect(String(lines[1]!.err)).not.toBe('');
  });

  it('restores only repos and tags that still exist; a missing file is no warning; the file is one JSON line', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({ level: 'info', stream: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } });
    const repos = new Map([['hub/a', repoWith('hub/a', ['v1'])]]);
    expect(await createAccessLog(file, repos, logger).restore(repos)).toBe(0);
    expect(lines).toEqual([]);
    await fs.writeFile(file, JSON.stringify({ version: 1, repos: { 'hub/gone': { v1: 5 }, 'hub/a': { old: 3, v1: 7 } } }));
    expect(await createAccessLog(file, repos, logger).restore(repos)).toBe(1);
    expect(Object.fromEntries(repos.get('hub/a')!.access)).toEqual({ v1: 7 });
    const w = createAccessLog(file, repos, logger, 60_000);
    w.touch(repos.get('hub/a')!, 'v1');
    await w.flush();
    const text = await fs.readFile(file, 'utf8');
    expect(text).toBe(JSON.stringify({ version: 1, repos: { 'hub/a': { v1: repos.get('hub/a')!.access.get('v1') } } }) + '\n');
  });
});
