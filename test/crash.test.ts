// Crash safety, the short version of `npm run crash -- --kills 200` (scripts/crash.ts, one
// implementation): 50 SIGKILLs of the real CLI at random instants and at critical moments,
//   - `derrick publish` from a real docker-registry: over the run, near its end, and the instants a
//     master appears under its real name, web/<repo> is swapped and app/<repo>.json is swapped;
//   - `derrick gc` while it deletes expired masters and unreferenced store objects;
//   - `derrick serve` during a pull-through fill and the commit that publishes it.
// After every kill the tree is a valid publish (the previous one, the new one, or web new + app
// previous; never app ahead of web), every master under a real name is complete, the store holds
// nothing that does not hash to its name, and `derrick verify` passes (the CLI every 5th kill, its
// check every kill). A normal run afterwards completes what was interrupted and leaves no debris.
// Kills at the web swap must land between the two swaps some of the time: with the swaps in the
// wrong order (app first) they never do, and the kills at the app swap leave app ahead of web.
import { describe, expect, it } from 'vitest';
import { runCrash, summaryLine } from '../scripts/crash.js';
import { requireTool } from './helpers/proc.js';

const hasTools = requireTool('docker-registry', 'crash tests are skipped');

describe.skipIf(!hasTools)('SIGKILL at random instants: publish, gc and a pull-through commit', () => {
  it('leaves a valid tree and a verified store after every kill, and recovers', { timeout: 900_000 }, async () => {
    const r = await runCrash({
      kills: 50,
      perTarget: { publisher: 30, gc: 10, 'pull-through': 10 },
      verifyCliEvery: 5,
      hashEvery: 3,
      small: true,
      log: (l) => console.log(`crash ${l}`),
    });
    console.log(`crash: ${summaryLine(r)}`);
    const [publisher, gc, pull] = r.targets;
    expect(r.targets.map((t) => t.name)).toEqual(['publisher', 'gc', 'pull-through']);
    expect(r.targets.flatMap((t) => t.problems), 'broken states').toEqual([]);
    expect(r.broken).toBe(0);
    expect(publisher!.kills).toBe(30);
    expect(gc!.kills).toBe(10);
    expect(pull!.kills).toBe(10);
    // A kill at the web swap lands before the app swap some of the time (most of them with the
    // swaps in the right order). With app swapped first, web's rename is the last step and this stays 0.
    expect(publisher!.webSwapKillsBetween, 'kills at the web swap that left app one publish behind').toBeGreaterThan(0);
    // The commit of a pull-through is an ordinary publish: its kills hit its swaps too.
    expect(pull!.moments['web-swap'] ?? 0, 'pull-through kills at the web swap').toBeGreaterThan(0);
  });
});
