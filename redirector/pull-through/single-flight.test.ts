// Single flight: callers with the same key while a flight runs share its promise (and count as
// joins); other keys run their own; once a flight settles, fulfilled or rejected, the key is free
// and the next caller runs the function again.
import { describe, expect, it } from 'vitest';
import { createSingleFlight } from './single-flight.js';

/** A promise the test settles by hand. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

describe('single flight', () => {
  it('joins callers of one key, runs other keys apart, and frees a key once its flight settles', async () => {
    let joins = 0;
    const once = createSingleFlight(() => joins++);
    const calls: string[] = [];
    const a = deferred<string>();
    const b = deferred<string>();
    const run = (key: string, d: { promise: Promise<string> }) => () => (calls.push(key), d.promise);

    const a1 = once('a', run('a', a));
    const a2 = once('a', run('a', a));
    const b1 = once('b', run('b', b));
    expect(calls).toEqual(['a', 'b']);
    expect(joins).toBe(1);
    expect(a2).toBe(a1);

    a.resolve('A');
    b.reject(new Error('upstream failed'));
    expect(await Promise.all([a1, a2])).toEqual(['A', 'A']);
    await expect(b1).rejects.toThrow('upstream failed');

    // Both keys are free again: a fulfilled and a rejected flight alike run anew.
    expect(await once('a', async () => 'A again')).toBe('A again');
    expect(await once('b', async () => 'B again')).toBe('B again');
    expect(joins).toBe(1);
  });

  it('counts nothing without an onJoin and still shares the flight', async () => {
    const once = createSingleFlight();
    let runs = 0;
    const fn = async () => (runs++, 'x');
    expect(await Promise.all([once('k', fn), once('k', fn), once('k', fn)])).toEqual(['x', 'x', 'x']);
    expect(runs).toBe(1);
  });
});
