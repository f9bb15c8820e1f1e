/**
 * A deterministic corpus of compact JWS tokens for the differential test of
 * src/auth/jws-sync.ts against jose (test/unit/auth-jws-differential.test.ts).
 *
 * Every choice (secrets, bit positions, insertion points) comes from one
 * seeded PRNG, so the list of cases and their labels is the same on every run.
 * Key pairs are generated per run (node:crypto has no seeded key generation)
 * and ECDSA/PSS signatures are randomized by nature; no case's expected
 * outcome depends on those bytes.
 *
 * Tokens are built by hand: headers and payloads as raw JSON text (so a case
 * can hold duplicate keys, 1e400 or invalid UTF-8), signed with node:crypto
 * over exactly the parts that end up in the token.
 */
import { constants, createHmac, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';

export interface KeyPair {
  readonly publicKey: KeyObject;
  readonly privateKey: KeyObject;
}

export type SigningAlg =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512'
  | 'ES256' | 'ES384' | 'ES512'
  | 'EdDSA';

export interface CorpusKeys {
  /** HMAC secrets as configured: one without kid, then k1 and k2. */
  readonly secrets: readonly { readonly kid: string | undefined; readonly secret: string }[];
  readonly rsaA: KeyPair;
  readonly rsaB: KeyPair;
  readonly ec256: KeyPair;
  readonly ec384: KeyPair;
  readonly ec521: KeyPair;
  readonly ed25519: KeyPair;
  /** Keys of every type that no configuration holds. */
  readonly strangers: { readonly secret: string; readonly rsa: KeyPair; readonly ec256: KeyPair; readonly ed25519: KeyPair };
}

export interface CorpusCase {
  readonly id: number;
  /** What the case is: `<issuer> <family>: <variant>`. */
  readonly label: string;
  readonly token: string;
}

export interface CorpusOptions {
  readonly seed: number;
  /** The verifier's clock, unix seconds (whole; the test's clock sits a fraction of a second past it). */
  readonly nowSec: number;
  readonly issuer: string;
  readonly audience: string;
}

/** mulberry32: small, fast, good enough to pick positions. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const b64u = (v: string | Uint8Array): string => Buffer.from(v).toString('base64url');

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function randomSecret(rand: () => number, bytes: number): string {
  let s = '';
  for (let i = 0; i < bytes; i++) s += ALPHABET[Math.floor(rand() * 64)];
  return s;
}

export function generateKeys(seed: number): CorpusKeys {
  const rand = prng(seed ^ 0x5eed);
  const rsa = (): KeyPair => generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = (namedCurve: string): KeyPair => generateKeyPairSync('ec', { namedCurve });
  const ed = (): KeyPair => generateKeyPairSync('ed25519');
  return {
    secrets: [
      { kid: undefined, secret: randomSecret(rand, 64) },
      { kid: 'k1', secret: randomSecret(rand, 64) },
      { kid: 'k2', secret: randomSecret(rand, 64) },
    ],
    rsaA: rsa(),
    rsaB: rsa(),
    ec256: ec('P-256'),
    ec384: ec('P-384'),
    ec521: ec('P-521'),
    ed25519: ed(),
    strangers: { secret: randomSecret(rand, 64), rsa: rsa(), ec256: ec('P-256'), ed25519: ed() },
  };
}

const HASH: Readonly<Record<string, string>> = {
  HS256: 'sha256', HS384: 'sha384', HS512: 'sha512',
  RS256: 'sha256', RS384: 'sha384', RS512: 'sha512',
  PS256: 'sha256', PS384: 'sha384', PS512: 'sha512',
  ES256: 'sha256', ES384: 'sha384', ES512: 'sha512',
};

/** The signature bytes an issuer computes for `input` (the `header.payload` text) under `alg`. */
export function signBytes(alg: SigningAlg, key: KeyObject | string | Buffer, input: string, pssSalt?: number): Buffer {
  const data = Buffer.from(input);
  const hash = HASH[alg];
  if (alg.startsWith('HS')) return createHmac(hash!, key as string | Buffer).update(data).digest();
  const k = key as KeyObject;
  if (alg === 'EdDSA') return cryptoSign(null, data, k);
  if (alg.startsWith('ES')) return cryptoSign(hash!, data, { key: k, dsaEncoding: 'ieee-p1363' });
  if (alg.startsWith('PS')) {
    return cryptoSign(hash!, data, { key: k, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pssSalt ?? constants.RSA_PSS_SALTLEN_DIGEST });
  }
  return cryptoSign(hash!, data, { key: k, padding: constants.RSA_PKCS1_PADDING });
}

interface Issuer {
  readonly name: string;
  readonly alg: SigningAlg;
  readonly kid: string | undefined;
  readonly key: KeyObject | string;
}

/** A JSON object as raw text from [key, raw JSON value] pairs (duplicates kept, order kept). */
export function rawObject(pairs: readonly (readonly [string, string])[]): string {
  return `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
}

const j = (v: unknown): string => JSON.stringify(v);

/** Signs raw header and payload parts (already encoded, however oddly) into a token. */
function signed(iss: Issuer, headerPart: string, payloadPart: string, alg: SigningAlg = iss.alg): string {
  const input = `${headerPart}.${payloadPart}`;
  return `${input}.${b64u(signBytes(alg, iss.key, input))}`;
}

/** `part` with the unused low bits of its last character set (same bytes, non-canonical text), when it has unused bits. */
function nonCanonicalTail(part: string): string | undefined {
  const rest = part.length % 4;
  if (rest !== 2 && rest !== 3) return undefined;
  const v = ALPHABET.indexOf(part[part.length - 1]!);
  const mask = rest === 2 ? 0b1111 : 0b11;
  return part.slice(0, -1) + ALPHABET[(v & ~mask) | 1]!;
}

/** DER-encodes a raw r||s ECDSA signature (what an issuer using the wrong format would send). */
function derEcdsa(raw: Buffer): Buffer {
  const half = raw.length / 2;
  const int = (b: Buffer): Buffer => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    let v = b.subarray(i);
    if (v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
    return Buffer.concat([Buffer.from([0x02, v.length]), v]);
  };
  const body = Buffer.concat([int(raw.subarray(0, half)), int(raw.subarray(half))]);
  const len = body.length < 128 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
  return Buffer.concat([Buffer.from([0x30]), len, body]);
}

const CURVE_ORDER: Readonly<Record<string, bigint>> = {
  ES256: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
  ES384: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
  ES512: 0x01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409n,
};

/** (r, n - s): the other valid ECDSA signature of the same message (ECDSA is malleable; JWS does not forbid it). */
function highS(alg: string, raw: Buffer): Buffer {
  const half = raw.length / 2;
  const n = CURVE_ORDER[alg]!;
  const s = BigInt(`0x${raw.subarray(half).toString('hex')}`);
  const s2 = (n - s).toString(16).padStart(half * 2, '0');
  return Buffer.concat([raw.subarray(0, half), Buffer.from(s2, 'hex')]);
}

/** The corpus: every case once; the configurations decide what each should do. */
export function buildCorpus(keys: CorpusKeys, opts: CorpusOptions): CorpusCase[] {
  const rand = prng(opts.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const pos = (n: number): number => Math.floor(rand() * n);
  const cases: { label: string; token: string }[] = [];
  const add = (label: string, token: string): void => {
    cases.push({ label, token });
  };
  const now = opts.nowSec;

  const s0 = keys.secrets[0]!;
  const s1 = keys.secrets[1]!;
  const s2 = keys.secrets[2]!;
  const issuers: Issuer[] = [
    ...(['HS256', 'HS384', 'HS512'] as const).flatMap((alg) => [
      { name: `${alg}/s0`, alg, kid: undefined, key: s0.secret },
      { name: `${alg}/k1`, alg, kid: 'k1', key: s1.secret },
      { name: `${alg}/k2`, alg, kid: 'k2', key: s2.secret },
    ]),
    ...(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const).map((alg) => ({ name: `${alg}/rsaA`, alg, kid: undefined, key: keys.rsaA.privateKey })),
    { name: 'RS256/rsaB', alg: 'RS256', kid: 'rsa-b', key: keys.rsaB.privateKey },
    { name: 'ES256/p256', alg: 'ES256', kid: undefined, key: keys.ec256.privateKey },
    { name: 'ES384/p384', alg: 'ES384', kid: undefined, key: keys.ec384.privateKey },
    { name: 'ES512/p521', alg: 'ES512', kid: undefined, key: keys.ec521.privateKey },
    { name: 'EdDSA/ed25519', alg: 'EdDSA', kid: 'ed', key: keys.ed25519.privateKey },
  ];
  // Header and claim semantics do not depend on the algorithm: they run on one issuer per family and kid rule.
  const representatives = ['HS256/s0', 'HS384/k1', 'HS512/k2', 'RS256/rsaA', 'PS384/rsaA', 'ES256/p256', 'ES512/p521', 'EdDSA/ed25519']
    .map((n) => issuers.find((i) => i.name === n)!);

  const headerPairs = (iss: Issuer, extra: readonly (readonly [string, string])[] = []): [string, string][] => [
    ['alg', j(iss.alg)],
    ['typ', j('JWT')],
    ...(iss.kid !== undefined ? [['kid', j(iss.kid)] as [string, string]] : []),
    ...extra.map(([k, v]) => [k, v] as [string, string]),
  ];
  let subCounter = 0;
  const claimPairs = (extra: readonly (readonly [string, string])[] = [], drop: readonly string[] = []): [string, string][] => {
    subCounter += 1;
    const base: [string, string][] = [
      ['sub', j(`user-${subCounter}`)],
      ['iat', j(now - 10)],
      ['exp', j(now + 600)],
      ['iss', j(opts.issuer)],
      ['aud', j(opts.audience)],
      ['channels', j(['news', 'chat:*'])],
      ['publish', j(['chat:*'])],
    ];
    const overridden = new Set(extra.map(([k]) => k));
    return [...base.filter(([k]) => !drop.includes(k) && !overridden.has(k)), ...extra.map(([k, v]) => [k, v] as [string, string])];
  };
  const valid = (iss: Issuer): string => signed(iss, b64u(rawObject(headerPairs(iss))), b64u(rawObject(claimPairs())));
  const withHeader = (iss: Issuer, headerJson: string | Buffer, payloadJson: string | Buffer = rawObject(claimPairs())): string =>
    signed(iss, b64u(headerJson), b64u(payloadJson));
  const withClaims = (iss: Issuer, pairs: [string, string][]): string => signed(iss, b64u(rawObject(headerPairs(iss))), b64u(rawObject(pairs)));

  // --- Every issuer: the valid token, then mutations of its bytes and characters (not re-signed).
  for (const iss of issuers) {
    const tok = valid(iss);
    add(`${iss.name} valid`, tok);
    const [h, p, s] = tok.split('.') as [string, string, string];
    const sig = Buffer.from(s, 'base64url');

    for (let n = 0; n < 8; n++) {
      const bit = pos(sig.length * 8);
      const flipped = Buffer.from(sig);
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      add(`${iss.name} signature bit flip: bit ${bit}`, `${h}.${p}.${b64u(flipped)}`);
    }
    const sigVariants: [string, Buffer][] = [
      ['last byte dropped', sig.subarray(0, -1)],
      ['first byte dropped', sig.subarray(1)],
      ['first half', sig.subarray(0, sig.length >> 1)],
      ['zero byte appended', Buffer.concat([sig, Buffer.from([0])])],
      ['zero byte prepended', Buffer.concat([Buffer.from([0]), sig])],
      ['all zero', Buffer.alloc(sig.length)],
      ['doubled', Buffer.concat([sig, sig])],
    ];
    for (const [what, v] of sigVariants) add(`${iss.name} signature bytes: ${what}`, `${h}.${p}.${b64u(v)}`);
    add(`${iss.name} signature: empty`, `${h}.${p}.`);

    const partNames = ['header', 'payload', 'signature'] as const;
    for (let i = 0; i < 3; i++) {
      const part = [h, p, s][i]!;
      const put = (v: string): string => [h, p, s].map((x, k) => (k === i ? v : x)).join('.');
      const at = 1 + pos(part.length - 1);
      const insertAt = (c: string): string => part.slice(0, at) + c + part.slice(at);
      const lenMod1 = part.length - ((part.length - 1) % 4);
      const variants: [string, string][] = [
        ['last character dropped', part.slice(0, -1)],
        ['cut to length 4n+1', part.slice(0, lenMod1)],
        ['cut in half', part.slice(0, part.length >> 1)],
        ['one character appended', part + pick(ALPHABET.split(''))],
        ['padding =', part + '='],
        ['padding ==', part + '=='],
        ['padding to a multiple of 4', part + '='.repeat((4 - (part.length % 4)) % 4 || 4)],
        ['space inside', insertAt(' ')],
        ['tab inside', insertAt('\t')],
        ['newline inside', insertAt('\n')],
        ['CRLF at the end', part + '\r\n'],
        ['+ inside', insertAt('+')],
        ['/ inside', insertAt('/')],
        ['= inside', insertAt('=')],
        ['. inside', insertAt('.')],
        ['% inside', insertAt('%')],
        ['* inside', insertAt('*')],
        ['NUL inside', insertAt('\u0000')],
        ['é inside', insertAt('é')],
        ['standard alphabet (- to +, _ to /)', part.replaceAll('-', '+').replaceAll('_', '/')],
        ['one character replaced', (() => {
          const k = pos(part.length);
          const c = ALPHABET[(ALPHABET.indexOf(part[k]!) + 1 + pos(63)) % 64]!;
          return part.slice(0, k) + c + part.slice(k + 1);
        })()],
        ['case of every letter swapped', part.replace(/[a-z]/gi, (c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()))],
      ];
      const tail = nonCanonicalTail(part);
      if (tail !== undefined) variants.push(['non-zero trailing bits', tail]);
      for (const [what, v] of variants) if (v !== part) add(`${iss.name} ${partNames[i]} characters: ${what}`, put(v));
    }

    const structure: [string, string][] = [
      ['two parts (no signature)', `${h}.${p}`],
      ['one part', h],
      ['four parts', `${h}.${p}.${s}.${s}`],
      ['trailing dot', `${tok}.`],
      ['leading dot', `.${tok}`],
      ['five parts (JWE shape)', `${h}..${p}.${s}.${s}`],
      ['empty header', `.${p}.${s}`],
      ['empty payload', `${h}..${s}`],
      ['header and payload swapped', `${p}.${h}.${s}`],
      ['double dot', `${h}..${p}.${s}`],
      ['whitespace around', ` ${tok} `],
    ];
    for (const [what, v] of structure) add(`${iss.name} structure: ${what}`, v);
  }

  // --- Representative issuers: header semantics, re-signed so that only the header decides.
  for (const iss of representatives) {
    const A = iss.alg;
    const kidPairs: [string, string][] = iss.kid !== undefined ? [['kid', j(iss.kid)]] : [];
    const hdr = (pairs: [string, string][]): string => rawObject(pairs);
    const otherAlg = A.startsWith('HS') ? (A === 'HS256' ? 'HS512' : 'HS256') : A.startsWith('RS') ? 'PS256' : A.startsWith('PS') ? 'RS384' : A.startsWith('ES') ? (A === 'ES256' ? 'ES384' : 'ES256') : 'ES256';
    const headers: [string, string][] = [
      ['duplicate alg, none first', hdr([['alg', j('none')], ['alg', j(A)], ...kidPairs])],
      ['duplicate alg, none last', hdr([['alg', j(A)], ['alg', j('none')], ...kidPairs])],
      ['duplicate alg, other algorithm last', hdr([['alg', j(A)], ['alg', j(otherAlg)], ...kidPairs])],
      ['duplicate alg, other algorithm first', hdr([['alg', j(otherAlg)], ['alg', j(A)], ...kidPairs])],
      ['alg lowercase', hdr([['alg', j(A.toLowerCase())], ...kidPairs])],
      ['alg with a trailing space', hdr([['alg', j(`${A} `)], ...kidPairs])],
      ['alg none', hdr([['alg', j('none')], ...kidPairs])],
      ['alg None', hdr([['alg', j('None')], ...kidPairs])],
      ['alg NONE', hdr([['alg', j('NONE')], ...kidPairs])],
      ['alg empty', hdr([['alg', j('')], ...kidPairs])],
      ['alg a number', hdr([['alg', '256'], ...kidPairs])],
      ['alg null', hdr([['alg', 'null'], ...kidPairs])],
      ['alg an array', hdr([['alg', j([A])], ...kidPairs])],
      ['alg missing', hdr([['typ', j('JWT')], ...kidPairs])],
      ['alg written with \\u escapes', `{"alg":"${[...A].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"${iss.kid !== undefined ? `,"kid":${j(iss.kid)}` : ''}}`],
      ['alg ES256K', hdr([['alg', j('ES256K')], ...kidPairs])],
      ['alg Ed25519 (the fully specified name)', hdr([['alg', j('Ed25519')], ...kidPairs])],
      ['alg HS1', hdr([['alg', j('HS1')], ...kidPairs])],
      ['alg RSA-OAEP (a JWE algorithm)', hdr([['alg', j('RSA-OAEP')], ...kidPairs])],
      // crit (RFC 7515 §4.1.11) and b64 (RFC 7797)
      ['crit [b64] with b64 true', hdr([...headerPairs(iss), ['crit', j(['b64'])], ['b64', 'true']])],
      ['crit [b64, b64] with b64 true', hdr([...headerPairs(iss), ['crit', j(['b64', 'b64'])], ['b64', 'true']])],
      ['crit [b64] with b64 false', hdr([...headerPairs(iss), ['crit', j(['b64'])], ['b64', 'false']])],
      ['crit [b64] without b64', hdr([...headerPairs(iss), ['crit', j(['b64'])]])],
      ['crit [b64] with b64 "true"', hdr([...headerPairs(iss), ['crit', j(['b64'])], ['b64', j('true')]])],
      ['crit [b64] with b64 null', hdr([...headerPairs(iss), ['crit', j(['b64'])], ['b64', 'null']])],
      ['crit [b64, x] with both', hdr([...headerPairs(iss), ['crit', j(['b64', 'x'])], ['b64', 'true'], ['x', '1']])],
      ['crit [x] with x', hdr([...headerPairs(iss), ['crit', j(['x'])], ['x', '1']])],
      ['crit [exp]', hdr([...headerPairs(iss), ['crit', j(['exp'])], ['exp', '1']])],
      ['crit [kid]', hdr([...headerPairs(iss), ['crit', j(['kid'])], ['kid', j('k1')]])],
      ['crit [alg]', hdr([...headerPairs(iss), ['crit', j(['alg'])]])],
      ['crit []', hdr([...headerPairs(iss), ['crit', '[]']])],
      ['crit [""]', hdr([...headerPairs(iss), ['crit', j([''])]])],
      ['crit [1]', hdr([...headerPairs(iss), ['crit', '[1]']])],
      ['crit "b64" (not an array)', hdr([...headerPairs(iss), ['crit', j('b64')], ['b64', 'true']])],
      ['crit null', hdr([...headerPairs(iss), ['crit', 'null']])],
      ['crit {}', hdr([...headerPairs(iss), ['crit', '{}']])],
      ['crit false', hdr([...headerPairs(iss), ['crit', 'false']])],
      ['duplicate crit, [] last', hdr([...headerPairs(iss), ['crit', j(['b64'])], ['b64', 'true'], ['crit', '[]']])],
      ['duplicate crit, [b64] last', hdr([...headerPairs(iss), ['crit', j(['x'])], ['b64', 'true'], ['crit', j(['b64'])]])],
      ['b64 false without crit', hdr([...headerPairs(iss), ['b64', 'false']])],
      ['b64 true without crit', hdr([...headerPairs(iss), ['b64', 'true']])],
      ['b64 "no" without crit', hdr([...headerPairs(iss), ['b64', j('no')]])],
      ['b64 null without crit', hdr([...headerPairs(iss), ['b64', 'null']])],
      // kid
      ['kid missing', hdr([['alg', j(A)]])],
      ['kid empty', hdr([['alg', j(A)], ['kid', j('')]])],
      ['kid k1', hdr([['alg', j(A)], ['kid', j('k1')]])],
      ['kid k2', hdr([['alg', j(A)], ['kid', j('k2')]])],
      ['kid unknown', hdr([['alg', j(A)], ['kid', j('k3')]])],
      ['kid K1 (case differs)', hdr([['alg', j(A)], ['kid', j('K1')]])],
      ['kid "k1 " (trailing space)', hdr([['alg', j(A)], ['kid', j('k1 ')]])],
      ['kid a number', hdr([['alg', j(A)], ['kid', '1']])],
      ['kid null', hdr([['alg', j(A)], ['kid', 'null']])],
      ['kid true', hdr([['alg', j(A)], ['kid', 'true']])],
      ['kid an array', hdr([['alg', j(A)], ['kid', j(['k1'])]])],
      ['kid an object', hdr([['alg', j(A)], ['kid', '{}']])],
      ['kid __proto__', hdr([['alg', j(A)], ['kid', j('__proto__')]])],
      ['kid constructor', hdr([['alg', j(A)], ['kid', j('constructor')]])],
      ['kid toString', hdr([['alg', j(A)], ['kid', j('toString')]])],
      ['kid 300 characters', hdr([['alg', j(A)], ['kid', j('k'.repeat(300))]])],
      ['kid 4000 characters', hdr([['alg', j(A)], ['kid', j('x'.repeat(4000))]])],
      ['kid 7000 characters (token over 8192)', hdr([['alg', j(A)], ['kid', j('y'.repeat(7000))]])],
      ['kid with unicode', hdr([['alg', j(A)], ['kid', j('ключ-🔑')]])],
      ['duplicate kid, unknown first', hdr([['alg', j(A)], ['kid', j('k3')], ['kid', j(iss.kid ?? 'k1')]])],
      ['duplicate kid, unknown last', hdr([['alg', j(A)], ['kid', j(iss.kid ?? 'k1')], ['kid', j('k3')]])],
      // typ and parameters nobody here uses
      ['typ jwt', hdr([['alg', j(A)], ['typ', j('jwt')], ...kidPairs])],
      ['typ at+jwt', hdr([['alg', j(A)], ['typ', j('at+jwt')], ...kidPairs])],
      ['typ JOSE+JSON', hdr([['alg', j(A)], ['typ', j('JOSE+JSON')], ...kidPairs])],
      ['typ a number', hdr([['alg', j(A)], ['typ', '1'], ...kidPairs])],
      ['typ null', hdr([['alg', j(A)], ['typ', 'null'], ...kidPairs])],
      ['cty JWT (nested JWT claim)', hdr([...headerPairs(iss), ['cty', j('JWT')]])],
      ['jku to an attacker', hdr([...headerPairs(iss), ['jku', j('https://attacker.example/jwks.json')]])],
      ['x5u to an attacker', hdr([...headerPairs(iss), ['x5u', j('https://attacker.example/cert.pem')]])],
      ['embedded jwk', hdr([...headerPairs(iss), ['jwk', j({ kty: 'oct', k: b64u('attacker') })]])],
      ['x5c garbage', hdr([...headerPairs(iss), ['x5c', j(['MIIB'])]])],
      ['__proto__ with alg none inside', hdr([['__proto__', j({ alg: 'none' })], ...headerPairs(iss)])],
      ['__proto__ holding the only alg', hdr([['__proto__', j({ alg: A })], ...kidPairs])],
      ['a lone surrogate escape in typ', `{"alg":${j(A)},"typ":"\\ud800"${iss.kid !== undefined ? `,"kid":${j(iss.kid)}` : ''}}`],
      ['deeply nested extra parameter', hdr([...headerPairs(iss), ['x', '['.repeat(200) + ']'.repeat(200)]])],
      // not an object, not JSON
      ['an array', j([A])],
      ['null', 'null'],
      ['a number', '1'],
      ['a string', j(A)],
      ['true', 'true'],
      ['{}', '{}'],
      ['empty text', ''],
      ['truncated JSON', hdr(headerPairs(iss)).slice(0, -1)],
      ['JSON then garbage', `${hdr(headerPairs(iss))}x`],
      ['two JSON objects', `${hdr(headerPairs(iss))}{}`],
      ['single quotes', hdr(headerPairs(iss)).replaceAll('"', "'")],
      ['whitespace around the JSON', ` \n${hdr(headerPairs(iss))}\t `],
      ['trailing comma', `${hdr(headerPairs(iss)).slice(0, -1)},}`],
    ];
    for (const [what, json] of headers) add(`${iss.name} header: ${what}`, withHeader(iss, json));
    const headerText = hdr(headerPairs(iss));
    const bytes: [string, Buffer][] = [
      ['UTF-8 BOM first', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(headerText)])],
      ['invalid UTF-8 in a string', Buffer.concat([Buffer.from(headerText.slice(0, -1)), Buffer.from(',"x":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])],
      ['overlong UTF-8 for /', Buffer.concat([Buffer.from(headerText.slice(0, -1)), Buffer.from(',"x":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')])],
      ['UTF-16 encoded', Buffer.from(headerText, 'utf16le')],
      ['NUL after the JSON', Buffer.concat([Buffer.from(headerText), Buffer.from([0])])],
    ];
    for (const [what, b] of bytes) add(`${iss.name} header bytes: ${what}`, withHeader(iss, b));

    // Encodings of header and payload that differ from the canonical base64url, validly signed.
    const payloadText = rawObject(claimPairs());
    for (const [partName, text] of [['header', headerText], ['payload', payloadText]] as const) {
      for (let pad = 0; pad < 3; pad++) {
        // Widen the JSON so that every length class mod 3 (and so every base64url tail) occurs.
        const widened = text.slice(0, -1) + `,"pad":"${'p'.repeat(pad)}"}`;
        const enc = b64u(widened);
        const other = partName === 'header' ? b64u(payloadText) : b64u(headerText);
        const make = (part: string): string => (partName === 'header' ? signed(iss, part, other) : signed(iss, other, part));
        add(`${iss.name} ${partName} encoding: canonical, ${enc.length % 4} tail`, make(enc));
        const tail = nonCanonicalTail(enc);
        if (tail !== undefined) add(`${iss.name} ${partName} encoding: non-zero trailing bits, signed`, make(tail));
        if (enc.length % 4 !== 0) add(`${iss.name} ${partName} encoding: = padding, signed`, make(enc + '='.repeat(4 - (enc.length % 4))));
        add(`${iss.name} ${partName} encoding: a space inside, signed`, make(`${enc.slice(0, 8)} ${enc.slice(8)}`));
        add(`${iss.name} ${partName} encoding: a newline inside, signed`, make(`${enc.slice(0, 8)}\n${enc.slice(8)}`));
        add(`${iss.name} ${partName} encoding: standard base64 alphabet, signed`, make(Buffer.from(widened + '??>>').toString('base64').replace(/=+$/, '')));
      }
    }
  }

  // --- Representative issuers: claims, re-signed so that only the payload decides.
  for (const iss of representatives) {
    const c = (extra: [string, string][], drop: string[] = []): string => withClaims(iss, claimPairs(extra, drop));
    const clock: [string, string][] = [];
    for (const tol of [0, 5, 30]) {
      for (const d of [-1, -0.5, 0, 0.5, 1]) {
        clock.push([`exp = now - ${tol} ${d >= 0 ? '+' : '-'} ${Math.abs(d)}`, c([['exp', j(now - tol + d)]])]);
        clock.push([`nbf = now + ${tol} ${d >= 0 ? '+' : '-'} ${Math.abs(d)}`, c([['nbf', j(now + tol + d)]])]);
      }
    }
    for (const [what, tok] of clock) add(`${iss.name} claims: ${what}`, tok);
    const payloads: [string, string][] = [
      ['exp missing', c([], ['exp'])],
      ['exp null', c([['exp', 'null']])],
      ['exp a string', c([['exp', j(String(now + 600))]])],
      ['exp true', c([['exp', 'true']])],
      ['exp an array', c([['exp', j([now + 600])]])],
      ['exp 0', c([['exp', '0']])],
      ['exp -1', c([['exp', '-1']])],
      ['exp -0', c([['exp', '-0']])],
      ['exp 1e400 (Infinity)', c([['exp', '1e400']])],
      ['exp -1e400', c([['exp', '-1e400']])],
      ['exp in exponent form', c([['exp', `${(now + 600) / 1e9}e9`]])],
      ['exp with .0', c([['exp', `${now + 600}.0`]])],
      ['exp 2^53 + 1', c([['exp', '9007199254740993']])],
      ['exp 1e300', c([['exp', '1e300']])],
      ['nbf null', c([['nbf', 'null']])],
      ['nbf a string', c([['nbf', j(String(now - 10))]])],
      ['nbf 1e400', c([['nbf', '1e400']])],
      ['nbf -1e400', c([['nbf', '-1e400']])],
      ['nbf far past', c([['nbf', '0']])],
      ['iat missing', c([], ['iat'])],
      ['iat in the future', c([['iat', j(now + 3600)]])],
      ['iat a string', c([['iat', j(String(now))]])],
      ['iat null', c([['iat', 'null']])],
      ['iat an object', c([['iat', '{}']])],
      ['iat 1e400', c([['iat', '1e400']])],
      ['iat -1e400', c([['iat', '-1e400']])],
      ['sub missing', c([], ['sub'])],
      ['sub empty', c([['sub', j('')]])],
      ['sub a number', c([['sub', '42']])],
      ['sub null', c([['sub', 'null']])],
      ['sub an array', c([['sub', j(['a'])]])],
      ['sub an object', c([['sub', '{}']])],
      ['sub 5000 characters', c([['sub', j('s'.repeat(5000))]])],
      ['sub with unicode and escapes', c([['sub', '"u\\u00e9\\ud83d\\ude00\\n"']])],
      ['sub a lone surrogate', c([['sub', '"\\udc00"']])],
      ['duplicate sub, empty last', c([['sub', j('a')], ['sub', j('')]])],
      ['duplicate sub, empty first', c([['sub', j('')], ['sub', j('b')]])],
      ['duplicate exp, expired last', c([['exp', j(now + 600)], ['exp', j(now - 600)]])],
      ['duplicate exp, expired first', c([['exp', j(now - 600)], ['exp', j(now + 600)]])],
      ['duplicate iss, wrong last', c([['iss', j(opts.issuer)], ['iss', j('https://evil.example')]])],
      ['duplicate aud, right last', c([['aud', j('other')], ['aud', j(opts.audience)]])],
      ['duplicate channels', c([['channels', j(['a'])], ['channels', j(['*'])]])],
      ['iss missing', c([], ['iss'])],
      ['iss wrong', c([['iss', j('https://evil.example')]])],
      ['iss an array holding it', c([['iss', j([opts.issuer])]])],
      ['iss null', c([['iss', 'null']])],
      ['aud missing', c([], ['aud'])],
      ['aud wrong', c([['aud', j('other')]])],
      ['aud an array holding it', c([['aud', j(['other', opts.audience])]])],
      ['aud an array without it', c([['aud', j(['other'])]])],
      ['aud an array with a number and it', c([['aud', j([1, opts.audience])]])],
      ['aud an empty array', c([['aud', '[]']])],
      ['aud a number', c([['aud', '1']])],
      ['aud differs in case', c([['aud', j(opts.audience.toUpperCase())]])],
      ['channels not an array', c([['channels', j('news')]])],
      ['channels holding a number', c([['channels', j(['news', 1])]])],
      ['publish null', c([['publish', 'null']])],
      ['channels missing and publish missing', c([], ['channels', 'publish'])],
      ['__proto__ claim', c([['__proto__', j({ sub: 'admin', exp: now + 600 })]])],
      ['__proto__ holding the only exp and sub', withClaims(iss, [['__proto__', j({ sub: 'admin', exp: now + 600 })]])],
      ['constructor claim', c([['constructor', j({ prototype: { sub: 'x' } })]])],
      ['hasOwnProperty claim', c([['hasOwnProperty', 'null']])],
    ];
    for (const [what, tok] of payloads) add(`${iss.name} claims: ${what}`, tok);
    const raw: [string, string | Buffer][] = [
      ['an array', j([{ sub: 'a', exp: now + 600 }])],
      ['null', 'null'],
      ['a number', '1'],
      ['a string', j('x')],
      ['{}', '{}'],
      ['empty text', ''],
      ['truncated JSON', rawObject(claimPairs()).slice(0, -1)],
      ['JSON then garbage', `${rawObject(claimPairs())}]`],
      ['whitespace around the JSON', `\r\n ${rawObject(claimPairs())} \t`],
      ['UTF-8 BOM first', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(rawObject(claimPairs()))])],
      ['invalid UTF-8 in sub', Buffer.concat([Buffer.from('{"sub":"a'), Buffer.from([0xe9]), Buffer.from(`","exp":${now + 600},"iss":${j(opts.issuer)},"aud":${j(opts.audience)}}`)])],
      ['a surrogate half encoded in UTF-8 (CESU)', Buffer.concat([Buffer.from('{"sub":"a'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(`","exp":${now + 600},"iss":${j(opts.issuer)},"aud":${j(opts.audience)}}`)])],
      ['NUL after the JSON', Buffer.concat([Buffer.from(rawObject(claimPairs())), Buffer.from([0])])],
    ];
    for (const [what, text] of raw) add(`${iss.name} payload: ${what}`, withHeader(iss, rawObject(headerPairs(iss)), text));
  }

  // --- Algorithm and key-type confusion.
  const payloadPart = (): string => b64u(rawObject(claimPairs()));
  const head = (alg: string, kid?: string): string => b64u(rawObject([['alg', j(alg)], ['typ', j('JWT')], ...(kid !== undefined ? [['kid', j(kid)] as [string, string]] : [])]));
  const sigOf = (alg: SigningAlg, key: KeyObject | string | Buffer, input: string, salt?: number): string => b64u(signBytes(alg, key, input, salt));
  const tokenWith = (headerAlg: string, signAlg: SigningAlg, key: KeyObject | string | Buffer, kid?: string, salt?: number): string => {
    const input = `${head(headerAlg, kid)}.${payloadPart()}`;
    return `${input}.${sigOf(signAlg, key, input, salt)}`;
  };
  const pem = (k: KeyObject, type: 'spki' | 'pkcs1' = 'spki'): string => k.export({ type, format: 'pem' }).toString();
  const der = (k: KeyObject): Buffer => k.export({ type: 'spki', format: 'der' });
  const rsaPub = keys.rsaA.publicKey;
  const confusion: [string, string][] = [];
  for (const hs of ['HS256', 'HS384', 'HS512'] as const) {
    confusion.push(
      [`${hs} keyed with the RSA public key PEM`, tokenWith(hs, hs, pem(rsaPub))],
      [`${hs} keyed with the RSA public key PEM, no trailing newline`, tokenWith(hs, hs, pem(rsaPub).trimEnd())],
      [`${hs} keyed with the RSA public key PKCS#1 PEM`, tokenWith(hs, hs, pem(rsaPub, 'pkcs1'))],
      [`${hs} keyed with the RSA public key DER`, tokenWith(hs, hs, der(rsaPub))],
      [`${hs} keyed with the P-256 public key PEM`, tokenWith(hs, hs, pem(keys.ec256.publicKey))],
      [`${hs} keyed with the Ed25519 public key PEM`, tokenWith(hs, hs, pem(keys.ed25519.publicKey))],
      [`${hs} keyed with the RSA public JWK JSON`, tokenWith(hs, hs, JSON.stringify(rsaPub.export({ format: 'jwk' })))],
      [`${hs} keyed with an empty key`, tokenWith(hs, hs, Buffer.alloc(0))],
      [`${hs} keyed with a stranger secret`, tokenWith(hs, hs, keys.strangers.secret)],
      [`${hs} keyed with s0 under kid k1`, tokenWith(hs, hs, s0.secret, 'k1')],
      [`${hs} keyed with k2's secret under kid k1`, tokenWith(hs, hs, s2.secret, 'k1')],
      [`${hs} keyed with k1's secret, no kid (fallback to kid'd secrets)`, tokenWith(hs, hs, s1.secret)],
      [`${hs} keyed with k2's secret, no kid`, tokenWith(hs, hs, s2.secret)],
      [`${hs} keyed with s0 under kid k3`, tokenWith(hs, hs, s0.secret, 'k3')],
      [`${hs} keyed with s0's secret as a prefix only`, tokenWith(hs, hs, s0.secret.slice(0, 32))],
      [`${hs} keyed with s0 plus a NUL`, tokenWith(hs, hs, `${s0.secret}\u0000`)],
    );
  }
  const mismatches: [string, SigningAlg, KeyObject | string][] = [
    ['HS256', 'HS384', s0.secret],
    ['HS384', 'HS256', s0.secret],
    ['HS512', 'HS256', s0.secret],
    ['RS256', 'HS256', s0.secret],
    ['RS256', 'RS384', keys.rsaA.privateKey],
    ['RS256', 'PS256', keys.rsaA.privateKey],
    ['PS256', 'RS256', keys.rsaA.privateKey],
    ['PS512', 'PS256', keys.rsaA.privateKey],
    ['ES256', 'ES384', keys.ec384.privateKey],
    ['ES384', 'ES256', keys.ec256.privateKey],
    ['ES512', 'ES256', keys.ec256.privateKey],
    ['ES256', 'EdDSA', keys.ed25519.privateKey],
    ['EdDSA', 'ES256', keys.ec256.privateKey],
    ['EdDSA', 'RS256', keys.rsaA.privateKey],
    ['RS256', 'ES256', keys.ec256.privateKey],
    ['none', 'HS256', s0.secret],
    ['none', 'RS256', keys.rsaA.privateKey],
  ];
  for (const [h, sAlg, key] of mismatches) confusion.push([`header ${h}, signed ${sAlg}`, tokenWith(h, sAlg, key)]);
  confusion.push(
    ['alg none, empty signature', `${head('none')}.${payloadPart()}.`],
    ['alg none, signature "e30"', `${head('none')}.${payloadPart()}.e30`],
    ['alg None, empty signature', `${head('None')}.${payloadPart()}.`],
    ['ES256 hashed with SHA-384', (() => {
      const input = `${head('ES256')}.${payloadPart()}`;
      return `${input}.${b64u(cryptoSign('sha384', Buffer.from(input), { key: keys.ec256.privateKey, dsaEncoding: 'ieee-p1363' }))}`;
    })()],
    ['PS256 with salt length 0', tokenWith('PS256', 'PS256', keys.rsaA.privateKey, undefined, 0)],
    ['PS256 with the maximum salt length', tokenWith('PS256', 'PS256', keys.rsaA.privateKey, undefined, constants.RSA_PSS_SALTLEN_MAX_SIGN)],
    ['PS384 with salt length 32', tokenWith('PS384', 'PS384', keys.rsaA.privateKey, undefined, 32)],
    ['RS256 by rsaB under kid rsa-a', tokenWith('RS256', 'RS256', keys.rsaB.privateKey, 'rsa-a')],
    ['RS256 by a stranger RSA key', tokenWith('RS256', 'RS256', keys.strangers.rsa.privateKey)],
    ['PS256 by a stranger RSA key', tokenWith('PS256', 'PS256', keys.strangers.rsa.privateKey)],
    ['ES256 by a stranger P-256 key', tokenWith('ES256', 'ES256', keys.strangers.ec256.privateKey)],
    ['EdDSA by a stranger Ed25519 key', tokenWith('EdDSA', 'EdDSA', keys.strangers.ed25519.privateKey)],
    ['EdDSA under an unknown kid', tokenWith('EdDSA', 'EdDSA', keys.ed25519.privateKey, 'nope')],
  );
  for (const [alg, key] of [['ES256', keys.ec256], ['ES384', keys.ec384], ['ES512', keys.ec521]] as const) {
    const input = `${head(alg)}.${payloadPart()}`;
    const raw = signBytes(alg, key.privateKey, input);
    const half = raw.length / 2;
    confusion.push(
      [`${alg} DER-encoded signature`, `${input}.${b64u(derEcdsa(raw))}`],
      [`${alg} high-S twin of a valid signature`, `${input}.${b64u(highS(alg, raw))}`],
      [`${alg} r and s swapped`, `${input}.${b64u(Buffer.concat([raw.subarray(half), raw.subarray(0, half)]))}`],
      [`${alg} r = 0`, `${input}.${b64u(Buffer.concat([Buffer.alloc(half), raw.subarray(half)]))}`],
      [`${alg} s = n`, `${input}.${b64u(Buffer.concat([raw.subarray(0, half), Buffer.from(CURVE_ORDER[alg]!.toString(16).padStart(half * 2, '0'), 'hex')]))}`],
    );
  }
  {
    const input = `${head('EdDSA')}.${payloadPart()}`;
    const raw = signBytes('EdDSA', keys.ed25519.privateKey, input);
    // S + L: the same point equation, a non-canonical S (RFC 8032 requires S < L).
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;
    const sLE = raw.subarray(32);
    const S = BigInt(`0x${Buffer.from(sLE).reverse().toString('hex')}`);
    const bumped = Buffer.from((S + L).toString(16).padStart(64, '0'), 'hex').reverse();
    confusion.push(
      ['EdDSA with S + L (non-canonical S)', `${input}.${b64u(Buffer.concat([raw.subarray(0, 32), bumped]))}`],
      ['EdDSA with the signature of another message', `${input}.${b64u(signBytes('EdDSA', keys.ed25519.privateKey, `${input}x`))}`],
    );
  }
  for (const [what, tok] of confusion) add(`confusion: ${what}`, tok);

  // --- Odd whole tokens.
  for (const [what, tok] of [
    ['empty', ''],
    ['a dot', '.'],
    ['two dots', '..'],
    ['three dots', '...'],
    ['Bearer prefix kept', `Bearer ${valid(issuers[0]!)}`],
    ['a JWE-shaped token', `${head('RSA-OAEP')}.${b64u('k')}.${b64u('iv')}.${b64u('ct')}.${b64u('tag')}`],
    ['JSON serialization', JSON.stringify({ protected: head('HS256'), payload: payloadPart(), signature: 'x' })],
  ] as const) add(`token: ${what}`, tok);

  return cases.map((c, id) => ({ id, ...c }));
}
