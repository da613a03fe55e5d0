// Wrong passwords must not stall anyone else: while 40 concurrent requests with wrong passwords
// (bcrypt cost 10, a different password each, each from its own address so nothing is cached or
// throttled) hammer a real `derrick serve`, an unrelated anonymous pull (manifest GET + blob
// redirect) keeps its p99 under 100 ms. On the code that ran bcrypt on the event loop it took
// seconds.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../scripts/gen-image.js';
import { derrick, startServe, type ServeProcess } from './helpers/derrick.js';
import { freshSourceAddress, hostileRequest } from './helpers/hostile.js';
import { makeHtpasswd } from './helpers/registry.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';

const ATTACKERS = 40;
const ATTACK_MS = 5000;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

describe('wrong passwords under load', () => {
  let tmp: TmpDir;
  let serve: ServeProcess;
  let pub: GeneratedImage;

  beforeAll(async () => {
    tmp = await tmpDir('derrick-auth-stall');
    pub = await generateImage({ layoutDir: path.join(tmp.dir, 'pub'), tag: 'v1', layers: [2048] });
    await generateImage({ layoutDir: path.join(tmp.dir, 'priv'), tag: 'v1', layers: [2048] });
    await fs.writeFile(path.join(tmp.dir, 'htpasswd'), makeHtpasswd('alice', 's3cret', 10) + '\n');
    const yaml = [
      'root: ./var',
      'repos:',
      `  - name: pub/app`,
      `    from: oci:${path.join(tmp.dir, 'pub')}`,
      `  - name: priv/app`,
      `    from: oci:${path.join(tmp.dir, 'priv')}`,
      '    protected: true',
      'serve:',
      '  htpasswd: ./htpasswd',
      '',
    ].join('\n');
    await fs.writeFile(path.join(tmp.dir, 'derrick.yaml'), yaml);
    const r = await derrick(['publish', '-c', path.join(tmp.dir, 'derrick.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    serve = await startServe(path.join(tmp.dir, 'derrick.yaml'));
  }, 120_000);

  afterAll(async () => {
    await serve?.stop();
    await tmp?.cleanup();
  });

  /**
   * One anonymous pull of the public image's manifest and a blob redirect, on a kept-alive
   * connection as real clients do (so a slow TCP connect on a loaded machine isn't counted as a
   * stall); its time in ms.
   */
  const pullOnce = async (): Promise<number> => {
    const t0 = performance.now();
    const m = await fetch(`${serve.url}/v2/pub/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
    await m.arrayBuffer();
    const b = await fetch(`${serve.url}/v2/pub/app/blobs/${pub.blobs[0]}`, { redirect: 'manual' });
    await b.arrayBuffer();
    const ms = performance.now() - t0;
    expect(m.status).toBe(200);
    expect(b.status).toBe(307);
    return ms;
  };

  const measure = async (until: () => boolean): Promise<number[]> => {
    const samples: number[] = [];
    while (until()) samples.push(await pullOnce());
    return samples.sort((a, b) => a - b);
  };

  it('an anonymous pull keeps its p99 under 100 ms while 40 wrong passwords hammer', async () => {
    const quietEnd = Date.now() + 3000;
    const quiet = await measure(() => Date.now() < quietEnd);

    let stop = false;
    let refused = 0;
    let other = 0;
    let seq = 0;
    const attacker = async () => {
      while (!stop) {
        const auth = 'Basic ' + Buffer.from(`alice:wrong-${seq++}`).toString('base64');
        // Generous: on a loaded machine the pool's queue of bcrypt checks drains slowly.
        const r = await hostileRequest(serve.url, { path: '/v2/priv/app/manifests/v1', headers: { Authorization: auth } }, freshSourceAddress(), 170_000);
        if (r.status === 401) refused++;
        else other++;
      }
    };
    const attack = Array.from({ length: ATTACKERS }, attacker);
    // Let the attack fill the pool's queue before measuring.
    await new Promise((r) => setTimeout(r, 300));
    const end = Date.now() + ATTACK_MS;
    const loaded = await measure(() => Date.now() < end);
    stop = true;
    await Promise.all(attack);

    const p = (s: number[], q: number) => percentile(s, q).toFixed(1);
    console.log(
      `[auth-stall] quiet: ${quiet.length} pulls, p50 ${p(quiet, 50)} ms, p99 ${p(quiet, 99)} ms; ` +
        `under ${ATTACKERS} wrong passwords: ${loaded.length} pulls, p50 ${p(loaded, 50)} ms, p99 ${p(loaded, 99)} ms, max ${p(loaded, 100)} ms; ` +
        `attack answered ${refused} x 401, ${other} other`,
    );
    expect(other).toBe(0);
    expect(refused).toBeGreaterThanOrEqual(ATTACKERS); // the attack really ran bcrypt
    expect(loaded.length).toBeGreaterThanOrEqual(20);
    // The bound is 100 ms. This machine is shared: when it is so loaded that a quiet pull's p99
    // is already above 50 ms, the bound applies to what the attack adds to it.
    const quietP99 = percentile(quiet, 99);
    expect(percentile(loaded, 99)).toBeLessThan(quietP99 < 50 ? 100 : 100 + quietP99);
  }, 240_000);
});
