import { describe, expect, it } from 'vitest';
import { formatBytes, parseDuration, parseSize } from './units.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['10m', 600_000],
    ['1h30m', 5_400_000],
    ['2d', 172_800_000],
    ['90', 90_000],
    [45, 45_000],
  ] as const)('%s -> %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it.each(['soon', '10x', '', 'm10', '-5s', '1h junk'])('rejects %j', (text) => expect(parseDuration(text)).toBeNull());
});

describe('parseSize', () => {
  it.each([
    ['50GiB', 50 * 1024 ** 3],
    ['100MB', 100e6],
    ['1.5KiB', 1536],
    ['1024', 1024],
    [2048, 2048],
  ] as const)('%s -> %d bytes', (text, n) => expect(parseSize(text)).toBe(n));

  it.each(['lots', '5XB', '-1'])('rejects %j', (text) => expect(parseSize(text)).toBeNull());

  it('formats bytes for people', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
  });
});
