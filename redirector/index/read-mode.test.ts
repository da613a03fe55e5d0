import { describe, expect, it } from 'vitest';
import { createReadMode } from './read-mode.js';

describe('read mode', () => {
  it('reads small files in-thread until one read waits on the disk, then through the pool for a while', () => {
    const m = createReadMode({ maxSize: 100, slowMs: 1, poolMs: 1000 });
    expect(m.inThread(100, 0)).toBe(true);
    expect(m.inThread(101, 0)).toBe(false);
    m.took(0.9, 10);
    expect(m.inThread(50, 11)).toBe(true);
    m.took(1.5, 20);
    expect(m.inThread(50, 21)).toBe(false);
    expect(m.inThread(50, 1019)).toBe(false);
    expect(m.inThread(50, 1020)).toBe(true);
  });
});
