/**
 * Key material for the verifier: HMAC secrets and PEM public keys, and which
 * key may be used with which algorithm.
 */
import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ConfigError, type HmacSecret, type JwtAlgorithm } from '../config.js';

export type HmacAlgorithm = 'HS256' | 'HS384' | 'HS512';

export function isHmacAlgorithm(alg: JwtAlgorithm): alg is HmacAlgorithm {
  return alg === 'HS256' || alg === 'HS384' || alg === 'HS512';
}

const EC_CURVES: Readonly<Record<string, string>> = {
  ES256: 'prime256v1',
  ES384: 'secp384r1',
  ES512: 'secp521r1',
};

/**
 * Whether a public key's type fits an asymmetric algorithm. jose checks this
 * again; filtering here means we only spend signature checks on keys that can
 * possibly verify the token.
 */
export function keyFitsAlgorithm(alg: JwtAlgorithm, key: KeyObject): boolean {
  if (key.type !== 'public') return false;
  const type = key.asymmetricKeyType;
  switch (alg) {
    case 'RS256': case 'RS384': case 'RS512':
    case 'PS256': case 'PS384': case 'PS512':
      return type === 'rsa';
    case 'ES256': case 'ES384': case 'ES512':
      return type === 'ec' && key.asymmetricKeyDetails?.namedCurve === EC_CURVES[alg];
    case 'EdDSA':
      return type === 'ed25519';
    default:
      return false;
  }
}

/** A configured secret, ready for jose. */
interface HmacKey {
  readonly kid: string | undefined;
  readonly key: KeyObject;
}

/**
 * Secret selection, in one place:
 * - HMAC secrets by kid live in a Map (never a plain object: a `kid` of
 *   `__proto__` or `constructor` must not find anything).
 * - A token with a `kid` gets only the secret with that kid; a kid naming no
 *   configured secret gets no candidate at all (401, no fallback), as the
 *   contract says.
 * - A token without a `kid` tries the secrets without a kid first, then the
 *   secrets with a kid, each group in configuration order. Issuers that do not
 *   stamp a kid therefore keep working across a rotation, and the usual case
 *   (one kid-less secret) costs one HMAC.
 */
export class HmacKeyring {
  private readonly byKid = new Map<string, KeyObject>();
  private readonly kidlessOrder: readonly KeyObject[];

  constructor(secrets: readonly HmacSecret[]) {
    const keys: HmacKey[] = secrets.map((s) => ({ kid: s.kid, key: createSecretKey(Buffer.from(s.secret, 'utf8')) }));
    for (const k of keys) if (k.kid !== undefined) this.byKid.set(k.kid, k.key);
    this.kidlessOrder = [
      ...keys.filter((k) => k.kid === undefined).map((k) => k.key),
      ...keys.filter((k) => k.kid !== undefined).map((k) => k.key),
    ];
  }

  get size(): number {
    return this.kidlessOrder.length;
  }

  /** Keys to try for a token; empty when its kid names no configured secret. */
  candidates(kid: string | undefined): readonly KeyObject[] {
    if (kid === undefined) return this.kidlessOrder;
    const key = this.byKid.get(kid);
    return key === undefined ? [] : [key];
  }
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;
const PUBLIC_BLOCKS = new Set(['PUBLIC KEY', 'RSA PUBLIC KEY', 'CERTIFICATE']);

/**
 * Reads every public key from a PEM file (several `BEGIN PUBLIC KEY` blocks
 * allowed; `RSA PUBLIC KEY` and certificates too). Refuses private keys,
 * unsupported key types and RSA keys under 2048 bits, so a bad file stops the
 * process at start instead of failing every handshake.
 */
export async function loadPublicKeys(path: string): Promise<KeyObject[]> {
  const where = `PUBGATE_JWT_PUBLIC_KEYS: ${path}`;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`${where}: cannot read: ${(e as Error).message}`]);
  }
  const problems: string[] = [];
  const keys: KeyObject[] = [];
  let n = 0;
  for (const m of text.matchAll(PEM_BLOCK)) {
    n += 1;
    const label = m[1] ?? '';
    if (!PUBLIC_BLOCKS.has(label)) {
      problems.push(`${where}: block ${String(n)} is "${label}"; give public keys only`);
      continue;
    }
    let key: KeyObject;
    try {
      key = createPublicKey(m[0]);
    } catch (e) {
      problems.push(`${where}: block ${String(n)} is not a valid public key: ${(e as Error).message}`);
      continue;
    }
    const problem = unsupported(key);
    if (problem !== undefined) problems.push(`${where}: block ${String(n)}: ${problem}`);
    else keys.push(key);
  }
  if (n === 0) problems.push(`${where}: no PEM public key found`);
  if (problems.length > 0) throw new ConfigError(problems);
  return keys;
}

function unsupported(key: KeyObject): string | undefined {
  const type = key.asymmetricKeyType;
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    return bits < 2048 ? `RSA key of ${String(bits)} bits; at least 2048 are required` : undefined;
  }
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve ?? '';
    return Object.values(EC_CURVES).includes(curve) ? undefined : `EC curve ${curve} is not supported (P-256, P-384, P-521)`;
  }
  if (type === 'ed25519') return undefined;
  return `key type ${String(type)} is not supported (RSA, EC P-256/P-384/P-521, Ed25519)`;
}
