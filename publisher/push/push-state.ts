// What the last push to each target did, kept under <root>/push/ for `derrick status`, and the
// node-exporter textfile (<root>/push/derrick-push.prom) the publisher's metrics live in: the
// publisher is a cron job with no port to scrape, so its numbers are written where node-exporter's
// textfile collector reads them (--collector.textfile.directory=<root>/push).
import fs from 'node:fs/promises';
import path from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { Layout } from '../../shared/layout.js';
import { readdirOrEmpty } from '../../shared/publish/fsutil.js';

export interface PushState {
  target: string;
  /** When this push ended. */
  at: string;
  ok: boolean;
  errors: string[];
  sent: number;
  unchanged: number;
  bytesSent: number;
  /** Age of the oldest origin publish this edge does not serve yet; 0 when it serves them all. */
  lagSeconds: number;
  /** Repo -> master the edge served (web) after this push, as far as it is known. */
  serves: Record<string, string>;
  /** When a push last left this edge serving everything the origin served. */
  lastSuccess?: string;
}

export const METRICS_FILE = 'derrick-push.prom';

const stateFile = (l: Layout, target: string) => path.join(l.pushDir, `${target}.json`);

export async function readPushState(l: Layout, target: string): Promise<PushState | undefined> {
  try {
    return JSON.parse(await fs.readFile(stateFile(l, target), 'utf8')) as PushState;
  } catch {
    return undefined;
  }
}

export async function writePushState(l: Layout, s: PushState): Promise<void> {
  await fs.mkdir(l.pushDir, { recursive: true });
  const prev = await readPushState(l, s.target);
  const lastSuccess = s.ok && s.lagSeconds === 0 ? s.at : prev?.lastSuccess;
  await writeFileAtomic(stateFile(l, s.target), JSON.stringify({ ...s, lastSuccess }, null, 2) + '\n');
}

/** Rewrites the textfile from every target's state, so pushing one target keeps the others' series. */
export async function writePushMetrics(l: Layout, targets: string[]): Promise<void> {
  const states = (await Promise.all(targets.map((t) => readPushState(l, t)))).filter((s): s is PushState => !!s);
  const lines: string[] = [];
  const series = (name: string, help: string, value: (s: PushState) => number | undefined) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const s of states) {
      const v = value(s);
      if (v !== undefined) lines.push(`${name}{target=${JSON.stringify(s.target)}} ${v}`);
    }
  };
  const secs = (iso: string | undefined) => (iso ? Date.parse(iso) / 1000 : undefined);
  series('derrick_push_lag_seconds', 'At the last push: age of the oldest origin publish the edge did not serve (0: up to date).', (s) => s.lagSeconds);
  series('derrick_push_last_run_timestamp_seconds', 'When the last push to the target ended.', (s) => secs(s.at));
  series('derrick_push_last_success_timestamp_seconds', 'When a push last left the target serving every origin publish.', (s) => secs(s.lastSuccess));
  series('derrick_push_failed', '1 when the last push to the target failed (wholly or for some repo).', (s) => (s.ok ? 0 : 1));
  series('derrick_push_bytes_sent', 'Bytes rsync sent in the last push to the target.', (s) => s.bytesSent);
  await fs.mkdir(l.pushDir, { recursive: true });
  await writeFileAtomic(path.join(l.pushDir, METRICS_FILE), lines.join('\n') + '\n');
}

export async function knownPushTargets(l: Layout): Promise<string[]> {
  return (await readdirOrEmpty(l.pushDir)).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5));
}
