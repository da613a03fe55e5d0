// When each cached tag was last pulled, on disk: eviction is least-recently-pulled first, and a
// restarted serve must not forget the order (it would evict what was pulled a minute ago).
// Written at most every `intervalMs` (pulls are frequent, the order need not be exact to the
// second) and on close; a lost or unreadable file only makes the order approximate again.
import fs from 'node:fs/promises';
import writeFileAtomic from 'write-file-atomic';
import { z } from 'zod';
import type { Logger } from '../../shared/log.js';
import type { CacheRepo } from './cache-repo.js';

const AccessFileSchema = z.object({
  version: z.literal(1),
  repos: z.record(z.string(), z.record(z.string(), z.number())),
});

export interface AccessLog {
  /** A tag was pulled. */
  touch(repo: CacheRepo, tag: string): void;
  /** Sets the access times recorded for the repos that exist; returns how many tags it set. */
  restore(repos: Map<string, CacheRepo>): Promise<number>;
  /** Writes now if anything changed; resolves when on disk. */
  flush(): Promise<void>;
}

export function createAccessLog(file: string, repos: Map<string, CacheRepo>, log: Logger, intervalMs = 5000): AccessLog {
  let dirty = false;
  let timer: NodeJS.Timeout | undefined;
  let writing: Promise<void> = Promise.resolve();

  const write = () => {
    timer = undefined;
    if (!dirty) return writing;
    dirty = false;
    const doc: z.infer<typeof AccessFileSchema> = { version: 1, repos: {} };
    for (const r of repos.values()) if (r.access.size) doc.repos[r.name] = Object.fromEntries(r.access);
    writing = writing
      .then(() => writeFileAtomic(file, JSON.stringify(doc) + '\n'))
      .catch((err: Error) => log.warn({ file, err: err.message }, 'could not record cache access times'));
    return writing;
  };

  return {
    touch(repo, tag) {
      repo.access.set(tag, Date.now());
      dirty = true;
      timer ??= setTimeout(write, intervalMs);
      timer.unref();
    },
    async restore(target) {
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch {
        return 0;
      }
      let parsed: z.infer<typeof AccessFileSchema>;
      try {
        parsed = AccessFileSchema.parse(JSON.parse(text));
      } catch (err) {
        log.warn({ file, err: (err as Error).message }, 'ignoring unreadable cache access times');
        return 0;
      }
      let n = 0;
      for (const [name, tags] of Object.entries(parsed.repos)) {
        const repo = target.get(name);
        if (!repo) continue;
        for (const [tag, at] of Object.entries(tags)) {
          if (!repo.tags.has(tag)) continue;
          repo.access.set(tag, at);
          n++;
        }
      }
      return n;
    },
    async flush() {
      clearTimeout(timer);
      await write();
    },
  };
}
