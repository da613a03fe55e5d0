// The pull soak, short: 20 pull loops (tag -> manifest -> every blob redirect, every digest and
// size verified) while tags move under real `derrick publish` runs and `derrick gc` runs, against
// embedded blobs, nginx blobs and a pull-through route whose upstream is killed and restarted.
// The pull-through scenario runs `serve --workers 2`: fills and commits from two processes.
// `npm run soak -- --duration 60s` is the long version.
import { describe, expect, it } from 'vitest';
import { runSoak, summaryLine } from '../scripts/soak.js';
import { requireTool } from './helpers/proc.js';

const hasTools = requireTool('docker-registry', 'the soak is skipped') && requireTool('nginx', 'the soak is skipped');

describe.skipIf(!hasTools)('soak: pulls during publishes, gc and upstream restarts', () => {
  it('every pull gets one whole image, in every scenario', { timeout: 300_000 }, async () => {
    const r = await runSoak({ durationMs: 12_000, loops: 20, workers: { 'pull-through': 2 }, log: (l) => console.log(`soak ${l}`) });
    console.log(`soak: ${summaryLine(r)}`);
    expect(r.errors, 'failures').toEqual([]);
    expect(r.failed).toBe(0);
    expect(r.digestMismatches).toBe(0);
    expect(r.scenarios.map((s) => s.mode)).toEqual(['embedded', 'nginx', 'pull-through']);
    expect(r.scenarios.map((s) => s.workers)).toEqual([1, 1, 2]);
    for (const s of r.scenarios) {
      // Something was pulled, and at least one publish moved tags under the pulls.
      expect(s.pulls, `${s.mode} pulls`).toBeGreaterThan(0);
      expect(s.publishes, `${s.mode} publishes`).toBeGreaterThanOrEqual(1);
    }
    expect(r.gcRuns).toBeGreaterThanOrEqual(1);
    expect(r.scenarios[2]!.upstreamRestarts, 'the upstream was killed and restarted').toBeGreaterThanOrEqual(1);
  });
});
