// The setup the publisher's fault and overlap tests share: a temp dir, a real docker-registry,
// a fault proxy in front of it, and the paths of a derrick root and config inside the temp dir.
import path from 'node:path';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { startRegistry, type Registry } from './registry.js';
import { tmpDir, type TmpDir } from './tmp.js';

export interface ProxiedUpstream {
  tmp: TmpDir;
  reg: Registry;
  proxy: FaultProxy;
  /** Where tests generate their images. */
  gen: string;
  /** derrick's root (`root: ./var` in cfgFile). */
  root: string;
  cfgFile: string;
  close(): Promise<void>;
}

export async function startProxiedUpstream(name: string): Promise<ProxiedUpstream> {
  const tmp = await tmpDir(name);
  const reg = await startRegistry();
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port });
  return {
    tmp,
    reg,
    proxy,
    gen: path.join(tmp.dir, 'gen'),
    root: path.join(tmp.dir, 'var'),
    cfgFile: path.join(tmp.dir, 'derrick.yaml'),
    async close() {
      await proxy.close();
      await reg.stop();
      await tmp.cleanup();
    },
  };
}
