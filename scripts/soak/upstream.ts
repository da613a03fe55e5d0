// A real docker-registry as the pull-through upstream, on one fixed 127.0.0.1 port and data
// directory, so the soak can kill it and start it again while pulls go on.
import fs from 'node:fs/promises';
import path from 'node:path';
import { layoutBlobPath, type GeneratedImage } from '../gen-image.js';
import { freePort, startChild, waitForHttp, type Child } from './children.js';

export const DOCKER_REGISTRY_BIN = process.env.DOCKER_REGISTRY_BIN ?? '/usr/bin/docker-registry';

export interface Upstream {
  url: string;
  /** SIGKILL: connections die mid-answer, as when a host goes away. */
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  restarts: number;
}

export async function startUpstream(dir: string): Promise<Upstream> {
  const data = path.join(dir, 'data');
  await fs.mkdir(data, { recursive: true });
  const port = await freePort();
  const configFile = path.join(dir, 'config.yml');
  await fs.writeFile(
    configFile,
    [
      'version: 0.1',
      'log: { level: error, accesslog: { disabled: true } }',
      `storage: { filesystem: { rootdirectory: ${JSON.stringify(data)} }, maintenance: { uploadpurging: { enabled: false } } }`,
      `http: { addr: "127.0.0.1:${port}", secret: derrick-soak }`,
      '',
    ].join('\n'),
  );
  const url = `http://127.0.0.1:${port}`;
  let child: Child | undefined;
  const up: Upstream = {
    url,
    restarts: 0,
    async start() {
      // The port was just freed by our own kill; retry briefly if the kernel still holds it.
      for (let attempt = 0; ; attempt++) {
        const c = startChild(DOCKER_REGISTRY_BIN, ['serve', configFile]);
        try {
          await waitForHttp(`${url}/v2/`, 15_000, c);
          child = c;
          return;
        } catch (err) {
          await c.stop();
          if (attempt >= 5) throw err;
        }
      }
    },
    async kill() {
      await child?.stop('SIGKILL');
      child = undefined;
    },
    async stop() {
      await child?.stop();
      child = undefined;
    },
  };
  await up.start();
  return up;
}

/** Pushes an image from an OCI layout with the registry's upload API (manifests by digest, then the tag). */
export async function pushImage(registryUrl: string, repo: string, layoutDir: string, img: GeneratedImage, tag: string): Promise<void> {
  const base = `${registryUrl}/v2/${repo}`;
  for (const digest of img.blobs) {
    const start = await fetch(`${base}/blobs/uploads/`, { method: 'POST' });
    await start.arrayBuffer();
    if (start.status !== 202) throw new Error(`POST ${base}/blobs/uploads/: HTTP ${start.status}`);
    const url = new URL(start.headers.get('location')!, base);
    url.searchParams.set('digest', digest);
    const put = await fetch(url, { method: 'PUT', body: await fs.readFile(layoutBlobPath(layoutDir, digest)), headers: { 'Content-Type': 'application/octet-stream' } });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`PUT blob ${digest}: HTTP ${put.status}`);
  }
  const putManifest = async (digest: string, mediaType: string, ref: string) => {
    const res = await fetch(`${base}/manifests/${ref}`, { method: 'PUT', body: await fs.readFile(layoutBlobPath(layoutDir, digest)), headers: { 'Content-Type': mediaType } });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`PUT ${repo}:${ref}: HTTP ${res.status} ${text}`);
  };
  if (img.manifests.length > 1 || img.manifests[0]?.digest !== img.digest) {
    for (const m of img.manifests) await putManifest(m.digest, m.mediaType, m.digest);
  }
  await putManifest(img.digest, img.mediaType, tag);
}
