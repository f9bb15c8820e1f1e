/**
 * The client IP for limits and logs: the TCP peer, or — only when the peer is
 * a trusted proxy — the right-most untrusted address of X-Forwarded-For.
 */
import { cidrContains, formatIp, parseIp, type Cidr } from '../net/cidr.js';

export interface ClientAddress {
  /** The address in canonical text (dotted IPv4, compressed lower-case IPv6), for logs. */
  readonly ip: string;
  /**
   * The rate-limit bucket: an IPv4 client (or an IPv4-mapped IPv6 one) by its
   * full address, an IPv6 client by its /64 (`2001:db8:1:2::/64`), since one
   * host commonly holds a whole /64. Derived from the numeric value, so every
   * spelling of the same /64 gives the same text.
   */
  readonly bucket: string;
}

export type ClientIpResolver = (peer: string, forwardedFor: string) => ClientAddress;

const V4_MAPPED_PREFIX = 0xffffn;
const LOW_64 = (1n << 64n) - 1n;

/** The rate-limit bucket of a parsed address (see ClientAddress.bucket). */
export function bucketOf(ip: bigint): string {
  if (ip >> 32n === V4_MAPPED_PREFIX) return formatIp(ip);
  return `${formatIp(ip & ~LOW_64)}/64`;
}

function address(ip: bigint): ClientAddress {
  return { ip: formatIp(ip), bucket: bucketOf(ip) };
}

export function createClientIpResolver(trusted: readonly Cidr[]): ClientIpResolver {
  const isTrusted = (ip: bigint): boolean => trusted.some((c) => cidrContains(c, ip));
  return (peer, forwardedFor) => {
    const peerIp = parseIp(peer);
    // Not an address (uWS gives one for every TCP peer): the text itself, as its own bucket.
    if (peerIp === undefined) return { ip: peer, bucket: peer };
    if (trusted.length === 0 || forwardedFor === '' || !isTrusted(peerIp)) return address(peerIp);
    // Walk from the right: each hop appended the address it saw; stop at the first untrusted one.
    const hops = forwardedFor.split(',');
    let client = peerIp;
    for (let i = hops.length - 1; i >= 0; i--) {
      const ip = parseIp(hops[i] ?? '');
      if (ip === undefined) break;
      client = ip;
      if (!isTrusted(ip)) break;
    }
    return address(client);
  };
}
