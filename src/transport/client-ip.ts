/**
 * The client IP for limits and logs: the TCP peer, or — only when the peer is
 * a trusted proxy — the right-most untrusted address of X-Forwarded-For.
 */
import { cidrContains, formatIp, parseIp, type Cidr } from '../net/cidr.js';

export type ClientIpResolver = (peer: string, forwardedFor: string) => string;

export function createClientIpResolver(trusted: readonly Cidr[]): ClientIpResolver {
  const isTrusted = (ip: bigint): boolean => trusted.some((c) => cidrContains(c, ip));
  return (peer, forwardedFor) => {
    const peerIp = parseIp(peer);
    if (peerIp === undefined) return peer;
    if (trusted.length === 0 || forwardedFor === '' || !isTrusted(peerIp)) return formatIp(peerIp);
    // Walk from the right: each hop appended the address it saw; stop at the first untrusted one.
    const hops = forwardedFor.split(',');
    let client = peerIp;
    for (let i = hops.length - 1; i >= 0; i--) {
      const ip = parseIp(hops[i] ?? '');
      if (ip === undefined) break;
      client = ip;
      if (!isTrusted(ip)) break;
    }
    return formatIp(client);
  };
}
