import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.js';
import { createRoutes } from './routes.js';

describe('pull-through routes', () => {
  const config = () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'derrick-routes-')), 'derrick.yaml');
    fs.writeFileSync(
      file,
      [
        'root: ./var',
        'repos:',
        '  - { name: hub/mine, from: "oci:/tmp/x", protected: true }',
        'upstreams:',
        '  - { prefix: hub, url: "http://127.0.0.1:9" }',
      ].join('\n'),
    );
    return loadConfig(file);
  };

  it('matches names under a prefix', () => {
    const c = config();
    const routes = createRoutes(c.upstreams, undefined, new Set(c.repos.map((r) => r.name)));
    expect(routes.match('hub/library/alpine')?.upstreamRepo).toBe('library/alpine');
    expect(routes.match('other/x')).toBeUndefined();
  });

  it("never takes a published repo under its prefix for a cache repo (it would serve, republish or unpublish the publisher's repo, protection and all)", () => {
    const c = config();
    const routes = createRoutes(c.upstreams, undefined, new Set(c.repos.map((r) => r.name)));
    expect(routes.match('hub/mine')).toBeUndefined();
    expect(routes.match('hub/mine2')?.upstreamRepo).toBe('mine2');
  });
});
