// A restarted serve takes back what the cache committed (restore.ts), in process against a real
// docker-registry behind the fault proxy (which counts the upstream requests): tags come back
// unconfirmed, proofs come back from their record, and state from before proofs were kept is
// settled at start without a republish by hand.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage, type GeneratedImage } from '../../scripts/gen-image.js';
import { pushImage } from '../../scripts/soak/upstream.js';
import { parseConfig, type Config } from '../../shared/config.js';
import { layout } from '../../shared/layout.js';
import { createLogger } from '../../shared/log.js';
import { MediaType, sha256Digest } from '../../shared/oci.js';
import { requireTool } from '../../test/helpers/proc.js';
import { startProxiedUpstream, type ProxiedUpstream } from '../../test/helpers/proxied-upstream.js';
import { startServer, type RunningServer } from '../serve.js';
import type { Policy } from './routes.js';

const hasTools = requireTool('docker-registry', 'the in-process pull-through restore tests are skipped');
const ACCEPT = [MediaType.ociManifest, MediaType.dockerManifest].join(', ');
/** What serve logged at warn and above (JSON lines): operators read these. */
const warnings: Array<Record<string, unknown>> = [];
const log = createLogger({ level: 'warn', stream: { write: (line: string) => void warnings.push(JSON.parse(line) as Record<string, unknown>) } });

describe.skipIf(!hasTools)('pull-through state after a restart, in process', () => {
  let up: ProxiedUpstream;
  let a: GeneratedImage;
  let b: GeneratedImage;

  beforeAll(async () => {
    up = await startProxiedUpstream('derrick-pt-restore');
    a = await generateImage({ layoutDir: path.join(up.gen, 'a'), tag: 'v1', seed: 'ra', layers: [200] });
    b = await generateImage({ layoutDir: path.join(up.gen, 'b'), tag: 'v1', seed: 'rb', layers: [300] });
  });
  afterAll(async () => {
    await up?.close();
  });

  /** A derrick root of its own for one test, with one route to the proxy. */
  async function rootFor(name: string): Promise<{ config: Config; root: string; redirecting: Config }> {
    const dir = path.join(up.tmp.dir, name);
    await fs.mkdir(dir, { recursive: true });
    const yaml = ['root: ./var', 'grace: 10m', 'upstreams:', `  - { prefix: hub, url: ${JSON.stringify(up.proxy.url)}, tag-ttl: 1m, pull-ahead: false }`, ''].join('\n');
    const file = path.join(dir, 'derrick.yaml');
    await fs.writeFile(file, yaml);
    // The same root, with `serve.manifests: redirect`: a published manifest is a redirect to its file.
    const redirecting = parseConfig(yaml + 'serve:\n  manifests: redirect\n', file);
    return { config: parseConfig(yaml, file), root: path.join(dir, 'var'), redirecting };
  }
  const serve = (config: Config, policy?: Policy) => startServer(config, { listen: '127.0.0.1:0', log, policy });
  const get = async (s: RunningServer, p: string, method = 'GET') => {
    const r = await fetch(`${s.url}${p}`, { method, headers: { Accept: ACCEPT } });
    return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
  };
  const anyUps = (repo: string) => up.proxy.requests.filter((r) => r.path.startsWith(`/v2/${repo}/`)).length;
  const serveWith = (config: Config, logger = log) => startServer(config, { listen: '127.0.0.1:0', log: logger });
  /** Pulls `hub/<repo>:v1` like a client (manifest, then every blob) and waits for its commit. */
  async function pull(s: RunningServer, repo: string, img: GeneratedImage) {
    const m = await get(s, `/v2/hub/${repo}/manifests/v1`);
    expect(m.headers.get('docker-content-digest')).toBe(img.digest);
    for (const d of img.blobs) {
      const r = await get(s, `/v2/hub/${repo}/blobs/${d}`);
      expect(r.status, d).toBe(200);
      expect(sha256Digest(r.body)).toBe(d);
    }
    await s.pullThrough!.committer.idle();
  }

  it('cached tags come back unconfirmed: --no-fetch serves them with no upstream request, and the next normal start rechecks each with one HEAD', async () => {
    await pushImage(up.reg.url, 'rs/app', path.join(up.gen, 'a'), a, 'v1');
    const { config, redirecting } = await rootFor('restart');
    const first = await serve(config);
    try {
      await pull(first, 'rs/app', a);
    } finally {
      await first.close();
    }

    const offline = await serve(config, 'Never');
    const asked = anyUps('rs/app');
    try {
      const m = await get(offline, '/v2/hub/rs/app/manifests/v1');
      expect(m.status).toBe(200);
      expect(m.headers.get('docker-content-digest')).toBe(a.digest);
      expect(sha256Digest(m.body)).toBe(a.digest);
      expect(m.headers.get('warning')).toBeNull();
      // serve.manifests inline (the default): the bytes themselves, not a redirect to the file.
      const inline = await fetch(`${offline.url}/v2/hub/rs/app/manifests/v1`, { headers: { Accept: ACCEPT }, redirect: 'manual' });
      expect(inline.status).toBe(200);
      expect(sha256Digest(Buffer.from(await inline.arrayBuffer()))).toBe(a.digest);
      expect((await get(offline, `/v2/hub/rs/app/manifests/${a.digest}`)).status).toBe(200);
      const tags = await get(offline, '/v2/hub/rs/app/tags/list');
      expect(JSON.parse(tags.body.toString())).toEqual({ name: 'hub/rs/app', tags: ['v1'] });
      expect(tags.headers.get('warning')).toBeNull();
      for (const d of a.blobs) expect(sha256Digest((await get(offline, `/v2/hub/rs/app/blobs/${d}`)).body), d).toBe(d);
      // What was never cached is unknown, without asking.
      const nope = await get(offline, '/v2/hub/rs/app/manifests/v2');
      expect(nope.status).toBe(404);
      expect(JSON.parse(nope.body.toString()).errors[0].code).toBe('MANIFEST_UNKNOWN');
      const other = await get(offline, '/v2/hub/never/app/tags/list');
      expect(other.status).toBe(404);
      expect(JSON.parse(other.body.toString()).errors[0].code).toBe('NAME_UNKNOWN');
      expect((await get(offline, `/v2/hub/rs/app/manifests/${sha256Digest('not cached')}`)).status).toBe(404);
      // Referrers: what the cache holds, and under Never nothing is asked.
      const refs = await get(offline, `/v2/hub/rs/app/referrers/${a.digest}`);
      expect(refs.status).toBe(200);
      expect(JSON.parse(refs.body.toString()).manifests).toEqual([]);
      expect(anyUps('rs/app')).toBe(asked);
    } finally {
      await offline.close();
    }

    // Published and redirecting: the tag is a redirect to the published file, with the digest.
    const redirects = await serve(redirecting, 'Never');
    try {
      const r = await fetch(`${redirects.url}/v2/hub/rs/app/manifests/v1`, { headers: { Accept: ACCEPT }, redirect: 'manual' });
      await r.arrayBuffer();
      expect(r.status).toBe(307);
      expect(r.headers.get('docker-content-digest')).toBe(a.digest);
      const file = await fetch(new URL(r.headers.get('location')!, redirects.url));
      expect(sha256Digest(Buffer.from(await file.arrayBuffer()))).toBe(a.digest);
      // HEAD is answered from memory.
      const head = await get(redirects, '/v2/hub/rs/app/manifests/v1', 'HEAD');
      expect(head.status).toBe(200);
      expect(head.headers.get('docker-content-digest')).toBe(a.digest);
      // A tag's answer, restored unconfirmed (max-age 0 under --no-fetch): never immutable.
      expect(head.headers.get('cache-control')).toBe('public, max-age=0');
      const byDigest = await get(redirects, `/v2/hub/rs/app/manifests/${a.digest}`, 'HEAD');
      expect(byDigest.headers.get('cache-control')).toMatch(/immutable/);
      expect(anyUps('rs/app')).toBe(asked);
    } finally {
      await redirects.close();
    }

    const again = await serve(config);
    try {
      const heads = up.proxy.count('HEAD', /^\/v2\/rs\/app\/manifests\/v1$/);
      const gets = up.proxy.count('GET', /^\/v2\/rs\/app\/manifests\//);
      expect((await get(again, '/v2/hub/rs/app/manifests/v1')).headers.get('docker-content-digest')).toBe(a.digest);
      expect((await get(again, '/v2/hub/rs/app/manifests/v1')).status).toBe(200);
      expect(up.proxy.count('HEAD', /^\/v2\/rs\/app\/manifests\/v1$/)).toBe(heads + 1);
      expect(up.proxy.count('GET', /^\/v2\/rs\/app\/manifests\//)).toBe(gets);
    } finally {
      await again.close();
    }
  });

  it('state from before proofs were kept (beside a repo that has its record): a blob only this repo names is proven at start, one another repo names is confirmed upstream; both recorded', async () => {
    await pushImage(up.reg.url, 'p1/app', path.join(up.gen, 'a'), a, 'v1');
    await pushImage(up.reg.url, 'p2/app', path.join(up.gen, 'b'), b, 'v1');
    await pushImage(up.reg.url, 'p3/app', path.join(up.gen, 'a'), a, 'v1');
    const { config, root } = await rootFor('upgrade');
    const l = layout(root);
    const first = await serve(config);
    try {
      await pull(first, 'p1/app', a);
      await pull(first, 'p2/app', b);
      await pull(first, 'p3/app', a);
    } finally {
      await first.close();
    }
    // As an older derrick left p2 and p3: repo states, no proof records (p1 keeps its record).
    for (const r of ['p2', 'p3']) await fs.rm(l.cacheProof(`hub/${r}/app`));
    const blobHeads = (repo: string) => up.proxy.count('HEAD', new RegExp(`^/v2/${repo}/blobs/`));
    const before = { p1: blobHeads('p1/app'), p2: blobHeads('p2/app'), p3: blobHeads('p3/app') };

    const second = await serve(config);
    try {
      // p2's blobs are its own: recorded at start, without asking anyone.
      const p2 = JSON.parse(await fs.readFile(l.cacheProof('hub/p2/app'), 'utf8')) as { upstream: string; repository: string; digests: string[] };
      expect(p2).toEqual({ version: 1, upstream: up.proxy.url, repository: 'p2/app', digests: [b.digest, ...b.blobs].sort() });
      const doubts = warnings.filter((x) => x.msg === 'cached blobs not proven for this repo; confirming them at the upstream');
      expect(doubts.map((x) => [x.repo, x.blobs, x.recorded])).toEqual([['hub/p3/app', a.blobs.length, false]]);
      // p3 shares a's blobs with p1: they are confirmed at p3's own upstream, then recorded.
      await second.pullThrough!.committer.idle();
      expect(blobHeads('p3/app') - before.p3).toBe(a.blobs.length);
      for (const r of ['p1', 'p3']) {
        const rec = JSON.parse(await fs.readFile(l.cacheProof(`hub/${r}/app`), 'utf8')) as { digests: string[] };
        expect(rec.digests, r).toEqual([a.digest, ...a.blobs].sort());
      }
      expect(blobHeads('p1/app')).toBe(before.p1);
      expect(blobHeads('p2/app')).toBe(before.p2);
      // Still published, and served.
      expect((await get(second, '/v2/hub/p3/app/manifests/v1')).status).toBe(200);
    } finally {
      await second.close();
    }

    // The third start reads the records: nothing is confirmed again.
    const heads = blobHeads('p1/app') + blobHeads('p3/app');
    const third = await serve(config);
    try {
      await third.pullThrough!.committer.idle();
      expect(blobHeads('p1/app') + blobHeads('p3/app')).toBe(heads);
    } finally {
      await third.close();
    }
  });

  it('a repo state it cannot read is skipped with a warning naming the file; blobs it must confirm are announced per repo', async () => {
    const { config, root } = await rootFor('broken');
    const l = layout(root);
    await fs.mkdir(l.repoStateDir, { recursive: true });
    await fs.writeFile(l.repoState('hub/broken/app'), '{"not": "a state"');
    const s = await serveWith(config);
    try {
      const w = warnings.find((x) => x.msg === 'unreadable repo state');
      expect(w).toMatchObject({ level: 40, file: path.basename(l.repoState('hub/broken/app')) });
      expect(String(w!.err)).not.toBe('');
      // Nothing of it is served: the name is an empty cache repo, asked upstream (which lacks it).
      expect((await get(s, '/v2/hub/broken/app/manifests/v1')).status).toBe(404);
    } finally {
      await s.close();
    }
  });
});
