// Progress bars (blobs and bytes) on a TTY, one line per repo that is downloading, stacked since
// several repos publish at once; nothing otherwise, where one summary line per repo is printed.
import cliProgress from 'cli-progress';
import { formatBytes } from '../shared/units.js';
import type { SyncProgress } from './sync.js';

export interface RepoProgress extends SyncProgress {
  /** Removes this repo's bar. */
  stop(): void;
}

export interface RunProgress {
  forRepo(repo: string): RepoProgress;
  /** Prints a summary line above the bars, so it is not overdrawn (stderr for error lines). */
  print(line: string, toStderr: boolean): void;
  stop(): void;
}

const plainPrint = (line: string, toStderr: boolean) => (toStderr ? console.error(line) : console.log(line));

export function runProgress(enabled: boolean): RunProgress {
  if (!enabled) return { forRepo: () => ({ stop: () => {} }), print: plainPrint, stop: () => {} };
  const bars = new cliProgress.MultiBar(
    {
      format: '{repo} |{bar}| {blobs} blobs, {done}/{all}',
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let shown = 0;
  return {
    forRepo(repo) {
      let bar: cliProgress.SingleBar | undefined;
      let total = 0;
      let value = 0;
      let blobs = 0;
      const payload = () => ({ repo, blobs, done: formatBytes(value), all: formatBytes(total) });
      return {
        onBlobStart: (_d, size) => {
          total += size;
          if (!bar) {
            bar = bars.create(total, 0, payload());
            shown++;
          } else bar.setTotal(total);
        },
        onBlobBytes: (n) => {
          value += n;
          bar?.update(value, payload());
        },
        onBlobDone: () => {
          blobs++;
          bar?.update(value, payload());
        },
        stop: () => {
          if (!bar) return;
          bars.remove(bar);
          bar = undefined;
          shown--;
        },
      };
    },
    print(line, toStderr) {
      // The bars are on stderr: a line bound for the same terminal goes above them.
      const sameTerminal = toStderr || process.stdout.isTTY;
      if (shown > 0 && sameTerminal) bars.log(line + '\n');
      else plainPrint(line, toStderr);
    },
    stop: () => bars.stop(),
  };
}
