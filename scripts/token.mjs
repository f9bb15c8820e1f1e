#!/usr/bin/env node
// Prints a signed HS* JWT for pubgate.
//   npm run token -- --sub alice --channels 'news,chat:*' [--publish 'chat:*'] [--ttl 3600]
// The secret comes from --secret, else the first entry of PUBGATE_JWT_SECRETS,
// else config/development.json (the quick-start setup). `kid:secret` entries set the kid.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';

const { values } = parseArgs({
  options: {
    sub: { type: 'string' },
    channels: { type: 'string', default: '' },
    publish: { type: 'string', default: '' },
    ttl: { type: 'string', default: '3600' },
    secret: { type: 'string' },
    kid: { type: 'string' },
    alg: { type: 'string', default: 'HS256' },
    iss: { type: 'string' },
    aud: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});

if (values.help || !values.sub) {
  process.stderr.write("usage: npm run token -- --sub USER [--channels 'news,chat:*'] [--publish 'chat:*'] [--ttl SECONDS] [--secret S] [--kid K] [--alg HS256|HS384|HS512] [--iss I] [--aud A]\n");
  process.exit(values.help ? 0 : 2);
}

function firstSecret() {
  if (values.secret) return { kid: values.kid, secret: values.secret };
  let list = process.env.PUBGATE_JWT_SECRETS;
  if (!list) {
    const file = process.env.PUBGATE_CONFIG ?? new URL('../config/development.json', import.meta.url);
    list = JSON.parse(readFileSync(file, 'utf8')).jwtSecrets;
  }
  const entry = (Array.isArray(list) ? list : String(list).split(','))[0]?.trim();
  if (!entry) throw new Error('no secret: pass --secret or set PUBGATE_JWT_SECRETS');
  const colon = entry.indexOf(':');
  return colon > 0 ? { kid: values.kid ?? entry.slice(0, colon), secret: entry.slice(colon + 1) } : { kid: values.kid, secret: entry };
}

const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const ttl = Number(values.ttl);
if (!Number.isInteger(ttl) || ttl <= 0) {
  process.stderr.write('--ttl must be a positive number of seconds\n');
  process.exit(2);
}
const { kid, secret } = firstSecret();
const claims = { channels: list(values.channels) };
if (values.publish) claims.publish = list(values.publish);
let jwt = new SignJWT(claims)
  .setProtectedHeader(kid ? { alg: values.alg, kid } : { alg: values.alg })
  .setSubject(values.sub)
  .setIssuedAt()
  .setExpirationTime(Math.floor(Date.now() / 1000) + ttl);
if (values.iss) jwt = jwt.setIssuer(values.iss);
if (values.aud) jwt = jwt.setAudience(values.aud);
process.stdout.write((await jwt.sign(new TextEncoder().encode(secret))) + '\n');
