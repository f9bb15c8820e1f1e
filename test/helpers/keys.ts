/**
 * Token and key material for handshake tests: hand-built JWTs (unsigned, HMAC
 * with arbitrary key bytes, no automatic `exp`), asymmetric key pairs written
 * as PEM files, and a local JWKS endpoint that counts its fetches.
 */
import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, SignJWT, type JWK } from 'jose';
import { TEST_SECRET } from './gateway.js';
import { listenOnLoopback } from './ports.js';

export const nowSec = (): number => Math.floor(Date.now() / 1000);

const b64url = (v: string | Buffer): string => Buffer.from(v).toString('base64url');

/** A compact JWS `header.payload.signature` built by hand (nothing added, nothing checked). */
export function rawJwt(header: Record<string, unknown>, payload: Record<string, unknown>, signature = ''): string {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}.${signature}`;
}

/** `alg: none`, empty signature: the classic unsigned token. */
export function unsignedJwt(payload: Record<string, unknown>): string {
  return rawJwt({ alg: 'none', typ: 'JWT' }, payload);
}

/**
 * An HMAC-signed JWT with exactly the given header and payload (no `exp` or
 * `iat` added), signed with any key bytes: a configured secret, or the bytes
 * of a PEM public key for the algorithm-confusion attack.
 */
export function hmacJwt(
  payload: Record<string, unknown>,
  opts: { key?: string | Buffer; alg?: 'HS256' | 'HS384' | 'HS512'; kid?: string; typ?: string | null } = {},
): string {
  const alg = opts.alg ?? 'HS256';
  const typ = opts.typ === undefined ? 'JWT' : opts.typ;
  const header: Record<string, unknown> = {
    alg,
    ...(typ !== null ? { typ } : {}),
    ...(opts.kid !== undefined ? { kid: opts.kid } : {}),
  };
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  const sig = createHmac(hash, opts.key ?? TEST_SECRET).update(signingInput).digest('base64url');
  return `${signingInput}.${sig}`;
}

/** Claims valid for an hour from now for `sub`. */
export function validClaims(sub: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { sub, iat: nowSec(), exp: nowSec() + 3600, ...extra };
}

export interface KeyPair {
  readonly publicKey: KeyObject;
  readonly privateKey: KeyObject;
}

export const rsaPair = (): KeyPair => generateKeyPairSync('rsa', { modulusLength: 2048 });
export const p256Pair = (): KeyPair => generateKeyPairSync('ec', { namedCurve: 'P-256' });

export const publicPem = (k: KeyPair): string => k.publicKey.export({ type: 'spki', format: 'pem' }).toString();

/** Signs `payload` (no claims added) with an asymmetric private key. */
export function signAsym(alg: 'RS256' | 'PS256' | 'ES256' | 'EdDSA', key: KeyPair, payload: Record<string, unknown>, kid?: string): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT', ...(kid !== undefined ? { kid } : {}) }).sign(key.privateKey);
}

export async function publicJwk(key: KeyPair, kid: string, alg: string): Promise<JWK> {
  return { ...(await exportJWK(key.publicKey)), kid, alg, use: 'sig' };
}

/** A temporary directory, removed by `cleanup`. */
export async function tempDir(prefix = 'pubgate-test-'): Promise<{ dir: string; file(name: string, text: string): Promise<string>; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    async file(name, text) {
      const path = join(dir, name);
      await writeFile(path, text);
      return path;
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A JWKS endpoint on 127.0.0.1 (port 0) serving whatever key set the test sets, counting GETs. */
export interface JwksServer {
  readonly url: string;
  readonly fetches: number;
  serve(keys: JWK[]): void;
  close(): Promise<void>;
}

export async function startJwksServer(): Promise<JwksServer> {
  let body = '{"keys":[]}';
  let fetches = 0;
  const server: Server = createServer((_req, res) => {
    fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  const port = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get fetches() {
      return fetches;
    },
    serve(keys) {
      body = JSON.stringify({ keys });
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
