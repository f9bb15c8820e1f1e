// HS256 JWTs for the benchmark clients, signed with node:crypto (a few µs each,
// done before any timed phase starts).
import { createHmac } from 'node:crypto';

const b64u = (s) => Buffer.from(s).toString('base64url');

export function signHs256(claims, secret, kid) {
  const header = b64u(JSON.stringify(kid ? { alg: 'HS256', typ: 'JWT', kid } : { alg: 'HS256', typ: 'JWT' }));
  const payload = b64u(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

/**
 * A token for benchmark user `sub` that may read every `bench*` channel, valid
 * for `ttlSec`; `info` (an object) becomes its `info` claim, shown in presence.
 */
export function benchToken(secret, sub, ttlSec = 3600, info = undefined) {
  const now = Math.floor(Date.now() / 1000);
  return signHs256({ sub, iat: now, exp: now + ttlSec, channels: ['bench*'], ...(info ? { info } : {}) }, secret);
}
