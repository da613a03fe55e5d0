// derrick.yaml: malformed configs make the real CLI exit 2 with an error naming the file, the
// line and the key; parseConfig's path resolution and defaults; $DERRICK_CONFIG and -c.
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateImage } from '../scripts/gen-image.js';
import { ConfigError, configPath, parseConfig } from '../shared/config.js';
import { derrick } from './helpers/derrick.js';
import { tmpDir, type TmpDir } from './helpers/tmp.js';
import { checkTree } from './helpers/tree.js';

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

interface BadCase {
  name: string;
  yaml: string;
  /** Line the error must name. */
  line: number;
  /** The key path (or YAML error) the message must name, and what it must say. */
  key: string;
  says: RegExp;
}

const repo = (lines: string[]) => ['repos:', '  - name: team/app', '    from: oci:./images/app', ...lines].join('\n') + '\n';

const BAD: BadCase[] = [
  { name: 'bad YAML (nested compact mapping)', yaml: 'root: ./var\n\nkeep: 1: 2\n', line: 3, key: 'invalid YAML', says: /mapping/i },
  { name: 'bad YAML (tab indentation)', yaml: 'root: ./var\nrepos:\n\t- name: a\n', line: 3, key: 'invalid YAML', says: /tab/i },
  { name: 'bad YAML (duplicate key)', yaml: 'keep: 1\nkeep: 2\n', line: 2, key: 'invalid YAML', says: /unique/i },
  { name: 'unknown top-level key', yaml: 'root: ./var\nrepositories: []\n', line: 2, key: 'repositories', says: /unknown key "repositories"/ },
  { name: 'unknown repo key', yaml: repo(['    tagz: [v1]']), line: 4, key: 'repos[0].tagz', says: /unknown key "tagz"/ },
  { name: 'repo-concurrency of 0', yaml: 'root: ./var\nrepo-concurrency: 0\n', line: 2, key: 'repo-concurrency', says: />=\s*1|too small/i },
  { name: 'serve.workers of 0', yaml: 'serve:\n  workers: 0\n', line: 2, key: 'serve.workers', says: />=\s*1|too small/i },
  { name: 'cache.fill-memory that is not a size', yaml: 'cache:\n  fill-memory: lots\n', line: 2, key: 'cache.fill-memory', says: /"lots" is not a size/ },
  { name: 'uppercase repo name', yaml: 'repos:\n  - name: Team/App\n    from: oci:./x\n', line: 2, key: 'repos[0].name', says: /not a valid repository name/ },
  { name: '".." in a repo name', yaml: 'repos:\n  - name: team/../etc\n    from: oci:./x\n', line: 2, key: 'repos[0].name', says: /not a valid repository name/ },
  { name: 'source with an unknown transport', yaml: 'repos:\n  - name: a\n    from: http://x\n', line: 3, key: 'repos[0].from', says: /no known transport/ },
  { name: 'docker:// without a repository', yaml: 'repos:\n  - name: a\n    from: docker://registry.example.com\n', line: 3, key: 'repos[0].from', says: /needs a host and a repository/ },
  { name: 'docker:// with a tag', yaml: 'repos:\n  - name: a\n    from: docker://r.example.com/a:latest\n', line: 3, key: 'repos[0].from', says: /names a tag or digest/ },
  {
    name: 'password-env naming an unset variable',
    yaml: repo(['    auth:', '      username: puller', '      password-env: DERRICK_TEST_UNSET_PASSWORD']),
    line: 6,
    key: 'repos[0].auth.password-env',
    says: /DERRICK_TEST_UNSET_PASSWORD is not set/,
  },
  { name: 'keep: -1', yaml: 'root: ./var\nkeep: -1\n', line: 2, key: 'keep', says: />=\s*0/ },
  { name: 'keep: 1.5', yaml: 'keep: 1.5\n', line: 1, key: 'keep', says: /integer|int/i },
  { name: 'grace: soon', yaml: 'root: ./var\n\ngrace: soon\n', line: 3, key: 'grace', says: /"soon" is not a duration/ },
  {
    name: 'duplicate repo names',
    yaml: 'repos:\n  - name: a\n    from: oci:./x\n  - name: b\n    from: oci:./y\n  - name: a\n    from: oci:./z\n',
    line: 6,
    key: 'repos[2].name',
    says: /repeats repos\[0\]\.name "a"/,
  },
  { name: 'serve.redirect-status: 301', yaml: 'serve:\n  listen: 127.0.0.1:5000\n  redirect-status: 301\n', line: 3, key: 'serve.redirect-status', says: /./ },
  { name: 'serve.blobs: ftp://x', yaml: 'serve:\n  blobs: "ftp://x"\n', line: 2, key: 'serve.blobs', says: /./ },
  { name: 'repos is not a list', yaml: 'repos:\n  team/app: oci:./x\n', line: 2, key: 'repos', says: /array/i },
  { name: 'serve.tls.cert that does not exist', yaml: 'serve:\n  tls:\n    cert: ./no-such.crt\n    key: ./bad-0.yaml\n', line: 3, key: 'serve.tls.cert', says: /cannot read \/.*\/no-such\.crt \(ENOENT\)/ },
  { name: 'serve.tls.key that is a directory', yaml: 'serve:\n  tls:\n    cert: ./bad-0.yaml\n    key: .\n', line: 4, key: 'serve.tls.key', says: /cannot read \/.* \(not a regular file\)/ },
  { name: 'serve.tls without a key', yaml: 'serve:\n  tls:\n    cert: ./bad-0.yaml\n', line: 3, key: 'serve.tls.key', says: /./ },
  { name: 'tls-verify is not a boolean', yaml: repo(['    tls-verify: "no"']), line: 4, key: 'repos[0].tls-verify', says: /boolean/i },
];

describe('malformed derrick.yaml: the CLI exits 2 naming the file, line and key', () => {
  let tmp: TmpDir;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-config');
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  it(`rejects ${BAD.length} malformed configs`, async () => {
    expect(BAD.length).toBeGreaterThanOrEqual(12);
    const results = [];
    // Four CLIs at a time.
    for (let i = 0; i < BAD.length; i += 4) {
      results.push(
        ...(await Promise.all(
          BAD.slice(i, i + 4).map(async (c, j) => {
            const file = path.join(tmp.dir, `bad-${i + j}.yaml`);
            await fs.writeFile(file, c.yaml);
            const r = await derrick(['publish', '-c', file], { cwd: tmp.dir, env: { DERRICK_TEST_UNSET_PASSWORD: undefined, DERRICK_CONFIG: undefined } });
            return { c, file, r };
          }),
        )),
      );
    }
    for (const { c, file, r } of results) {
      const where = `${c.name}:\n${r.stderr}`;
      expect.soft(r.code, where).toBe(2);
      expect.soft(r.stdout, where).toBe('');
      // e.g. "error: /tmp/…/bad-3.yaml:4: repos[0].tagz: unknown key "tagz"", or ":4:17: invalid YAML: …"
      const m = new RegExp(`^error: ${esc(file)}:(\\d+)(?::\\d+)?: ${esc(c.key)}(?::|\\b)(.*)$`, 'm').exec(r.stderr);
      expect.soft(m, where).not.toBeNull();
      if (!m) continue;
      expect.soft(Number(m[1]), where).toBe(c.line);
      expect.soft(m[2], where).toMatch(c.says);
      // Nothing was created next to the config.
      await expect(fs.access(path.join(tmp.dir, 'var'))).rejects.toThrow();
    }
  });

  it('other commands refuse a malformed config the same way, and a missing one', async () => {
    const file = path.join(tmp.dir, 'bad-status.yaml');
    await fs.writeFile(file, 'keep: lots\n');
    for (const cmd of ['status', 'gc']) {
      const r = await derrick([cmd, '-c', file]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`error: ${file}:1: keep:`);
    }
    const missing = path.join(tmp.dir, 'nope.yaml');
    const r = await derrick(['publish', '-c', missing]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`error: ${missing}: cannot read config (ENOENT)`);
  });

  it('a usage error exits 2: unknown option, unknown repo, contradictory flags, bad --wait', async () => {
    const file = path.join(tmp.dir, 'ok.yaml');
    await fs.writeFile(file, 'repos:\n  - name: a\n    from: oci:./x\n');
    const cases: Array<[string[], RegExp]> = [
      [['publish', '-c', file, '--frobnicate'], /unknown option/],
      [['publish', '-c', file, 'b'], /no repo named b/],
      [['publish', '-c', file, '--no-fetch', '--force-fetch'], /exclude each other/],
      [['publish', '-c', file, '--wait', 'a while'], /--wait: "a while" is not a duration/],
      [['serve', '-c', file, '--workers', 'many'], /--workers: "many" is not a number from 1 to 999 or auto/],
    ];
    for (const [args, says] of cases) {
      const r = await derrick(args);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(says);
    }
  });
});

describe('parseConfig', () => {
  it('resolves relative paths against the config file directory, not the cwd', () => {
    const text = [
      'root: ./var',
      'repos:',
      '  - name: a',
      '    from: oci:images/a',
      '  - name: b',
      '    from: oci:/abs/b',
      '  - name: c',
      '    from: docker://r.example.com:5000/team/c',
      'serve:',
      '  htpasswd: ../secrets/htpasswd',
      '  crane-data: crane',
    ].join('\n');
    const cfg = parseConfig(text, '/etc/derrick/derrick.yaml', {});
    expect(cfg.file).toBe('/etc/derrick/derrick.yaml');
    expect(cfg.root).toBe('/etc/derrick/var');
    expect(cfg.repos[0]!.from).toEqual({ transport: 'oci', path: '/etc/derrick/images/a' });
    expect(cfg.repos[1]!.from).toEqual({ transport: 'oci', path: '/abs/b' });
    expect(cfg.repos[2]!.from).toEqual({ transport: 'docker', registry: 'r.example.com:5000', repository: 'team/c' });
    expect(cfg.serve.htpasswd).toBe('/etc/secrets/htpasswd');
    expect(cfg.serve['crane-data']).toBe('/etc/derrick/crane');
  });

  it('fills in defaults and parses durations', () => {
    const cfg = parseConfig('repos:\n  - name: a\n    from: oci:x\n', '/c/derrick.yaml', {});
    expect(cfg).toMatchObject({ root: '/c/var', keep: 2, grace: 600_000, concurrency: 4, 'repo-concurrency': 4 });
    expect(parseConfig('repo-concurrency: 16\n', '/c/d.yaml', {})['repo-concurrency']).toBe(16);
    expect(cfg.repos[0]).toMatchObject({ tags: ['*'], exclude: [], 'tls-verify': true, protected: false });
    expect(cfg.serve).toMatchObject({ listen: '127.0.0.1:5000', blobs: 'embedded', 'redirect-status': 307 });
    expect(parseConfig('grace: 90s\n', '/c/d.yaml', {}).grace).toBe(90_000);
    expect(parseConfig('grace: 1h30m\n', '/c/d.yaml', {}).grace).toBe(5_400_000);
    expect(parseConfig('grace: 0s\nkeep: 0\n', '/c/d.yaml', {})).toMatchObject({ grace: 0, keep: 0 });
    expect(parseConfig('', '/c/d.yaml', {}).repos).toEqual([]);
    expect(cfg.cache).toEqual({ 'fill-memory': 256 * 1024 * 1024 });
    expect(parseConfig('cache:\n  max-size: 50GiB\n  fill-memory: 64MiB\n', '/c/d.yaml', {}).cache).toEqual({ 'max-size': 50 * 1024 ** 3, 'fill-memory': 64 * 1024 ** 2 });
  });

  it('checks password-env against the environment it is given', () => {
    const text = 'repos:\n  - name: a\n    from: docker://r.example.com/a\n    auth:\n      username: u\n      password-env: PW\n';
    expect(() => parseConfig(text, '/c/d.yaml', {})).toThrow(ConfigError);
    expect(() => parseConfig(text, '/c/d.yaml', {})).toThrow('/c/d.yaml:6: repos[0].auth.password-env: environment variable PW is not set');
    expect(parseConfig(text, '/c/d.yaml', { PW: 'x' }).repos[0]!.auth).toEqual({ username: 'u', 'password-env': 'PW' });
  });

  it('configPath: -c, else $DERRICK_CONFIG, else ./derrick.yaml', () => {
    const saved = process.env.DERRICK_CONFIG;
    try {
      process.env.DERRICK_CONFIG = '/from/env.yaml';
      expect(configPath('/explicit.yaml')).toBe('/explicit.yaml');
      expect(configPath()).toBe('/from/env.yaml');
      delete process.env.DERRICK_CONFIG;
      expect(configPath()).toBe(path.resolve('derrick.yaml'));
    } finally {
      if (saved === undefined) delete process.env.DERRICK_CONFIG;
      else process.env.DERRICK_CONFIG = saved;
    }
  });
});

describe('the CLI finds its config', () => {
  let tmp: TmpDir;
  let confDir: string;
  let file: string;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-config-env');
    confDir = path.join(tmp.dir, 'etc');
    file = path.join(confDir, 'derrick.yaml');
    await generateImage({ layoutDir: path.join(confDir, 'images', 'app'), tag: 'v1', layers: [100] });
    await fs.writeFile(file, 'root: ./var\nrepos:\n  - name: team/app\n    from: oci:images/app\n');
    await fs.mkdir(path.join(tmp.dir, 'elsewhere'));
  });
  afterAll(async () => {
    await tmp.cleanup();
  });

  it('from $DERRICK_CONFIG, run from another directory, with paths relative to the file', async () => {
    const r = await derrick(['publish'], { cwd: path.join(tmp.dir, 'elsewhere'), env: { DERRICK_CONFIG: file } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^team\/app: published/m);
    await checkTree(path.join(confDir, 'var'), 'team/app');
    await expect(fs.access(path.join(tmp.dir, 'elsewhere', 'var'))).rejects.toThrow();
  });

  it('-c wins over $DERRICK_CONFIG; without either, ./derrick.yaml', async () => {
    const broken = path.join(tmp.dir, 'broken.yaml');
    await fs.writeFile(broken, 'nonsense: true\n');
    const r = await derrick(['status', '-c', file], { env: { DERRICK_CONFIG: broken } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^team\/app\s+1\s/m);
    const viaEnv = await derrick(['status'], { env: { DERRICK_CONFIG: broken } });
    expect(viaEnv.code).toBe(2);
    expect(viaEnv.stderr).toContain(`${broken}:1: nonsense: unknown key "nonsense"`);
    const viaCwd = await derrick(['status'], { cwd: confDir, env: { DERRICK_CONFIG: undefined } });
    expect(viaCwd.code, viaCwd.stderr).toBe(0);
    expect(viaCwd.stdout).toMatch(/^team\/app\s+1\s/m);
  });
});
