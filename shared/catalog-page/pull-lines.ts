// The pull commands a person copies, built from the host clients reach derrick at.

export interface PullLine {
  client: 'docker' | 'podman' | 'skopeo' | 'ctr';
  line: string;
}

/** `ref`: ":<tag>" or "@<digest>" appended to the name; "<tag>" placeholders pass through. */
export function pullLines(host: string, name: string, ref: string, plainHttp: boolean): PullLine[] {
  const image = `${host}/${name}${ref}`;
  const local = `${name.slice(name.lastIndexOf('/') + 1)}${ref.startsWith(':') ? ref : ''}`;
  return [
    { client: 'docker', line: `docker pull ${image}` },
    { client: 'podman', line: `podman pull ${plainHttp ? '--tls-verify=false ' : ''}${image}` },
    { client: 'skopeo', line: `skopeo copy ${plainHttp ? '--src-tls-verify=false ' : ''}docker://${image} oci:${local}` },
    { client: 'ctr', line: `ctr images pull ${plainHttp ? '--plain-http ' : ''}${image}` },
  ];
}

/** host[:port] of a public URL, and whether it is plain http. */
export function registryHostOf(origin: string): { registryHost: string; plainHttp: boolean } {
  const u = new URL(origin);
  return { registryHost: u.host, plainHttp: u.protocol === 'http:' };
}
