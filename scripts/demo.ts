// `npm start`: make a sample image, publish it, serve it with the embedded blob server, and
// print the pull commands to try. Needs nothing but Node.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseConfig } from '../shared/config.js';
import { createLogger } from '../shared/log.js';
import { runPublish } from '../publisher/run-publish.js';
import { ListenError, startServer } from '../redirector/serve.js';
import { generateImage } from './gen-image.js';

const dir = path.resolve(process.env.DERRICK_DEMO_DIR ?? '.demo');
const listen = process.env.DERRICK_DEMO_LISTEN ?? '127.0.0.1:5000';

await fs.mkdir(dir, { recursive: true });
const yaml = `# written by npm start
root: ./var
keep: 2
grace: 10m
repos:
  - name: demo/hello
    from: oci:./images/hello
serve:
  listen: ${listen}
  blobs: embedded
`;
const configFile = path.join(dir, 'derrick.yaml');
await fs.writeFile(configFile, yaml);
const config = parseConfig(yaml, configFile);
const log = createLogger();

// Listen first: a taken port is reported at once, before any image is made.
let server;
try {
  server = await startServer(config, { log });
} catch (err) {
  if (!(err instanceof ListenError)) throw err;
  console.error(`error: cannot listen on ${err.address} (serve.listen, set from DERRICK_DEMO_LISTEN): ${err.reason}`);
  process.exit(1);
}

const images = path.join(dir, 'images', 'hello');
const single = await generateImage({ layoutDir: images, tag: 'latest', layers: [4 << 20, 64 << 10] });
const multi = await generateImage({ layoutDir: images, tag: 'multi', platforms: ['linux/amd64', 'linux/arm64'], layers: [1 << 20] });
const legacy = await generateImage({ layoutDir: images, tag: 'docker', format: 'docker', layers: [512 << 10] });
const outcomes = await runPublish({ config, policy: 'default', log, print: (l) => console.log(l) });
if (outcomes.some((o) => o.outcome === 'failed')) {
  await server.close();
  process.exit(1);
}
// The watcher would see the publish too; reading it now means the lines below work at once.
await server.index.reload();

const host = server.url.replace(/^http:\/\//, '');
console.log(`
derrick serve is listening on ${server.url} with the embedded blob server.
Published: demo/hello:latest (${single.digest}), :multi (${multi.digest}, amd64+arm64), :docker (${legacy.digest})
Config and tree: ${dir}

Try:
  skopeo copy --src-tls-verify=false docker://${host}/demo/hello:latest oci:/tmp/hello:latest
  skopeo copy --all --src-tls-verify=false docker://${host}/demo/hello:multi dir:/tmp/hello-multi
  podman pull --tls-verify=false ${host}/demo/hello:multi
  docker pull ${host}/demo/hello:latest        # 127.0.0.0/8 is an insecure registry by default
  curl -s ${server.url}/v2/demo/hello/tags/list

Re-publish after changing the images: node dist/cli.js publish -c ${configFile}
Ctrl-C stops.`);

const running = server;
const stop = async () => {
  await running.close();
  process.exit(0);
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
