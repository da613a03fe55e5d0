// A progress bar (blobs and bytes) on a TTY; nothing otherwise, where one summary line per repo is printed instead.
import cliProgress from 'cli-progress';
import { formatBytes } from '../shared/units.js';
import type { SyncProgress } from './sync.js';

export interface RepoProgress extends SyncProgress {
  stop(): void;
}

export function repoProgress(repo: string, enabled: boolean): RepoProgress {
  if (!enabled) return { stop: () => {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${repo} |{bar}| {blobs} blobs, {done}/{all}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let total = 0;
  let value = 0;
  let blobs = 0;
  let started = false;
  const payload = () => ({ blobs, done: formatBytes(value), all: formatBytes(total) });
  return {
    onBlobStart: (_d, size) => {
      total += size;
      if (!started) {
        started = true;
        bar.start(total, 0, payload());
      } else bar.setTotal(total);
    },
    onBlobBytes: (n) => {
      value += n;
      bar.update(value, payload());
    },
    onBlobDone: () => {
      blobs++;
      bar.update(value, payload());
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}
