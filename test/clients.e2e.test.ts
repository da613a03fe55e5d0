// docker and containerd (ctr) pulling through derrick serve: the used-by path.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startContainerd, type Daemons } from './helpers/daemons.js';
import { startServe, type ServeProcess } from './helpers/derrick.js';
import { requireTool, run } from './helpers/proc.js';
import { makePublishedTree, type PublishedTree } from './helpers/published.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const hasTools = requireTool('containerd') && requireTool('ctr') && requireTool('dockerd') && requireTool('docker');

describe.skipIf(!hasTools)('docker and ctr pull through derrick serve', () => {
  let tmp: TmpDir;
  let tree: PublishedTree;
  let daemons: Daemons;
  let serve: ServeProcess;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-clients');
    tree = await makePublishedTree(tmp.dir, [
      {
        name: 'demo/hello',
        images: [
          { tag: 'latest', layers: [300_000, 2048] },
          { tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'], layers: [100_000] },
          { tag: 'dmulti', format: 'docker', platforms: ['linux/arm64', 'linux/amd64'], layers: [80_000] },
        ],
      },
    ]);
    [daemons, serve] = await Promise.all([startContainerd(true), startServe(tree.configFile)]);
  }, 120_000);

  afterAll(async () => {
    await serve?.stop();
    await daemons?.stop();
    await tmp?.cleanup();
  });

  const docker = (...args: string[]) => run('/usr/bin/docker', ['-H', `unix://${daemons.dockerSock}`, ...args], { timeoutMs: 120_000 });
  const ctr = (...args: string[]) => run('ctr', ['-a', daemons.containerdSock, '-n', 'derrick-test', ...args], { timeoutMs: 120_000 });

  for (const tag of ['latest', 'multi', 'dmulti']) {
    it(`docker pull ${tag}`, async () => {
      const ref = `${serve.host}/demo/hello:${tag}`;
      const r = await docker('pull', ref);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`Digest: ${tree.images.get(`demo/hello:${tag}`)!.digest}`);
      const ids = await docker('image', 'inspect', '--format', '{{json .RepoDigests}}', ref);
      expect(ids.stdout).toContain(tree.images.get(`demo/hello:${tag}`)!.digest);
    });

    it(`ctr pull ${tag} (linux/amd64)`, async () => {
      const ref = `${serve.host}/demo/hello:${tag}`;
      const r = await ctr('images', 'pull', '--plain-http', '--platform', 'linux/amd64', ref);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const ls = await ctr('images', 'ls');
      const line = ls.stdout.split('\n').find((l) => l.startsWith(ref))!;
      expect(line).toContain(tree.images.get(`demo/hello:${tag}`)!.digest);
    });
  }

});
