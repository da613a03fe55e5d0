// The bench's verdicts: a goal is judged on the ratio to the baseline, or on the figure, and the
// table prints every row with its verdict and reason.
import { describe, expect, it } from 'vitest';
import { formatTable, row, skipped } from './table.js';

describe('bench table', () => {
  it('judges a goal on the ratio to the baseline', () => {
    const ok = row({ group: 'g', what: 'cold', figure: 900, unit: 'ms', baseline: { what: 'direct', figure: 1000 }, goal: { op: '<=', value: 1 } });
    expect(ok).toMatchObject({ ratio: 0.9, goal: '<= 1x', status: 'OK' });
    const missed = row({ group: 'g', what: 'rps', figure: 700, unit: 'req/s', baseline: { what: 'raw', figure: 1000 }, goal: { op: '>=', value: 0.8 } });
    expect(missed).toMatchObject({ ratio: 0.7, status: 'MISSED' });
  });

  it("judges the figure when asked, or when there is no baseline; no goal is INFO", () => {
    const r = row({ group: 'g', what: 'start', figure: 450, unit: 'ms', baseline: { what: 'node', figure: 50 }, goal: { op: '<=', value: 400 }, judge: 'figure' });
    expect(r).toMatchObject({ ratio: 9, goal: '<= 400 ms', status: 'MISSED' });
    expect(row({ group: 'g', what: 'gets', figure: 1, unit: 'GETs', goal: { op: '<=', value: 1 } })).toMatchObject({ goal: '<= 1 GETs', status: 'OK' });
    expect(row({ group: 'g', what: 'p99', figure: 3, unit: 'ms' }).status).toBe('INFO');
  });

  it('prints one line per row with its verdict, and the reason of a skip', () => {
    const text = formatTable([
      row({ group: 'serve', what: 'blob', figure: 9000, unit: 'req/s', baseline: { what: 'raw', figure: 10000 }, goal: { op: '>=', value: 0.8 } }),
      skipped('long-link', 'all rows', 'skopeo is not installed'),
    ]);
    const lines = text.split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^serve: blob\s+9000 req\/s\s+10000 req\/s raw\s+0\.90x\s+>= 0\.8x\s+OK$/);
    expect(lines[3]).toMatch(/^long-link: all rows\s+-\s+SKIPPED \(skopeo is not installed\)$/);
  });
});
