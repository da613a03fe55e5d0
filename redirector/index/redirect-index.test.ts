// A master's redirect.idx through the real server: a cold repo is loaded from it, and from the
// JSON whenever the index does not describe the JSON beside it (edited in place, damaged, or not
// a regular file): what is served always follows redirect.json, the file of record.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { layout, REDIRECT_FILE_NAME, REDIRECT_INDEX_NAME } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { startServer, type RunningServer } from '../serve.js';
import { writeSyntheticRepo } from '../../scripts/bench/catalog-tree.js';
import { rawRequest } from '../../test/helpers/http.js';
import { tmpDir, type TmpDir } from '../../test/helpers/tmp.js';

let tmp: TmpDir | undefined;
let server: RunningServer | undefined;

afterEach(async () => {
  await server?.close();
  await tmp?.cleanup();
  server = tmp = undefined;
});

describe('redirect.idx', () => {
  it('loads a cold repo from its index, and from the JSON when the index is stale, damaged or a symlink', async () => {
    tmp = await tmpDir('derrick-idx');
    const root = path.join(tmp.dir, 'var');
    const l = layout(root);
    const repo = async (name: string) => {
      const r = await writeSyntheticRepo(root, name, { tags: 3, seed: name });
      return { ...r, dir: l.master(name, r.master) };
    };
    const [fresh, stale, damaged, linked, missing] = await Promise.all(['x/fresh', 'x/stale', 'x/damaged', 'x/linked', 'x/missing'].map(repo));

    // stale: its JSON rewritten in place (a new tag), the index left as it was.
    const staleJson = path.join(stale!.dir, REDIRECT_FILE_NAME);
    const edited = JSON.parse(await fs.readFile(staleJson, 'utf8')) as { derrick: { tags: Record<string, string> } };
    edited.derrick.tags.added = stale!.tags.t0!;
    await fs.writeFile(staleJson, JSON.stringify(edited, null, 1));
    // damaged: one byte of its index flipped.
    const idx = await fs.readFile(path.join(damaged!.dir, REDIRECT_INDEX_NAME));
    idx[idx.length >> 1]! ^= 0xff;
    await fs.writeFile(path.join(damaged!.dir, REDIRECT_INDEX_NAME), idx);
    // linked: a symlink to an index (never followed), missing: none at all (an older publish).
    await fs.rm(path.join(linked!.dir, REDIRECT_INDEX_NAME));
    await fs.symlink(path.join(fresh!.dir, REDIRECT_INDEX_NAME), path.join(linked!.dir, REDIRECT_INDEX_NAME));
    await fs.rm(path.join(missing!.dir, REDIRECT_INDEX_NAME));

    const lines: string[] = [];
    const file = path.join(tmp.dir, 'derrick.yaml');
    const yaml = 'root: ./var\n';
    await fs.writeFile(file, yaml);
    const log = createLogger({ level: 'debug', stream: { write: (s: string) => void lines.push(s) } });
    server = await startServer(parseConfig(yaml, file), { listen: '127.0.0.1:0', log });

    for (const r of [fresh, stale, damaged, linked, missing]) {
      const res = await rawRequest(server.url, `/v2/${r!.name}/manifests/t1`);
      expect(res.status, r!.name).toBe(200);
      expect(res.headers['docker-content-digest']).toBe(r!.tags.t1);
      const blob = await rawRequest(server.url, `/v2/${r!.name}/blobs/${r!.blobs[0]}`);
      expect(blob.status, r!.name).toBe(307);
    }
    expect(server.index.peek('x/fresh')?.viaIndex).toBe(true);
    for (const name of ['x/stale', 'x/damaged', 'x/linked', 'x/missing']) expect(server.index.peek(name)?.viaIndex, name).toBe(false);
    // The stale index's repo serves what its JSON says now.
    const added = await rawRequest(server.url, '/v2/x/stale/manifests/added');
    expect(added.status).toBe(200);
    expect(added.headers['docker-content-digest']).toBe(stale!.tags.t0);
    const tagList = JSON.parse((await rawRequest(server.url, '/v2/x/stale/tags/list')).body.toString()) as { tags: string[] };
    expect(tagList.tags).toEqual(['added', 't0', 't1', 't2']);

    const notUsed = lines.map((s) => JSON.parse(s) as { msg: string; why?: string; file?: string }).filter((e) => e.msg === 'redirect index not used');
    expect(notUsed.map((e) => [path.basename(path.dirname(path.dirname(e.file!))), e.why]).sort()).toEqual([
      ['x~damaged', 'damaged (its CRC-32 does not match)'],
      ['x~stale', 'made from another redirect.json'],
    ]);
  });
});
