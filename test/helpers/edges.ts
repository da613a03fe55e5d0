// Edge hosts on 127.0.0.1 for the push tests: an sshd of our own (throwaway host and user keys,
// running as the current user) or a plain rsync daemon, each with its own root. Stopped by pid.
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort, waitForPort } from './ports.js';
import { run, startProcess, type RunningProcess } from './proc.js';

export interface Edge {
  name: string;
  /** The edge's derrick root (its own derrick serve uses it). */
  root: string;
  /** targets[] entry for derrick.yaml, as YAML lines (without the leading "- "). */
  yaml: string;
  /** Stops the edge's server (the edge is then down); start() brings it back on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

async function keygen(file: string, comment: string): Promise<void> {
  const r = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
}

/** An sshd on a free loopback port that lets the current user in with a throwaway key. */
export async function startSshEdge(dir: string, name: string): Promise<Edge> {
  const root = path.join(dir, 'root');
  await fs.mkdir(root, { recursive: true });
  const hostKey = path.join(dir, 'host_key');
  const userKey = path.join(dir, 'user_key');
  await keygen(hostKey, `${name}-host`);
  await keygen(userKey, `${name}-user`);
  await fs.copyFile(`${userKey}.pub`, path.join(dir, 'authorized_keys'));
  const port = await freePort();
  const hostPub = (await fs.readFile(`${hostKey}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  await fs.writeFile(path.join(dir, 'known_hosts'), `[127.0.0.1]:${port} ${hostPub}\n`);
  const user = process.env.USER ?? (await run('id', ['-un'])).stdout.trim();
  const cfg = path.join(dir, 'sshd_config');
  await fs.writeFile(cfg, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `PidFile ${path.join(dir, 'sshd.pid')}`,
    `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`, 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password', 'StrictModes no', 'UsePAM no', `AllowUsers ${user}`, 'LogLevel ERROR',
    // Many short connections in a burst (one per rsync): don't let sshd's own throttle refuse them.
    'MaxStartups 100', '',
  ].join('\n'));
  // sshd run as root insists on its privilege separation directory, which systemd's unit
  // (RuntimeDirectory=sshd) creates at boot; on a machine where sshd never ran it is missing.
  if (process.getuid?.() === 0) await fs.mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  let proc: RunningProcess | undefined;
  const start = async () => {
    if (proc?.alive()) return; // up already: a second sshd would orphan the first
    proc = startProcess(SSHD, ['-D', '-e', '-f', cfg]);
    await waitForPort(port, 15_000, '127.0.0.1', () => proc!.alive());
  };
  await start();
  const yaml = [
    `name: ${name}`, `url: ssh://${user}@127.0.0.1:${port}${root}`, `ssh-key: ${userKey}`,
    `known-hosts: ${path.join(dir, 'known_hosts')}`, 'timeout: 5s',
  ].join('\n');
  return { name, root, yaml, start, stop: async () => void (await proc?.stop()) };
}

/** A plain rsync daemon (no remote command) with one module, configured as the guide says. */
export async function startRsyncdEdge(dir: string, name: string): Promise<Edge> {
  const moduleDir = path.join(dir, 'module');
  const root = path.join(moduleDir, 'derrick');
  await fs.mkdir(root, { recursive: true });
  const port = await freePort();
  const cfg = path.join(dir, 'rsyncd.conf');
  await fs.writeFile(cfg, [
    `pid file = ${path.join(dir, 'rsyncd.pid')}`, `lock file = ${path.join(dir, 'rsyncd.lock')}`, 'address = 127.0.0.1', '',
    '[edge]', `path = ${moduleDir}`, 'use chroot = no', 'munge symlinks = no', 'read only = no', ...(process.getuid?.() === 0 ? ['uid = 0', 'gid = 0'] : []), '',
  ].join('\n'));
  let proc: RunningProcess | undefined;
  const start = async () => {
    if (proc?.alive()) return;
    await fs.rm(path.join(dir, 'rsyncd.pid'), { force: true });
    proc = startProcess('rsync', ['--daemon', '--no-detach', '--port', String(port), '--config', cfg, `--log-file=${path.join(dir, 'rsyncd.log')}`]);
    await waitForPort(port, 15_000, '127.0.0.1', () => proc!.alive());
  };
  await start();
  const yaml = [`name: ${name}`, `url: rsync://127.0.0.1:${port}/edge/derrick`, 'timeout: 5s'].join('\n');
  return { name, root, yaml, start, stop: async () => void (await proc?.stop()) };
}
