import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type Config } from '../shared/config.js';
import { MediaType } from '../shared/oci.js';
import { requireTool, run, which } from '../test/helpers/proc.js';
import { tmpDir, type TmpDir } from '../test/helpers/tmp.js';
import { nginxConf } from './nginx-conf.js';

const SECRET = 'top "secret" \\ value';

function config(root: string, signing = false, repos = false): Config {
  const yaml = [`root: ${JSON.stringify(root)}`];
  if (repos) {
    yaml.push('repos:', '  - { name: pub/app, from: "oci:/x" }', '  - { name: priv/app, from: "oci:/y", protected: true }');
    yaml.push('upstreams:', '  - { prefix: hub, url: "https://registry.example" }');
  } else {
    yaml.push('repos: []');
  }
  yaml.push('serve:', '  listen: 127.0.0.1:5000');
  if (repos) yaml.push(`  htpasswd: ${JSON.stringify(path.join(root, 'htpasswd'))}`);
  if (signing) yaml.push('  signing:', '    secret-env: DERRICK_NGINX_TEST_SECRET', '    ttl: 5m');
  return parseConfig(yaml.join('\n') + '\n', path.join(root, 'derrick.yaml'), { DERRICK_NGINX_TEST_SECRET: SECRET });
}

/** The first `location <spec>... {` block (nested braces balanced); spec may be a prefix of the line. */
function block(conf: string, spec: string, from = 0): string {
  const start = conf.indexOf(`location ${spec}`, from);
  if (start === -1) throw new Error(`no location ${spec}`);
  let depth = 0;
  // The block's own brace is the last '{' on its line (regexes may contain braces).
  const eol = conf.indexOf('\n', start);
  for (let i = conf.lastIndexOf('{', eol); i < conf.length; i++) {
    if (conf[i] === '{') depth++;
    else if (conf[i] === '}' && --depth === 0) return conf.slice(start, i + 1);
  }
  throw new Error('unbalanced');
}

describe('nginxConf', () => {
  const root = '/srv/derrick';

  it('serves <root>/published at the prefix with alias, sendfile and symlinks', () => {
    const conf = nginxConf(config(root));
    expect(conf).toMatch(/^server \{$/m);
    expect(conf).toContain('listen 80;');
    const pub = block(conf, '^~ /published/');
    expect(pub).toContain('alias "/srv/derrick/published/";');
    expect(pub).toContain('sendfile on;');
    expect(pub).toContain('tcp_nopush on;');
    expect(pub).toContain('disable_symlinks off;');
    expect(pub).toContain('max_ranges 1;');
    expect(pub).toContain('types { }');
    expect(pub).toContain('default_type application/octet-stream;');
    expect(pub).toContain('try_files $uri =404;');
    expect(pub).toContain('location ~ "/\\." { return 404; }');
    expect(conf).toContain('error_page 404 = @derrick404;');
    expect(conf).toContain('error_page 403 = @derrick403;');
    expect(conf).not.toContain('secure_link');
    expect(conf).not.toContain('proxy_pass');
  });

  it('gives master/ immutable caching and etags, everything else no-cache', () => {
    const conf = nginxConf(config(root));
    const master = block(conf, '^~ /published/master/');
    expect(master).toContain('add_header Cache-Control "public, max-age=31536000, immutable";');
    expect(master).toContain('etag on;');
    expect(master).not.toContain('no-cache');
    expect(block(conf, '^~ /published/')).toContain('etag on;');
    const outside = block(conf, '^~ /published/').replace(master, '');
    expect(outside).toContain('add_header Cache-Control "no-cache";');
    expect(outside).not.toContain('immutable');
  });

  it('sets the content type per manifests/<dir>/ and Docker-Content-Digest from a digest capture', () => {
    const conf = nginxConf(config(root));
    const master = block(conf, '^~ /published/master/');
    const dirs: Record<string, string> = {
      '2': MediaType.dockerManifest,
      list: MediaType.dockerManifestList,
      oci: MediaType.ociManifest,
      'oci-index': MediaType.ociIndex,
    };
    for (const [dir, type] of Object.entries(dirs)) {
      const loc = block(master, `~ "/manifests/${dir}/(?:(?<derrick_digest>`);
      expect(loc).toContain(`default_type ${type};`);
      expect(loc).toContain('add_header Docker-Content-Digest $derrick_digest;');
      expect(loc).toContain('add_header Cache-Control "public, max-age=31536000, immutable";');
    }
    const blobs = block(master, '~ "/blobs/(?:(?<derrick_digest>');
    expect(blobs).toContain('default_type application/octet-stream;');
    expect(blobs).toContain('add_header Docker-Content-Digest $derrick_digest;');
    const json = block(master, '~ "(/tags/list|\\.json)$"');
    expect(json).toContain('default_type application/json;');
    expect(json).not.toContain('Docker-Content-Digest');
  });

  it('answers errors with registry JSON', () => {
    const conf = nginxConf(config(root));
    const e404 = block(conf, '@derrick404');
    expect(e404).toContain('default_type application/json;');
    for (const code of ['BLOB_UNKNOWN', 'MANIFEST_UNKNOWN', 'NAME_UNKNOWN']) expect(e404).toContain(`"code":"${code}"`);
    const e403 = block(conf, '@derrick403');
    expect(e403).toContain('"code":"DENIED"');
    // Every JSON body parses.
    for (const m of conf.matchAll(/return \d{3} '([^']*)'/g)) expect(() => JSON.parse(m[1]!)).not.toThrow();
  });

  it('checks secure_link signatures on master/ when signing is configured', () => {
    const conf = nginxConf(config(root, true), { env: { DERRICK_NGINX_TEST_SECRET: SECRET } });
    expect(conf).toContain('secure_link $arg_md5,$arg_expires;');
    expect(conf).toContain('secure_link_md5 "$secure_link_expires$uri top \\"secret\\" \\\\ value";');
    const master = block(conf, '^~ /published/master/');
    const leaves = master.match(/if \(\$secure_link = ""\) \{ return 403; \}/g) ?? [];
    // The master location itself plus blobs, 4 manifest dirs and json.
    expect(leaves.length).toBe(7);
    expect(master.match(/if \(\$secure_link = "0"\) \{ return 403; \}/g)?.length).toBe(7);
    // web/ of a repo the config doesn't name as public is signed too (access.ts).
    const web = block(conf, '^~ /published/web/');
    expect(web.match(/if \(\$secure_link = ""\) \{ return 403; \}/g)?.length).toBe(7);
    expect(block(conf, '@derrick403')).toContain('signed URL expired');
    expect(conf).toContain('keep this file private');
  });

  it('reads the secret from the given env, and refuses what nginx cannot express', () => {
    const cfg = config(root, true);
    expect(() => nginxConf(cfg, { env: {} })).toThrow(/DERRICK_NGINX_TEST_SECRET is not set/);
    expect(() => nginxConf(cfg, { env: { DERRICK_NGINX_TEST_SECRET: 'a$b' } })).toThrow(/\$/);
    expect(() => nginxConf(cfg, { env: { DERRICK_NGINX_TEST_SECRET: 'a\nb' } })).toThrow(/control/);
    expect(() => nginxConf(config('/srv/$x'))).toThrow(/\$/);
    expect(() => nginxConf(config(root), { listen: '80; evil' })).toThrow(/listen/);
    expect(() => nginxConf(config(root), { proxy: 'a b:1' })).toThrow(/proxy/);
    expect(() => nginxConf(config(root), { prefix: 'no-slash' })).toThrow(/prefix/);
  });

  it('proxies /v2/ to derrick serve when asked', () => {
    const conf = nginxConf(config(root), { listen: '0.0.0.0:8080', proxy: '127.0.0.1:5000' });
    expect(conf).toContain('listen 0.0.0.0:8080;');
    const v2 = block(conf, '/v2/');
    expect(v2).toContain('proxy_pass http://127.0.0.1:5000;');
    expect(v2).toContain('proxy_set_header Host $http_host;');
    expect(v2).toContain('proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;');
    expect(v2).toContain('proxy_buffering off;');
  });

  it('guards master/ and web/ by default and opens them per public repo and cache prefix (access.ts)', () => {
    const yaml = [
      `root: ${root}`,
      'repos:',
      '  - { name: pub/app, from: "oci:/x" }',
      '  - { name: hub/mine, from: "oci:/y", protected: true }',
      'upstreams:',
      '  - { prefix: hub, url: "https://registry.example" }',
      'serve:',
      '  htpasswd: /etc/derrick/htpasswd',
      '',
    ].join('\n');
    const cfg = parseConfig(yaml, path.join(root, 'derrick.yaml'), {});
    const conf = nginxConf(cfg);
    expect(conf).toContain('location ^~ /published/app/ { return 404; }');
    for (const top of ['master', 'web']) {
      const guarded = block(conf, `^~ /published/${top}/ {`);
      expect(guarded).toContain('auth_basic "derrick";');
      expect(guarded).toContain('auth_basic_user_file "/etc/derrick/htpasswd";');
      expect(block(conf, `^~ /published/${top}/pub~app/ {`)).not.toContain('auth_basic');
      expect(block(conf, `^~ /published/${top}/hub~ {`)).not.toContain('auth_basic');
      // A protected repo under a public cache prefix is named explicitly: the longest prefix wins.
      expect(block(conf, `^~ /published/${top}/hub~mine/ {`)).toContain('auth_basic "derrick";');
    }
    expect(conf).toContain('location ~ "^/published/(master/[^/]+/[^/]+|web/[^/]+)/(redirect\\.json|redirect\\.idx)$" { return 404; }');
    expect(block(conf, '@derrick401')).toContain('"code":"UNAUTHORIZED"');
    // serve.anonymous false: no public exceptions.
    const closed = nginxConf(parseConfig(yaml.replace('serve:', 'serve:\n  anonymous: false'), path.join(root, 'derrick.yaml'), {}));
    expect(closed).not.toContain('pub~app');
    expect(closed).not.toContain('hub~');
  });

  it('honours a custom prefix', () => {
    const conf = nginxConf(config(root), { prefix: '/files/' });
    expect(block(conf, '^~ /files/')).toContain('alias "/srv/derrick/published/";');
    block(conf, '^~ /files/master/');
    expect(conf).not.toContain('/published/ {');
  });
});

describe('nginxConf with tls', () => {
  let tmp: TmpDir;
  let tlsConfig: Config;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-nginx-conf-tls');
    // parseConfig checks that the files are readable; nginxConf only names them.
    await fs.mkdir(path.join(tmp.dir, 'pki'));
    await fs.writeFile(path.join(tmp.dir, 'pki', 'server.crt'), 'cert');
    await fs.writeFile(path.join(tmp.dir, 'pki', 'server.key'), 'key');
    const yaml = ['root: ./var', 'serve:', '  tls:', '    cert: pki/server.crt', '    key: ./pki/server.key'].join('\n');
    tlsConfig = parseConfig(yaml + '\n', path.join(tmp.dir, 'derrick.yaml'));
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  it('listens with ssl on 443 by default and names serve.tls cert and key (resolved against the config file)', () => {
    const conf = nginxConf(tlsConfig, { tls: true });
    expect(conf).toContain('listen 443 ssl;');
    expect(conf).toContain(`ssl_certificate "${path.join(tmp.dir, 'pki', 'server.crt')}";`);
    expect(conf).toContain(`ssl_certificate_key "${path.join(tmp.dir, 'pki', 'server.key')}";`);
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    expect(nginxConf(tlsConfig, { tls: true, listen: '127.0.0.1:8443' })).toContain('listen 127.0.0.1:8443 ssl;');
  });

  it('keeps the same locations as the plain server block', () => {
    const strip = (c: string) => c.split('\n').filter((l) => !/^\s*(listen|ssl_|# nginx re-reads)/.test(l)).join('\n');
    expect(strip(nginxConf(tlsConfig, { tls: true }))).toBe(strip(nginxConf(tlsConfig)));
  });

  it('proxies /v2/ over https, since derrick serve with serve.tls speaks only TLS', () => {
    expect(block(nginxConf(tlsConfig, { proxy: '127.0.0.1:5000' }), '/v2/')).toContain('proxy_pass https://127.0.0.1:5000;');
  });

  it('refuses --tls without serve.tls, naming the config file', () => {
    expect(() => nginxConf(config('/srv/derrick'), { tls: true })).toThrow(/--tls needs serve\.tls .* \/srv\/derrick\/derrick\.yaml/);
  });
});

const hasNginx = requireTool('nginx', 'nginx -t of the generated config is skipped');

describe.skipIf(!hasNginx)('nginx -t', () => {
  let tmp: TmpDir;
  beforeAll(async () => {
    tmp = await tmpDir('derrick-nginx-conf-test');
    await fs.mkdir(path.join(tmp.dir, 'root', 'published'), { recursive: true });
    await fs.mkdir(path.join(tmp.dir, 'tmp'), { recursive: true });
  });
  afterAll(async () => {
    await tmp?.cleanup();
  });

  const variants: [string, boolean, { proxy?: string; prefix?: string; repos?: boolean }][] = [
    ['plain', false, {}],
    ['public and protected repos, auth_basic', false, { repos: true }],
    ['public and protected repos, signed', true, { repos: true }],
    ['signed + proxy', true, { proxy: '127.0.0.1:5000' }],
    ['custom prefix', true, { prefix: '/p' }],
  ];
  for (const [name, signing, extra] of variants) {
    it(`accepts the ${name} config`, async () => {
      const dir = tmp.dir;
      const { repos, ...opts } = extra;
      const server = nginxConf(config(path.join(dir, 'root'), signing, repos), {
        listen: '127.0.0.1:8080',
        env: { DERRICK_NGINX_TEST_SECRET: SECRET },
        ...opts,
      });
      const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${path.join(dir, 'tmp', t)};`);
      const main = [
        `pid ${path.join(dir, 'nginx.pid')};`,
        `error_log ${path.join(dir, 'error.log')};`,
        'events {}',
        'http {',
        '  include /etc/nginx/mime.types;',
        `  access_log ${path.join(dir, 'access.log')};`,
        ...temp,
        server,
        '}',
      ].join('\n');
      const file = path.join(dir, `nginx-${name.replace(/\W+/g, '-')}.conf`);
      await fs.writeFile(file, main);
      const res = await run(which('nginx')!, ['-t', '-q', '-p', dir + '/', '-c', file, '-e', path.join(dir, 'error.log')]);
      expect(res.stderr + res.stdout).toBe('');
      expect(res.code).toBe(0);
    });
  }
});
