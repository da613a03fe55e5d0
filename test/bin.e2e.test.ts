// derrick as its installed bin runs it (`derrick serve`, what the systemd unit starts): the built
// cli.js executed as a program, so its shebang (`env -S node <flags>`) starts node with
// shared/node-flags.ts's flags, and the server answers a real pull request.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NODE_FLAGS } from '../shared/node-flags.js';
import { CLI } from './helpers/derrick.js';
import { freePort } from './helpers/ports.js';
import { startProcess, waitForHttp, type RunningProcess } from './helpers/proc.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

describe('dist/cli.js run as a program', () => {
  let tmp: TmpDir;
  let tree: PublishedTree;
  let serve: RunningProcess | undefined;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-bin');
    tree = await makePublishedTree(tmp.dir, [{ name: 'demo/bin', images: [{ tag: 'v1', layers: [300] }] }]);
  }, 60_000);
  afterAll(async () => {
    await serve?.stop();
    await tmp?.cleanup();
  });

  it('is executable, and `serve` runs in a node started with the shebang flags', async () => {
    expect((await fs.stat(CLI)).mode & 0o111).toBe(0o111);
    const port = await freePort();
    serve = startProcess(CLI, ['serve', '-c', tree.configFile, '--listen', `127.0.0.1:${port}`]);
    await waitForHttp(`http://127.0.0.1:${port}/v2/`, 30_000, { proc: serve });
    // env execs node in place: the pid is node's, and its command line carries the flags.
    const argv = (await fs.readFile(`/proc/${serve.pid}/cmdline`, 'utf8')).split('\0');
    expect(argv.slice(1, 1 + NODE_FLAGS.length)).toEqual([...NODE_FLAGS]);
    expect(argv).toContain(CLI);
    const img = tree.images.get('demo/bin:v1')!;
    const r = await fetch(`http://127.0.0.1:${port}/v2/demo/bin/manifests/v1`, { headers: { Accept: img.mediaType } });
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(img.digest);
  });

  it("reports a bad config in zod's English (the bundle keeps only that locale)", async () => {
    const bad = `${tmp.dir}/bad.yaml`;
    await fs.writeFile(bad, 'root: 5\nserve:\n  listen: 12\n');
    const r = spawnSync(CLI, ['serve', '-c', bad], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${bad}:1: root: Invalid input: expected string, received number`);
    expect(r.stderr).toContain(`${bad}:3: serve.listen: Invalid input: expected string, received number`);
  });
});
