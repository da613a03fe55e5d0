import { describe, it, expect } from 'vitest';
import { basicHeader, parseWwwAuthenticate, pullScope } from './auth.js';

describe('parseWwwAuthenticate', () => {
  it('reads a docker Bearer challenge, commas inside quotes included', () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        realm: 'https://auth.docker.io/token',
        service: 'registry.docker.io',
        scope: 'repository:library/alpine:pull,push',
      },
    ]);
  });

  it('reads Basic, spaces after commas, unquoted values and the error parameter', () => {
    expect(parseWwwAuthenticate('Basic realm="Registry Realm"')).toEqual([{ scheme: 'basic', realm: 'Registry Realm' }]);
    expect(parseWwwAuthenticate('bearer realm=https://t.example/token, service=reg, error="invalid_token"')).toEqual([
      { scheme: 'bearer', realm: 'https://t.example/token', service: 'reg', error: 'invalid_token' },
    ]);
  });

  it('splits several challenges in one header and drops unknown schemes', () => {
    const got = parseWwwAuthenticate('Negotiate, Basic realm="r", Bearer realm="https://t/x",service="s"');
    expect(got).toEqual([
      { scheme: 'basic', realm: 'r' },
      { scheme: 'bearer', realm: 'https://t/x', service: 's' },
    ]);
  });

  it('ignores a Bearer challenge without a realm and survives garbage', () => {
    expect(parseWwwAuthenticate('Bearer service="s"')).toEqual([]);
    expect(parseWwwAuthenticate('"";;==,,')).toEqual([]);
    expect(parseWwwAuthenticate('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', realm: 'unterminated' }]);
  });
});

describe('helpers', () => {
  it('builds the pull scope and the Basic header', () => {
    expect(pullScope('library/alpine')).toBe('repository:library/alpine:pull');
    expect(basicHeader('user', 'pä:ss')).toBe('Basic ' + Buffer.from('user:pä:ss').toString('base64'));
  });
});
