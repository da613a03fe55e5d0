// Temporary directories for tests, removed by the returned cleanup unless DERRICK_KEEP_TMP is set.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export interface TmpDir {
  dir: string;
  /** Removes the directory (kept, and its path printed, when DERRICK_KEEP_TMP is set). */
  cleanup(): Promise<void>;
}

export function keepTmp(): boolean {
  const v = process.env.DERRICK_KEEP_TMP;
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

/** Creates `<os.tmpdir()>/<prefix>XXXXXX`. Call `cleanup` in afterAll. */
export async function tmpDir(prefix: string): Promise<TmpDir> {
  const safe = prefix.replace(/[^A-Za-z0-9._-]/g, '_');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), safe.endsWith('-') ? safe : `${safe}-`));
  let done = false;
  return {
    dir,
    async cleanup() {
      if (done) return;
      done = true;
      if (keepTmp()) {
        console.warn(`[keep] DERRICK_KEEP_TMP is set; leaving ${dir}`);
        return;
      }
      await fs.rm(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}
