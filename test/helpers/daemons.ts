// Private containerd and dockerd instances (own root, state and sockets), as ../shared/clients.md
// describes: no CRI plugin, vfs storage, no iptables or bridge. Stopped by pid.
import fs from 'node:fs/promises';
import path from 'node:path';
import { startProcess, type RunningProcess } from './proc.js';
import { tmpDir } from './tmp.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitForSocket(sock: string, proc: RunningProcess, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!proc.alive()) throw new Error(`daemon exited before ${sock} appeared:\n${proc.output().slice(-2000)}`);
    if (await fs.stat(sock).then(() => true, () => false)) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${sock}:\n${proc.output().slice(-2000)}`);
}

export interface Daemons {
  containerdSock: string;
  dockerSock?: string;
  stop(): Promise<void>;
}

export async function startContainerd(withDocker: boolean): Promise<Daemons> {
  const tmp = await tmpDir('derrick-ctd');
  const d = tmp.dir;
  const containerdSock = path.join(d, 'ctd.sock');
  await fs.writeFile(
    path.join(d, 'config.toml'),
    `version = 2\nroot = "${d}/root"\nstate = "${d}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${containerdSock}"\n`,
  );
  const ctd = startProcess('containerd', ['--config', path.join(d, 'config.toml')]);
  const procs: RunningProcess[] = [ctd];
  const stop = async () => {
    for (const p of procs.reverse()) await p.stop();
    await tmp.cleanup();
  };
  try {
    await waitForSocket(containerdSock, ctd, 20_000);
    if (!withDocker) return { containerdSock, stop };
    const dockerSock = path.join(d, 'docker.sock');
    const dockerd = startProcess('/usr/sbin/dockerd', [
      '--data-root', `${d}/docker-data`, '--exec-root', `${d}/docker-exec`, '--pidfile', `${d}/docker.pid`,
      '-H', `unix://${dockerSock}`, '--containerd', containerdSock, '--storage-driver', 'vfs',
      '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--bridge=none',
    ]);
    procs.push(dockerd);
    await waitForSocket(dockerSock, dockerd, 30_000);
    await dockerd.waitForOutput('API listen on', 30_000);
    return { containerdSock, dockerSock, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
