// The access decision on its own: which published paths are ever served, the 401 body and
// challenge, and the file server's rule with and without signing.
import { describe, expect, it } from 'vitest';
import { RegistryError } from '../shared/errors.js';
import { signPath } from '../shared/signing.js';
import { repoKey } from '../shared/layout.js';
import { decideFileAccess, fileAreaOf, unauthorized, type FileAccessOptions, type FileDecision } from './access.js';

const KEY = repoKey('team/app');

function req(uri: string, query: Record<string, string> = {}, headers: Record<string, string> = {}) {
  const segments = uri.split('/').filter(Boolean);
  return { uri: `/${segments.join('/')}`, segments, header: (n: string) => headers[n], query: (n: string) => query[n] };
}

async function decide(o: Partial<FileAccessOptions>, r: ReturnType<typeof req>): Promise<FileDecision> {
  return decideFileAccess({ anonymous: true, isProtected: () => false, ...o }, r);
}

describe('fileAreaOf', () => {
  it('serves only under master/<key>/ and web/<key>/', () => {
    expect(fileAreaOf(['master', KEY, '20260101T000000Z', 'blobs', 'sha256:ab'])).toEqual({ area: 'master', name: 'team/app' });
    expect(fileAreaOf(['web', KEY, 'blobs', 'sha256:ab'])).toEqual({ area: 'web', name: 'team/app' });
    expect(fileAreaOf(['web', KEY])).toEqual({ area: 'hidden' });
    expect(fileAreaOf(['master', KEY])).toEqual({ area: 'hidden' });
    expect(fileAreaOf(['app', `${KEY}.json`])).toEqual({ area: 'hidden' });
    expect(fileAreaOf(['app', KEY, 'x'])).toEqual({ area: 'hidden' });
  });

  it("hides each master's own redirect.json and redirect.idx, and only those", () => {
    for (const f of ['redirect.json', 'redirect.idx']) {
      expect(fileAreaOf(['master', KEY, '20260101T000000Z', f])).toEqual({ area: 'hidden' });
      expect(fileAreaOf(['web', KEY, f])).toEqual({ area: 'hidden' });
      expect(fileAreaOf(['web', KEY, 'manifests', f])).toEqual({ area: 'web', name: 'team/app' });
    }
    // A tag named redirect.json, and a file of that name deeper down, are content.
    expect(fileAreaOf(['web', KEY, 'manifests', 'redirect.json'])).toEqual({ area: 'web', name: 'team/app' });
    expect(fileAreaOf(['master', KEY, '20260101T000000Z', 'manifests', 'redirect.json'])).toEqual({ area: 'master', name: 'team/app' });
    expect(fileAreaOf(['master', KEY, 'redirect.json'])).toEqual({ area: 'master', name: 'team/app' });
  });
});

describe('unauthorized', () => {
  it('is a 401 with a Basic challenge, naming the repository and the pull action when there is one', () => {
    const e = unauthorized('derrick-test', 'team/app');
    expect(e.status).toBe(401);
    expect(e.headers['WWW-Authenticate']).toBe('Basic realm="derrick-test", charset="UTF-8"');
    expect(e.toJSON().errors[0]!.detail).toEqual([{ Type: 'repository', Name: 'team/app', Action: 'pull' }]);
    expect(unauthorized('derrick-test').toJSON().errors[0]!.detail).toBeNull();
  });
});

describe('decideFileAccess', () => {
  const secret = 'sekrit';
  const masterUri = `/master/${KEY}/20260101T000000Z/blobs/sha256:ab`;

  it('with signing on, every master/ URL needs a valid signature, even for a public repo', async () => {
    const now = () => 1_700_000_000_000;
    const expires = 1_700_000_600;
    const good = new URLSearchParams(signPath(masterUri, secret, expires));
    const q = { md5: good.get('md5')!, expires: good.get('expires')! };
    expect(await decide({ signingSecret: secret, now }, req(masterUri, q))).toBe('ok');
    const unsigned = await decide({ signingSecret: secret, now }, req(masterUri));
    expect(unsigned).toBeInstanceOf(RegistryError);
    expect((unsigned as RegistryError).code).toBe('DENIED');
    // web/ of a public repo stays open with signing on.
    expect(await decide({ signingSecret: secret, now }, req(`/web/${KEY}/blobs/sha256:ab`))).toBe('ok');
    // web/ of a protected repo needs the signature too, not Basic credentials.
    const webUri = `/web/${KEY}/blobs/sha256:ab`;
    const auth = { realm: 'r', check: () => 'alice' };
    const web = await decide({ signingSecret: secret, now, auth, isProtected: () => true }, req(webUri, {}, { authorization: 'Basic any' }));
    expect((web as RegistryError).code).toBe('DENIED');
    const signed = new URLSearchParams(signPath(webUri, secret, expires));
    expect(await decide({ signingSecret: secret, now, auth, isProtected: () => true }, req(webUri, { md5: signed.get('md5')!, expires: signed.get('expires')! }))).toBe('ok');
  });

  it("without an authenticator, a repo that needs proof gets a 401 in derrick's realm", async () => {
    const d = await decide({ isProtected: () => true }, req(`/web/${KEY}/blobs/sha256:ab`));
    expect(d).toBeInstanceOf(RegistryError);
    expect((d as RegistryError).status).toBe(401);
    expect((d as RegistryError).headers['WWW-Authenticate']).toBe('Basic realm="derrick", charset="UTF-8"');
  });

  it('a lookup that throws or rejects counts as protected (fail closed)', async () => {
    const thrown = await decide({ isProtected: () => { throw new Error('index broken'); } }, req(`/web/${KEY}/x`));
    expect((thrown as RegistryError).status).toBe(401);
    const rejected = await decide({ isProtected: () => Promise.reject(new Error('index broken')) }, req(`/web/${KEY}/x`));
    expect((rejected as RegistryError).status).toBe(401);
    expect(await decide({ isProtected: () => Promise.resolve(false) }, req(`/web/${KEY}/x`))).toBe('ok');
  });

  it('Basic credentials are the proof when signing is off', async () => {
    const auth = { realm: 'r', check: (h: string | undefined) => (h === 'Basic good' ? 'alice' : undefined) };
    const r = (h?: string) => req(`/web/${KEY}/x`, {}, h ? { authorization: h } : {});
    expect(await decide({ isProtected: () => true, auth }, r('Basic good'))).toBe('ok');
    expect(((await decide({ isProtected: () => true, auth }, r('Basic bad'))) as RegistryError).headers['WWW-Authenticate']).toContain('realm="r"');
    // serve.anonymous false: even a public repo needs proof.
    expect(((await decide({ anonymous: false, auth }, r())) as RegistryError).status).toBe(401);
  });
});
