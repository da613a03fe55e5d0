import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { NODE_FLAGS, withNodeFlags } from './node-flags.js';

const cliSource = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../cli.ts');

describe('node flags', () => {
  it("cli.ts's shebang passes exactly NODE_FLAGS (env -S splits them)", () => {
    const first = fs.readFileSync(cliSource, 'utf8').split('\n', 1)[0];
    expect(first).toBe(`#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`);
  });

  it('withNodeFlags adds what is missing and keeps what the operator set', () => {
    expect(withNodeFlags([])).toEqual([...NODE_FLAGS]);
    expect(withNodeFlags(['--inspect'])).toEqual(['--inspect', ...NODE_FLAGS]);
    expect(withNodeFlags(['--v8-pool-size=3'])).toEqual(['--v8-pool-size=3']);
    expect(withNodeFlags([...NODE_FLAGS])).toEqual([...NODE_FLAGS]);
  });
});
