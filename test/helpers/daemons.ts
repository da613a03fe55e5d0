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

export interface DockerdOptions {
  /**
   * Run dockerd in a private mount namespace (`unshare -m`) with these bind-mounted over
   * /etc/docker (certs.d/<host:port>/ca.crt; dockerd has no flag to move it) and /etc/hosts.
   */
  privateEtc?: { docker: string; hosts: string };
  /** Extra environment for dockerd (e.g. HTTPS_PROXY). */
  env?: Record<string, string | undefined>;
}

/** argv that runs dockerd with the private /etc mounts; the pid stays dockerd's (exec). */
function inPrivateEtc(etc: { docker: string; hosts: string }, dockerd: string[]): [string, string[]] {
  const script = 'mount --bind "$1" /etc/docker && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"';
  return ['unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', etc.docker, etc.hosts, ...dockerd]];
}

export async function startContainerd(withDocker: boolean, dockerOpts: DockerdOptions = {}): Promise<Daemons> {
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
    const dockerdArgv = [
      '/usr/sbin/dockerd',
      '--data-root', `${d}/docker-data`, '--exec-root', `${d}/docker-exec`, '--pidfile', `${d}/docker.pid`,
      '-H', `unix://${dockerSock}`, '--containerd', containerdSock, '--storage-driver', 'vfs',
      '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--bridge=none',
    ];
    const [cmd, args] = dockerOpts.privateEtc ? inPrivateEtc(dockerOpts.privateEtc, dockerdArgv) : [dockerdArgv[0]!, dockerdArgv.slice(1)];
    const dockerd = startProcess(cmd, args, { env: dockerOpts.env });
    procs.push(dockerd);
    await waitForSocket(dockerSock, dockerd, 30_000);
    await dockerd.waitForOutput('API listen on', 30_000);
    return { containerdSock, dockerSock, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
