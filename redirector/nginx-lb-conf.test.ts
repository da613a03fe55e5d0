import { describe, expect, it } from 'vitest';
import { nginxLbConf, parseUpstreamServers } from './nginx-lb-conf.js';

describe('nginx-conf --upstream-servers', () => {
  it('one upstream with passive checks; a 404 under /published/ tries the next replica', () => {
    const conf = nginxLbConf(parseUpstreamServers('a.example:5000, 10.0.0.2:5000'), { listen: '8080' });
    expect(conf).toContain('server a.example:5000 max_fails=2 fail_timeout=10s;');
    expect(conf).toContain('server 10.0.0.2:5000 max_fails=2 fail_timeout=10s;');
    expect(conf).toMatch(/listen 8080;/);
    expect(conf).toMatch(/location \/published\/ \{[^}]*proxy_next_upstream error timeout http_404/);
    expect(conf).toMatch(/location \/ \{[^}]*proxy_next_upstream error timeout http_502/);
    expect(conf).toContain('option httpchk');
  });
  it('refuses what is not HOST:PORT', () => {
    expect(() => parseUpstreamServers('a.example')).toThrow(/"a\.example" is not HOST:PORT/);
    expect(() => parseUpstreamServers(' , ')).toThrow(/at least one/);
  });
});
