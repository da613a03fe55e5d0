import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../shared/config.js';
import { parseListing } from './edge-state.js';
import { edgeDoomed } from './edge-retention.js';
import { transportFor } from './transport.js';

const M = (min: number) => `20261202T10${String(min).padStart(2, '0')}00.000Z-000`;

describe('targets: in derrick.yaml', () => {
  it('accepts ssh:// and rsync:// targets, resolves the key next to the config', () => {
    const c = parseConfig(
      'targets:\n  - name: a\n    url: ssh://derrick@edge-a:2222/srv/derrick\n    ssh-key: keys/id\n    bandwidth: 10MiB\n  - name: b\n    url: rsync://edge-b/mod/derrick\n',
      '/etc/derrick/derrick.yaml',
    );
    expect(c.targets.map((t) => [t.name, t['ssh-key'], t.concurrency, t.timeout])).toEqual([
      ['a', '/etc/derrick/keys/id', 2, 30_000],
      ['b', undefined, 2, 30_000],
    ]);
    const ssh = transportFor(c.targets[0]!);
    expect(ssh.root).toBe('derrick@edge-a:/srv/derrick');
    expect(ssh.args).toContain('--bwlimit=5120'); // 10 MiB/s split over 2 transfers, in KiB
    expect(ssh.args.at(-1)).toMatch(/^ssh -o BatchMode=yes .* -p 2222 -i '\/etc\/derrick\/keys\/id'/);
    expect(transportFor(c.targets[1]!).root).toBe('rsync://edge-b/mod/derrick');
  });

  it('names the key of a bad url and of a repeated name', () => {
    const bad = () => parseConfig('targets:\n  - name: a\n    url: http://edge/x\n  - name: a\n    url: rsync://e/m\n', '/x/derrick.yaml');
    expect(bad).toThrow(ConfigError);
    expect(bad).toThrow(/derrick\.yaml:3: targets\[0\]\.url: must be ssh:\/\/USER@HOST/);
    expect(bad).toThrow(/targets\[1\]\.name: repeats targets\[0\]\.name "a"/);    // A user or host that ssh or rsync would take for an option.
    for (const url of ['ssh://-oProxyCommand=x@edge/srv', 'ssh://u@-oProxyCommand=x/srv', 'rsync://-x/mod']) {
      expect(() => parseConfig(`targets:\n  - name: a\n    url: "${url}"\n`, '/x/derrick.yaml'), url).toThrow(/targets\[0\]\.url: must be/);
    }
  });
});

describe('an edge as one rsync listing shows it', () => {
  it('masters are symlinks to their .d directories; temp names are debris', () => {
    const s = parseListing([
      'drwxr-xr-x          4,096 2026/12/02 10:00:00 .',
      `lrwxrwxrwx             24 2026/12/02 10:05:00 master/a~b/${M(1)} -> ${M(1)}.d`,
      `drwxr-xr-x          4,096 2026/12/02 10:05:00 master/a~b/${M(1)}.d`,
      `drwxr-xr-x          4,096 2026/12/02 10:05:00 master/a~b/${M(2)}.d`,
      `lrwxrwxrwx             24 2026/12/02 10:05:00 master/a~b/.${M(2)}.Xy12ab -> ${M(2)}.d`,
      `lrwxrwxrwx             24 2026/12/02 10:05:00 web/a~b -> ../master/a~b/${M(1)}`,
      `lrwxrwxrwx             24 2026/12/02 10:05:00 web/.a~b.Qw3 -> ../master/a~b/${M(2)}`,
      `lrwxrwxrwx             24 2026/12/02 10:05:00 app/a~b.json -> ../master/a~b/${M(1)}/redirect.json`,
    ].join('\n'));
    const r = s.repos.get('a~b')!;
    expect([r.masters, r.dirs, r.web, r.app]).toEqual([[M(1)], [M(1), M(2)], M(1), M(1)]);
    expect(r.debris).toEqual([`master/a~b/.${M(2)}.Xy12ab`]);
    expect(s.debris).toEqual(['web/.a~b.Qw3']);
    expect(r.linkedAt.get(M(1))).toEqual(new Date('2026-12-02T10:05:00'));
  });
});

describe('retention on an edge', () => {
  const edge = (masters: string[], linkedAt: Record<string, Date>, web?: string) => ({
    masters, dirs: masters, debris: [], web, app: web, linkedAt: new Map(Object.entries(linkedAt)),
  });
  it('keeps `keep` earlier masters, and an older one until grace after its successor reached the edge', () => {
    const now = new Date('2026-12-02T12:00:00Z');
    // M(1) and M(2) were built at 10:01/10:02 but reached this edge (down until then) at 11:59.
    const e = edge([M(1), M(2), M(3)], { [M(2)]: new Date('2026-12-02T11:59:00Z'), [M(3)]: new Date('2026-12-02T11:59:30Z') }, M(3));
    expect(edgeDoomed(e, M(4), 0, 10 * 60_000, now)).toEqual([]);
    expect(edgeDoomed(e, M(4), 0, 30_000, now)).toEqual([]);
    expect(edgeDoomed(e, M(4), 0, 20_000, now)).toEqual([M(1), M(2)]);
    expect(edgeDoomed(e, M(4), 1, 0, now)).toEqual([M(1), M(2)]);
  });
  it('times a master out of service from its newest successor, not from a successor a killed push linked', () => {
    const now = new Date('2026-12-02T12:00:00Z');
    // M(2) was linked at 11:00 by a push killed before its web step; M(1) stayed served until M(3)
    // was linked and served at 11:59:50. keep 2 keeps M(2) and M(3); M(1) is within grace.
    const e = edge([M(1), M(2), M(3)], { [M(2)]: new Date('2026-12-02T11:00:00Z'), [M(3)]: new Date('2026-12-02T11:59:50Z') }, M(3));
    expect(edgeDoomed(e, M(4), 2, 60_000, now)).toEqual([]);
    expect(edgeDoomed(e, M(4), 2, 5_000, now)).toEqual([M(1)]);
  });
  it('never drops what the edge served until this push; a master it never served may go', () => {
    // M(2) got its name in a push killed before web moved; M(1) was served until now.
    const e = edge([M(1), M(2)], { [M(2)]: new Date(0) }, M(1));
    expect(edgeDoomed(e, M(5), 0, 0, new Date())).toEqual([M(2)]);
  });
});
