// A small filesystem for disk-full tests: a size-limited tmpfs that root mounts on a temp dir,
// grows with a remount ("space freed") and unmounts in afterAll. Outside CI, where mounting is
// not permitted, the tests skip with a printed reason; under CI=true that is a failure.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from './proc.js';

/** Tries a tmpfs mount and unmount on a scratch dir; the reason when it is not permitted. */
function probe(): string | undefined {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'derrick-mount-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' });
    execFileSync('umount', [dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err).trim() || String(err);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** True if a tmpfs can be mounted here; else throws under CI=true, or prints `[skip]` and returns false. */
export function canMountTmpfs(): boolean {
  const why = probe();
  if (why === undefined) return true;
  if (process.env.CI === 'true') throw new Error(`cannot mount a tmpfs (CI=true, so the disk-full tests may not be skipped): ${why}`);
  console.warn(`[skip] cannot mount a tmpfs, the disk-full tests are skipped: ${why}`);
  return false;
}

export interface SmallFs {
  dir: string;
  /** Free bytes now. */
  free(): number;
  /** Remount with a new size limit (more space: the "space freed" step). */
  resize(size: string): Promise<void>;
  /** Unmounts (lazily if still busy). Idempotent. */
  unmount(): Promise<void>;
}

async function must(cmd: string, args: string[]): Promise<void> {
  const r = await run(cmd, args, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
}

/** Mounts a tmpfs of `size` (e.g. "6m") on `dir` (created if missing). */
export async function mountSmallFs(dir: string, size: string): Promise<SmallFs> {
  await fs.promises.mkdir(dir, { recursive: true });
  await must('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir]);
  let mounted = true;
  return {
    dir,
    free: () => {
      const s = fs.statfsSync(dir);
      return s.bavail * s.bsize;
    },
    resize: (to) => must('mount', ['-o', `remount,size=${to}`, dir]),
    async unmount() {
      if (!mounted) return;
      mounted = false;
      const r = await run('umount', [dir], { timeoutMs: 30_000 });
      if (r.code !== 0) await must('umount', ['-l', dir]);
    },
  };
}
