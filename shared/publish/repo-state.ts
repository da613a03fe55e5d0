// Per-repo sync state beside the store: what the last sync found, so --no-fetch can publish
// without a network and the next sync can skip what it already has.
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import writeFileAtomic from 'write-file-atomic';
import { z } from 'zod';
import type { Layout } from '../layout.js';
import { DerrickDataSchema } from '../redirect-file.js';

export const RepoStateSchema = z
  .object({
    name: z.string(),
    source: z.string(),
    lastSync: z.string(),
    /** tag -> upstream ETag, when the upstream sent one. */
    etags: z.record(z.string(), z.string()).default({}),
    tags: DerrickDataSchema.shape.tags,
    manifests: DerrickDataSchema.shape.manifests,
    blobs: DerrickDataSchema.shape.blobs,
    referrers: DerrickDataSchema.shape.referrers,
    /** manifest -> its config and layer digests, so an unchanged manifest needs no re-read. */
    manifestBlobs: z.record(z.string(), z.array(z.string())).default({}),
  })
  .strict();

export type RepoState = z.output<typeof RepoStateSchema>;

export async function readRepoState(l: Layout, name: string): Promise<RepoState | undefined> {
  let text: string;
  try {
    text = await fs.readFile(l.repoState(name), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return parseRepoState(l, name, text);
}

/** readRepoState with a synchronous read: the publisher reads one small state per repo, 1,000 in a run. */
export function readRepoStateSync(l: Layout, name: string): RepoState | undefined {
  let text: string;
  try {
    text = fsSync.readFileSync(l.repoState(name), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return parseRepoState(l, name, text);
}

function parseRepoState(l: Layout, name: string, text: string): RepoState {
  const parsed = RepoStateSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${l.repoState(name)}: corrupt repo state: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

export async function writeRepoState(l: Layout, state: RepoState): Promise<void> {
  await fs.mkdir(l.repoStateDir, { recursive: true });
  await writeFileAtomic(l.repoState(state.name), JSON.stringify(state) + '\n', { fsync: true });
}
