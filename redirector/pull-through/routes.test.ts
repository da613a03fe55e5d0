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

describe('pull-through routes: include, exclude, policy', () => {
  const upstreams = (yaml: string[]) => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'derrick-routes-')), 'derrick.yaml');
    fs.writeFileSync(file, ['root: ./var', 'upstreams:', ...yaml].join('\n'));
    return loadConfig(file).upstreams;
  };

  it('include and exclude are globs over the upstream name (dot names too); exclude wins; the first route that takes a name serves it', () => {
    const routes = createRoutes(upstreams([
      '  - { prefix: hub, url: "http://127.0.0.1:9", include: ["library/*", "team/**"], exclude: ["team/secret/**"] }',
      '  - { prefix: hub, url: "http://127.0.0.1:10" }',
      '  - { prefix: q, url: "https://127.0.0.1:11", policy: Always }',
    ]));
    const at = (name: string) => {
      const m = routes.match(name);
      return m && `${m.route.cfg.url} ${m.upstreamRepo}`;
    };
    expect(at('hub/library/alpine')).toBe('http://127.0.0.1:9 library/alpine');
    expect(at('hub/team/.hidden/x')).toBe('http://127.0.0.1:9 team/.hidden/x');
    expect(at('hub/team/secret/x')).toBe('http://127.0.0.1:10 team/secret/x');
    expect(at('hub/library/a/b')).toBe('http://127.0.0.1:10 library/a/b');
    expect(at('q/x')).toBe('https://127.0.0.1:11 x');
    // The prefix is whole name components: `hubx/...` is not under `hub`, nor is `hub` alone.
    expect(at('hubx/library/alpine')).toBeUndefined();
    expect(at('hub')).toBeUndefined();
    expect(at('hub/')).toBeUndefined();
    expect(at('qx')).toBeUndefined();
    expect(routes.all.map((r) => r.policy)).toEqual(['IfNotPresent', 'IfNotPresent', 'Always']);
  });

  it('an excluded name with no other route is no route at all; --no-fetch / --force-fetch override every policy', () => {
    const ups = upstreams(['  - { prefix: hub, url: "http://127.0.0.1:9", exclude: ["private/**"], policy: Always }']);
    expect(createRoutes(ups).match('hub/private/x')).toBeUndefined();
    expect(createRoutes(ups).match('hub/private/.hidden')).toBeUndefined();
    expect(createRoutes(ups).match('hub/public/x')?.route.policy).toBe('Always');
    expect(createRoutes(ups, 'Never').match('hub/public/x')?.route.policy).toBe('Never');
    expect(createRoutes(ups, 'IfNotPresent').all[0]!.policy).toBe('IfNotPresent');
  });
});
