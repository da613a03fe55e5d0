// One ssh connection per push to an ssh:// target, shared by its rsyncs (ControlMaster): a push
// makes 5+ rsync calls, and each would otherwise pay its own handshake. Started and stopped by
// pid here (never ControlPersist, which would leave a background ssh behind). When it can't be
// started the rsyncs simply connect on their own (a missing control socket is no error).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TargetConfig } from '../../shared/config.js';
import { sshDestination, sshOptions } from './transport.js';

export interface SshMaster {
  /** The control socket, once the connection is up; undefined when there is none. */
  controlPath?: string;
  stop(): Promise<void>;
}

const NONE: SshMaster = { stop: async () => undefined };

export async function startSshMaster(t: TargetConfig, dir: string): Promise<SshMaster> {
  const d = sshDestination(t);
  if (!d) return NONE;
  const controlPath = path.join(dir, 'ssh-control');
  // The options go through no shell here: strip the quotes written for rsync's -e parser.
  const opts = sshOptions(t, d.port).map((o) => o.replace(/'/g, ''));
  const child: ChildProcess = spawn('ssh', [...opts, '-M', '-N', '-S', controlPath, '-o', 'ControlPersist=no', d.dest], { stdio: 'ignore' });
  child.on('error', () => undefined);
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  let exited = false;
  void gone.then(() => (exited = true));
  const deadline = Date.now() + t.timeout;
  while (!exited && !fs.existsSync(controlPath) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const stop = async () => {
    if (!exited) child.kill('SIGTERM');
    await gone;
  };
  if (exited || !fs.existsSync(controlPath)) {
    await stop();
    return NONE;
  }
  return { controlPath, stop };
}
