// The bench's one table. A row module exports `run(ctx): Promise<Row[]>` (see BenchModule); each
// Row is one figure next to its baseline from the same run, with its goal and verdict, and the
// raw numbers it came from (they go to bench/results.json). Adopting it takes a `run` that maps
// an existing result onto rows with `row()` below.
import { hasCommand } from './util.js';

export type Status = 'OK' | 'MISSED' | 'INFO' | 'SKIPPED' | 'FAILED';

export interface Row {
  /** Group (the module's name) and what this line measures, e.g. "serve" / "blob GET -> 307". */
  group: string;
  what: string;
  /** The figure and its unit ("req/s", "ms", "x", "GETs", ...). */
  figure: number;
  unit: string;
  /** What it is compared with, measured in the same run. */
  baseline?: { what: string; figure: number };
  /** figure / baseline.figure, or the figure itself when the goal is on an absolute value. */
  ratio?: number;
  /** Human-readable goal, e.g. "<= 1.0x" or ">= 15x". */
  goal?: string;
  status: Status;
  /** Why SKIPPED, or a note worth printing. */
  note?: string;
  /** The numbers behind it (every run, percentiles, sizes): kept in results.json, not printed. */
  raw?: unknown;
}

export interface BenchContext {
  /** Shorter runs (fewer rounds, shorter load tests): `npm run bench -- --quick`. */
  quick: boolean;
  /** Progress on stderr, so the table on stdout stays clean. */
  log(msg: string): void;
}

export interface BenchModule {
  /** Tools the module needs; a missing one makes every row SKIPPED with the reason. */
  tools?: string[];
  run(ctx: BenchContext): Promise<Row[]>;
}

export type Goal = { op: '<=' | '>='; value: number; unit?: string };

/** One row; `goal` judges the ratio to the baseline, or the figure (`judge: 'figure'`, or no baseline). */
export function row(r: Omit<Row, 'status' | 'ratio' | 'goal'> & { goal?: Goal; ratio?: number; judge?: 'ratio' | 'figure' }): Row {
  const { judge, goal: g, ...rest } = r;
  const ratio = r.ratio ?? (r.baseline ? r.figure / r.baseline.figure : undefined);
  const onFigure = judge === 'figure' || ratio === undefined;
  const judged = onFigure ? r.figure : ratio;
  const goal = g ? `${g.op} ${g.value}${g.unit ?? (onFigure ? (r.unit ? ` ${r.unit}` : '') : 'x')}` : undefined;
  let status: Status = 'INFO';
  if (g) status = (g.op === '<=' ? judged <= g.value : judged >= g.value) ? 'OK' : 'MISSED';
  return { ...rest, ratio, goal, status };
}

export function skipped(group: string, what: string, note: string): Row {
  return { group, what, figure: NaN, unit: '', status: 'SKIPPED', note };
}

/** The first tool of `tools` that is not on PATH (absolute paths are checked as files). */
export function missingTool(tools: string[]): string | undefined {
  return tools.find((t) => !hasCommand(t));
}

const num = (n: number) => (Number.isNaN(n) ? '-' : Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 10 ? n.toFixed(1) : n.toFixed(2));

/** The table as fixed-width text (also pasted into the README as a code block). */
export function formatTable(rows: Row[]): string {
  const head = ['row', 'figure', 'baseline', 'ratio', 'goal', 'result'];
  const lines = rows.map((r) => [
    `${r.group}: ${r.what}`,
    r.status === 'SKIPPED' ? '-' : `${num(r.figure)} ${r.unit}`.trim(),
    r.baseline ? `${num(r.baseline.figure)} ${r.unit} ${r.baseline.what}`.trim() : '',
    r.ratio === undefined ? '' : `${num(r.ratio)}x`,
    r.goal ?? '',
    r.status + (r.note ? ` (${r.note})` : ''),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => (i === 5 ? 0 : l[i]!.length))));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 5 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [fmt(head), fmt(widths.map((w, i) => '-'.repeat(i === 5 ? 6 : w))), ...lines.map(fmt)].join('\n');
}
