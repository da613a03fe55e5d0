// An IP address or CIDR range, as serve.trusted-proxies lists them (IPv4 or IPv6).
import { isIP } from 'node:net';

export interface AddressRange {
  address: string;
  /** Prefix length; absent for a single address. */
  prefix?: number;
  family: 'ipv4' | 'ipv6';
}

/** The range, or a message that says why the text is not one. */
export function parseAddressRange(text: string): AddressRange | string {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const v = isIP(address);
  if (v === 0) return `"${text}" is not an IP address or CIDR range`;
  const family = v === 4 ? 'ipv4' : 'ipv6';
  if (slash === -1) return { address, family };
  const bits = text.slice(slash + 1);
  const prefix = Number(bits);
  if (!/^\d{1,3}$/.test(bits) || prefix > (v === 4 ? 32 : 128)) return `"${text}" has no valid prefix length (0-${v === 4 ? 32 : 128})`;
  return { address, prefix, family };
}
