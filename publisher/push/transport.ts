// How one target is reached: the rsync destination prefix and the options every rsync to it
// carries (ssh command, timeouts, bandwidth). Nothing but rsync ever runs against an edge: over
// ssh the key can be locked to rsync on the edge (rrsync), and a plain rsync daemon needs nothing else.
import type { TargetConfig } from '../../shared/config.js';

export interface Transport {
  /** rsync's spelling of the edge's derrick root, without a trailing slash. */
  root: string;
  /** Options for every rsync to this target. */
  args: string[];
}

/** ssh's -e command for rsync; rsync splits it on spaces and honours single quotes. */
export function sshOptions(t: TargetConfig, port: string | undefined): string[] {
  const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const parts = ['-o', 'BatchMode=yes', '-o', `ConnectTimeout=${Math.max(1, Math.ceil(t.timeout / 1000))}`];
  // A dead link is noticed by ssh too, not only by rsync's own I/O timeout.
  parts.push('-o', 'ServerAliveInterval=5', '-o', `ServerAliveCountMax=${Math.max(1, Math.ceil(t.timeout / 5000))}`);
  if (port) parts.push('-p', port);
  if (t['ssh-key']) parts.push('-i', q(t['ssh-key']), '-o', 'IdentitiesOnly=yes');
  if (t['known-hosts']) parts.push('-o', `UserKnownHostsFile=${q(t['known-hosts'])}`, '-o', 'StrictHostKeyChecking=yes');
  return parts;
}

/** user@host and port of an ssh:// target. */
export function sshDestination(t: TargetConfig): { dest: string; port?: string } | undefined {
  const u = new URL(t.url);
  return u.protocol === 'ssh:' ? { dest: `${decodeURIComponent(u.username)}@${u.hostname}`, port: u.port || undefined } : undefined;
}

/** `controlPath`: a running ssh master connection (ssh-master.ts) every rsync of this push shares. */
export function transportFor(t: TargetConfig, controlPath?: string): Transport {
  const seconds = Math.max(1, Math.ceil(t.timeout / 1000));
  const args = [`--timeout=${seconds}`];
  // --bwlimit is per rsync process, and up to `concurrency` of them run at once.
  if (t.bandwidth) args.push(`--bwlimit=${Math.max(1, Math.floor(t.bandwidth / 1024 / t.concurrency))}`);
  const u = new URL(t.url);
  const path = decodeURIComponent(u.pathname).replace(/\/+$/, '');
  if (u.protocol === 'rsync:') {
    args.push(`--contimeout=${seconds}`);
    return { root: `rsync://${u.host}${path}`, args };
  }
  const mux = controlPath ? ['-o', `ControlPath=${controlPath}`, '-o', 'ControlMaster=no'] : [];
  args.push('-e', ['ssh', ...sshOptions(t, u.port || undefined), ...mux].join(' '));
  return { root: `${decodeURIComponent(u.username)}@${u.hostname}:${path}`, args };
}
