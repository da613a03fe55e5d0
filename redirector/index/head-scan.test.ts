// scanHead against JSON.parse: whatever it answers must be what a full parse says (the last
// duplicate wins), and it says "unsure" (undefined) whenever it can't know.
import { describe, expect, it } from 'vitest';
import { scanHead } from './head-scan.js';

const KEYS = ['repo-registry-id', 'protected', 'version'] as const;

/** The property: undefined, or exactly the full parse's values of KEYS. */
function agrees(buf: Buffer): Map<string, unknown> | undefined {
  const got = scanHead(buf, KEYS);
  if (got) {
    const full = JSON.parse(buf.toString('utf8')) as Record<string, unknown>;
    for (const k of KEYS) {
      expect(got.has(k), `${k} in ${buf.toString('utf8').slice(0, 120)}`).toBe(k in full);
      if (k in full) expect(got.get(k)).toEqual(full[k]);
    }
  }
  return got;
}
const text = (s: string) => agrees(Buffer.from(s));

describe('scanHead', () => {
  it('answers from the scalars before the first array, as a full parse would', () => {
    expect(text('{"version":4,"repo-registry-id":"a/b","protected":true,"schema2_data":["x"]}')?.get('protected')).toBe(true);
    expect(text('{"version": 2, "protected": false, "protected": true}')?.get('protected')).toBe(true);
    expect(text('{"version":4}')?.has('protected')).toBe(false);
  });

  it('is unsure when a key it wants may come after the first array or object', () => {
    expect(text('{"protected":false,"x":[1],"protected":true}')).toBeUndefined();
    expect(text('{"protected":false,"x":{"a":1},"prot\\u0065cted":true}')).toBeUndefined();
    expect(text('{"protected":false,"x":["\\u0041"]}')).toBeUndefined();
    // A mention inside a value is enough to be unsure (a full parse settles it).
    expect(text('{"protected":false,"x":["protected"]}')).toBeUndefined();
  });

  it('reads scalars that run past the first decoded part, and a character cut at its end', () => {
    const long = 'é'.repeat(1500); // 3000 bytes: the first 2048 end inside a character
    for (let pad = 0; pad < 4; pad++) {
      const s = `{"url":"${'x'.repeat(pad)}${long}","protected":true,"version":3,"d":[1]}`;
      expect(text(s)?.get('protected')).toBe(true);
    }
    expect(text(`${' '.repeat(3000)}{"version":4,"protected":false}`)?.get('protected')).toBe(false);
  });

  it('is unsure about a key past 64 KiB, and after bytes that are not UTF-8', () => {
    expect(text(`{"protected":false,"x":"${'a'.repeat(70_000)}","protected":true}`)).toBeUndefined();
    expect(text(`{"protected":false,"x":["${'a'.repeat(70_000)}"],"protected":true}`)).toBeUndefined();
    // Six bytes that decode to six U+FFFD (18 bytes): an offset taken from the decoded text would
    // skip past the second "protected".
    const bad = Buffer.concat([Buffer.from('{"url":"a'), Buffer.alloc(6, 0xff), Buffer.from('","protected":false,"d":[],"protected":true}')]);
    expect(agrees(bad)).toBeUndefined();
  });

  it('agrees with JSON.parse on generated files with duplicates, escapes and nesting', () => {
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    const keyText = ['"protected"', '"version"', '"repo-registry-id"', '"prot\\u0065cted"', '"url"', '"x"'];
    const values = ['true', 'false', 'null', '4', '"a/b"', '[1,"protected"]', '{"protected":true}', '"\\u00e9"', `"${'z'.repeat(2100)}"`];
    let sure = 0;
    for (let i = 0; i < 500; i++) {
      const members = Array.from({ length: 1 + rand(6) }, () => `${keyText[rand(keyText.length)]}:${' '.repeat(rand(3))}${values[rand(values.length)]}`);
      if (agrees(Buffer.from(`{${members.join(',')}}`))) sure++;
    }
    // Most generated files put a non-scalar or an escape early; enough are sure to exercise the fast path.
    expect(sure).toBeGreaterThan(50);
  });
});
