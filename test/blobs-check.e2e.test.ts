// The serve.blobs self-check (issue 11) against a real nginx serving the published tree: with the
// right base URL /readyz is ready; with a wrong base path (every client would get a 404) serve logs
// one error naming the URL it tried and what came back, and /readyz answers 503 with that reason;
// with the blob server gone, the reason is the refused connection; other bytes are named as such.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServe, type ServeProcess } from './helpers/derrick.js';
import { rawRequest } from './helpers/http.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { requireTool } from './helpers/proc.js';
import { makePublishedTree } from './helpers/published.js';
import { pollUntil } from './helpers/pull-through.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const PROBLEM = 'does not serve the published tree';
const count = (text: string, s: string) => text.split(s).length - 1;

describe.runIf(requireTool('nginx') || process.env.CI === 'true')('serve.blobs self-check (real nginx)', () => {
  let tmp: TmpDir;
  let nginx: Nginx;
  const serves: ServeProcess[] = [];

  beforeAll(async () => {
    tmp = await tmpDir('derrick-blobs-check');
    const root = path.join(tmp.dir, 'var');
    await fs.mkdir(path.join(root, 'published'), { recursive: true });
    nginx = await startNginx(`server { listen 127.0.0.1:__PORT__; location /files/ { alias ${root}/published/; } }`);
  });
  afterAll(async () => {
    for (const s of serves) await s.stop();
    await nginx?.stop();
    await tmp?.cleanup();
  });

  const serveWith = async (blobs: string, sub = blobs.endsWith('/files') ? '.' : 'wrong') => {
    const dir = path.join(tmp.dir, sub);
    const tree = await makePublishedTree(dir, [{ name: 'demo/bc', images: [{ tag: 'v1', layers: [800] }] }], `serve:\n  blobs: ${blobs}\n`);
    const s = await startServe(tree.configFile);
    serves.push(s);
    return s;
  };

  it('the right base URL: ready; the blob server stopped: 503 naming the refused connection', async () => {
    const s = await serveWith(`${nginx.url}/files`);
    const r = await rawRequest(s.url, '/readyz');
    expect(r.status, r.text).toBe(200);
    expect(s.proc.output()).not.toContain(PROBLEM);
    await nginx.stop();
    // The outcome is cached for 5 s: the next check after that sees the refusal.
    const down = await pollUntil(async () => {
      const x = await rawRequest(s.url, '/readyz');
      return x.status === 503 && x;
    }, 15_000, '/readyz to notice the blob server is gone', 500);
    const problems: string[] = down.json().problems;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(new RegExp(`^serve\\.blobs \\(${nginx.url}/files\\) ${PROBLEM}: GET ${nginx.url}/files/master/demo~bc/\\S+/manifests/oci/sha256:[0-9a-f]{64} answered ECONNREFUSED$`));
    // The log line may reach stdout a moment after the 503: wait for it, then count.
    await s.proc.waitForOutput(PROBLEM, 10_000);
    expect(count(s.proc.output(), PROBLEM)).toBe(1);
  });

  it('a wrong base path: one error naming the URL and the 404 at start, /readyz 503 with it', async () => {
    const nginx2 = await startNginx(`server { listen 127.0.0.1:__PORT__; location /files/ { alias ${tmp.dir}/wrong/var/published/; } location /other/ { return 200 "another tree"; } }`);
    try {
      const s = await serveWith(`${nginx2.url}/nope`);
      await s.proc.waitForOutput(PROBLEM, 10_000);
      const r = await rawRequest(s.url, '/readyz');
      expect(r.status, r.text).toBe(503);
      const problems: string[] = r.json().problems;
      expect(problems).toEqual([expect.stringMatching(new RegExp(`^serve\\.blobs \\(${nginx2.url}/nope\\) ${PROBLEM}: GET ${nginx2.url}/nope/master/demo~bc/\\S+ answered HTTP 404$`))]);
      // Asked again: the same reason, and still one line in the log.
      expect((await rawRequest(s.url, '/readyz')).status).toBe(503);
      const log = s.proc.output();
      expect(count(log, PROBLEM), log).toBe(1);
      expect(log).toContain(`"url":"${nginx2.url}/nope/master/demo~bc/`);
      // The server itself keeps answering: the check is a report, not a stop.
      expect((await rawRequest(s.url, '/healthz')).status).toBe(200);
      // A server that answers 200 with other bytes (another tree, a catch-all page).
      const other = await serveWith(`${nginx2.url}/other`, 'other');
      await other.proc.waitForOutput(PROBLEM, 10_000);
      const o = await rawRequest(other.url, '/readyz');
      expect(o.status, o.text).toBe(503);
      expect(o.json().problems[0]).toMatch(/ answered HTTP 200 with other bytes \(12 bytes hashing to sha256:[0-9a-f]{64}, expected sha256:[0-9a-f]{64}\)$/);
    } finally {
      await nginx2.stop();
    }
  });
});
