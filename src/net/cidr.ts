/**
 * IPv4/IPv6 addresses and CIDR ranges, for PUBGATE_TRUSTED_PROXIES.
 * Addresses are compared as 128-bit values; IPv4 is mapped into ::ffff:0:0/96
 * so `127.0.0.1` and `::ffff:127.0.0.1` are the same peer.
 */
export interface Cidr {
  readonly text: string;
  readonly base: bigint;
  readonly bits: number; // prefix length over 128 bits
}

const V4_MAPPED = 0xffffn << 32n;

function parseV4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseV6(s: string): bigint | undefined {
  let head = s;
  let tailV4: bigint | undefined;
  const lastColon = s.lastIndexOf(':');
  if (s.includes('.') && lastColon >= 0) {
    tailV4 = parseV4(s.slice(lastColon + 1));
    if (tailV4 === undefined) return undefined;
    head = s.slice(0, lastColon + 1) + '0:0';
  }
  const halves = head.split('::');
  if (halves.length > 2) return undefined;
  const left = halves[0] === '' ? [] : (halves[0] ?? '').split(':');
  const right = halves.length === 2 ? (halves[1] === '' ? [] : (halves[1] ?? '').split(':')) : [];
  const missing = 8 - left.length - right.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...left, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...right];
  let v = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  if (tailV4 !== undefined) v = (v & ~0xffffffffn) | tailV4;
  return v;
}

/** Parses an IPv4 or IPv6 address to a 128-bit value (IPv4 as v4-mapped). */
export function parseIp(text: string): bigint | undefined {
  const s = text.trim().replace(/^\[|\]$/g, '');
  const v4 = parseV4(s);
  if (v4 !== undefined) return V4_MAPPED | v4;
  if (!s.includes(':')) return undefined;
  return parseV6(s.replace(/%.*$/, ''));
}

export function parseCidr(text: string): Cidr | undefined {
  const [addr, len, extra] = text.trim().split('/');
  if (addr === undefined || extra !== undefined) return undefined;
  const ip = parseIp(addr);
  if (ip === undefined) return undefined;
  const isV4 = parseV4(addr.trim()) !== undefined;
  const max = isV4 ? 32 : 128;
  let prefix = max;
  if (len !== undefined) {
    if (!/^\d{1,3}$/.test(len)) return undefined;
    prefix = Number(len);
    if (prefix > max) return undefined;
  }
  const bits = isV4 ? prefix + 96 : prefix;
  const mask = bits === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - bits)) - 1n);
  return { text: text.trim(), base: ip & mask, bits };
}

export function cidrContains(c: Cidr, ip: bigint): boolean {
  if (c.bits === 0) return true;
  const shift = BigInt(128 - c.bits);
  return ip >> shift === c.base >> shift;
}

/** Canonical text of an address for logs and maps: dotted IPv4 for v4-mapped values. */
export function formatIp(ip: bigint): string {
  if (ip >> 32n === 0xffffn) {
    const v = Number(ip & 0xffffffffn);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((ip >> BigInt(i * 16)) & 0xffffn).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}
