/**
 * Handshake rules 2, 3 and 5 with HMAC secrets, against real gateway
 * processes: where the token comes from (and in which order), the subprotocol
 * answer, token length, claims, issuer/audience, kid selection, anonymous
 * connections, and the metrics and log lines a handshake leaves (never the
 * token). Public-key verification (PEM, JWKS) is in handshake-keys.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, refused, token, type Client, type ConnectOptions } from '../helpers/client.js';
import { metric, TEST_SECRET, type GatewayProcess } from '../helpers/gateway.js';
import { expectRejectLogged, logAfter, logMark, rawUpgrade, startGateways } from '../helpers/handshake.js';
import { hmacJwt, nowSec, unsignedJwt, validClaims } from '../helpers/keys.js';

let main: GatewayProcess; // defaults: HS256 with TEST_SECRET, no anonymous
let anon: GatewayProcess; // allowAnonymous, anonymousChannels public:*,news
let issAud: GatewayProcess; // jwtIssuer / jwtAudience
let kids: GatewayProcess; // k1:secretA,k2:secretB

const ISSUER = 'https://issuer.example.test/';
const AUDIENCE = 'pubgate-test';

beforeAll(async () => {
  [main, anon, issAud, kids] = await startGateways([
    {},
    { PUBGATE_ALLOW_ANONYMOUS: 'true', PUBGATE_ANONYMOUS_CHANNELS: 'public:*,news' },
    { PUBGATE_JWT_ISSUER: ISSUER, PUBGATE_JWT_AUDIENCE: AUDIENCE },
    { PUBGATE_JWT_SECRETS: 'k1:secretA,k2:secretB' },
  ]);
});
afterAll(async () => {
  await Promise.all([main, anon, issAud, kids].map((g) => g?.stop()));
});

/** Options for an attempt; `query` is appended to the /ws URL (to add a second token source). */
type Attempt = ConnectOptions & { readonly query?: string };

const target = (gw: GatewayProcess, o: Attempt): string => (o.query !== undefined ? `${gw.url}?${o.query}` : gw.url);

async function expectWelcome(gw: GatewayProcess, o: Attempt, user: string): Promise<Client> {
  const c = await connect(target(gw, o), o);
  expect(c.welcome).toMatchObject({ type: 'welcome', user });
  return c;
}

/** Connects, checks the welcome names `user`, closes. */
async function expectAccepted(gw: GatewayProcess, o: Attempt, user: string): Promise<void> {
  await (await expectWelcome(gw, o, user)).close();
}

/**
 * The upgrade must be refused with 401 `unauthorized` and the JSON error body,
 * and leave one `handshake rejected` warn line (with `reason` when given).
 * Waiting for the line also keeps each test's log lines out of the next one.
 */
async function expect401(gw: GatewayProcess, o: Attempt, reason?: string): Promise<void> {
  const mark = logMark(gw);
  const r = await refused(target(gw, o), o);
  expect(r.status).toBe(401);
  expect(r.headers['content-type']).toBe('application/json');
  expect(r.body).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
  await expectRejectLogged(gw, mark, 'unauthorized', reason);
}

/** A valid HS256 token (TEST_SECRET) of exactly `length` characters; a `pad` claim fills it. */
function tokenOfLength(length: number, sub: string): string {
  // base64url never yields a length of 4k+1, so try two header sizes.
  for (const typ of ['JWT', null]) {
    for (let n = Math.floor(((length - 120) * 3) / 4) - 100; n < length; n++) {
      const t = hmacJwt({ ...validClaims(sub), pad: 'x'.repeat(n) }, { typ });
      if (t.length === length) return t;
      if (t.length > length) break;
    }
  }
  throw new Error(`cannot build a token of ${length} characters`);
}

describe('token sources', () => {
  it('accepts the token from the Authorization: Bearer header', async () => {
    await expectAccepted(main, { token: await token({ sub: 'via-header' }), via: 'header' }, 'via-header');
  });

  it('accepts the token from a bearer.<jwt> subprotocol entry', async () => {
    await expectAccepted(main, { token: await token({ sub: 'via-protocol' }), via: 'subprotocol' }, 'via-protocol');
  });

  it('accepts the token from the access_token query parameter', async () => {
    await expectAccepted(main, { token: await token({ sub: 'via-query' }), via: 'query' }, 'via-query');
  });

  it('takes the header first: a valid header wins over a bad subprotocol entry and query', async () => {
    const good = await token({ sub: 'order-1' });
    await expectAccepted(main, { token: good, via: 'header', protocols: ['pubgate.v1', 'bearer.bad.token.x'] }, 'order-1');
    await expectAccepted(main, { token: good, via: 'header', query: 'access_token=not-a-token' }, 'order-1');
  });

  it('does not fall back: a bad header token is 401 even with a valid subprotocol or query token', async () => {
    const good = await token({ sub: 'order-2' });
    await expect401(main, { via: 'header', token: 'bad.token.x', protocols: ['pubgate.v1', `bearer.${good}`] });
    await expect401(main, { via: 'header', token: 'bad.token.x', query: `access_token=${good}` });
  });

  it('takes the subprotocol before the query', async () => {
    const good = await token({ sub: 'order-3' });
    await expectAccepted(main, { token: good, via: 'subprotocol', query: 'access_token=not-a-token' }, 'order-3');
    await expect401(main, { token: 'bad.token.x', via: 'subprotocol', query: `access_token=${good}` });
  });
});

describe('subprotocol', () => {
  it('selects pubgate.v1 when offered and never echoes the bearer entry', async () => {
    const c = await expectWelcome(main, { token: await token({ sub: 'proto-1' }), via: 'subprotocol' }, 'proto-1');
    expect(c.ws.protocol).toBe('pubgate.v1');
    await c.close();
    const t = await token({ sub: 'proto-2' });
    for (const offered of [`pubgate.v1, bearer.${t}`, `bearer.${t}, pubgate.v1`]) {
      const r = await rawUpgrade(main.url, { 'sec-websocket-protocol': offered });
      expect(r.status).toBe(101);
      expect(r.headers['sec-websocket-protocol']).toBe('pubgate.v1');
    }
  });

  it('answers a client offering only bearer.<jwt> with no subprotocol at all', async () => {
    const t = await token({ sub: 'proto-3' });
    const r = await rawUpgrade(main.url, { 'sec-websocket-protocol': `bearer.${t}` });
    expect(r.status).toBe(101);
    expect(r.headers['sec-websocket-protocol']).toBeUndefined();
    expect(JSON.stringify(r.headers)).not.toContain(t);
  });

  it('answers with no subprotocol when none is offered', async () => {
    const c = await expectWelcome(main, { token: await token({ sub: 'proto-4' }), via: 'header', protocols: [] }, 'proto-4');
    expect(c.ws.protocol).toBe('');
    await c.close();
  });
});

describe('missing and oversized tokens', () => {
  it('answers no token with 401 unauthorized (WWW-Authenticate: Bearer), logged as missing', async () => {
    const mark = logMark(main);
    const r = await refused(main.url, {});
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
    expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
    await expectRejectLogged(main, mark, 'unauthorized', 'missing');
  });

  it('treats empty sources (Bearer with nothing, bearer., access_token=) as no token: 401', async () => {
    await expect401(main, { headers: { authorization: 'Bearer ' } });
    await expect401(main, { protocols: ['pubgate.v1', 'bearer.'] });
    await expect401(main, { query: 'access_token=' });
  });

  it('reads a request head with a 9000-character token and answers 401, not 400/431, from every source', async () => {
    const long = tokenOfLength(9000, 'too-long');
    expect(long.length).toBe(9000);
    await expect401(main, { token: long, via: 'header' }, 'too_long');
    await expect401(main, { token: long, via: 'query' }, 'too_long');
    await expect401(main, { token: long, via: 'subprotocol' }, 'too_long');
  });

  it('accepts a valid token of exactly 8192 characters and refuses one of 8193', async () => {
    const max = tokenOfLength(8192, 'max-len');
    await expectAccepted(main, { token: max, via: 'header' }, 'max-len');
    await expectAccepted(main, { token: max, via: 'query' }, 'max-len');
    await expect401(main, { token: tokenOfLength(8193, 'max-len'), via: 'header' }, 'too_long');
  });
});

describe('verification', () => {
  const claims = (sub: string, extra: Record<string, unknown> = {}): Record<string, unknown> => validClaims(sub, extra);

  it('accepts a hand-built HS256 token (control for the cases below)', async () => {
    await expectAccepted(main, { token: hmacJwt(claims('control')) }, 'control');
  });

  it.each<[string, () => string | Promise<string>, string]>([
    ['alg none, empty signature', () => unsignedJwt(claims('none')), 'alg_not_allowed'],
    ['alg none, signature kept', () => `${unsignedJwt(claims('none'))}${hmacJwt(claims('none')).split('.')[2]}`, 'alg_not_allowed'],
    ['an algorithm not in the allow-list (HS512)', () => hmacJwt(claims('hs512'), { alg: 'HS512' }), 'alg_not_allowed'],
    ['a wrong secret', () => hmacJwt(claims('wrong'), { key: 'another-secret-0123456789abcdef' }), 'bad_signature'],
    ['a tampered payload', () => {
      const [h, , s] = hmacJwt(claims('victim')).split('.');
      return `${h}.${Buffer.from(JSON.stringify(claims('attacker'))).toString('base64url')}.${s}`;
    }, 'bad_signature'],
    ['not a JWT', () => 'not-a-jwt', 'malformed'],
    ['exp in the past (beyond the 5 s tolerance)', () => hmacJwt({ sub: 'old', exp: nowSec() - 60 }), 'expired'],
    ['nbf in the future (beyond the 5 s tolerance)', () => hmacJwt(claims('early', { nbf: nowSec() + 120 })), 'not_yet_valid'],
    ['no exp', () => hmacJwt({ sub: 'no-exp', iat: nowSec() }), 'claim_invalid'],
    ['no sub', () => hmacJwt({ exp: nowSec() + 3600 }), 'claim_invalid'],
    ['a sub that is not a string', () => hmacJwt({ sub: 42, exp: nowSec() + 3600 }), 'claim_invalid'],
    ['an empty sub', () => hmacJwt({ sub: '', exp: nowSec() + 3600 }), 'claim_invalid'],
    ['a kid no secret is configured under', () => hmacJwt(claims('kid'), { kid: 'k1' }), 'unknown_kid'],
  ])('refuses %s with 401', async (_what, make, reason) => {
    const t = await make();
    await expect401(main, { token: t, via: 'header' }, reason);
    await expect401(main, { token: t, via: 'query' });
  });

  it('checks iss and aud when configured: right ones connect, wrong or missing ones are 401', async () => {
    const k = { key: TEST_SECRET };
    await expectAccepted(issAud, { token: hmacJwt(claims('ia-ok', { iss: ISSUER, aud: AUDIENCE }), k) }, 'ia-ok');
    await expectAccepted(issAud, { token: hmacJwt(claims('ia-list', { iss: ISSUER, aud: ['other', AUDIENCE] }), k) }, 'ia-list');
    for (const bad of [
      { iss: 'https://evil.example.test/', aud: AUDIENCE },
      { iss: ISSUER.slice(0, -1), aud: AUDIENCE },
      { aud: AUDIENCE },
      { iss: ISSUER, aud: 'other' },
      { iss: ISSUER, aud: [`${AUDIENCE}-2`] },
      { iss: ISSUER },
    ]) {
      await expect401(issAud, { token: hmacJwt(claims('ia-bad', bad), k) }, 'claim_invalid');
    }
  });

  it('selects the HMAC secret by kid: k1 and k2 work, k3 is 401, and no kid falls back to another secret', async () => {
    await expectAccepted(kids, { token: hmacJwt(claims('kid-1'), { kid: 'k1', key: 'secretA' }) }, 'kid-1');
    await expectAccepted(kids, { token: hmacJwt(claims('kid-2'), { kid: 'k2', key: 'secretB' }) }, 'kid-2');
    await expect401(kids, { token: hmacJwt(claims('kid-3'), { kid: 'k3', key: 'secretA' }) }, 'unknown_kid');
    await expect401(kids, { token: hmacJwt(claims('kid-3b'), { kid: 'k3', key: 'secretB' }) }, 'unknown_kid');
    // Signed with the other configured secret: the kid picks exactly one key.
    await expect401(kids, { token: hmacJwt(claims('kid-x'), { kid: 'k1', key: 'secretB' }) }, 'bad_signature');
    await expect401(kids, { token: hmacJwt(claims('kid-y'), { kid: 'k2', key: 'secretA' }) }, 'bad_signature');
  });
});

describe('anonymous connections', () => {
  it('refuses token-less connections when allowAnonymous is off (the default)', async () => {
    await expect401(main, {});
  });

  it('connects without a token as user anonymous, reading only anonymousChannels', async () => {
    const c = await expectWelcome(anon, {}, 'anonymous');
    expect(await c.request({ type: 'subscribe', id: 1, channel: 'public:lobby' })).toEqual({ type: 'reply', id: 1 });
    expect(await c.request({ type: 'subscribe', id: 2, channel: 'news' })).toEqual({ type: 'reply', id: 2 });
    for (const [id, channel] of [[3, 'private'], [4, 'newsroom'], [5, 'public'], [6, 'user:anonymous']] as const) {
      expect(await c.request({ type: 'subscribe', id, channel })).toMatchObject({ type: 'reply', id, error: { code: 'forbidden' } });
    }
    expect(await c.request({ type: 'publish', id: 7, channel: 'public:lobby', data: 1 })).toMatchObject({
      type: 'reply', id: 7, error: { code: 'forbidden' },
    });
    await c.close();
  });

  it('still authenticates a token when one is given', async () => {
    const c = await expectWelcome(anon, { token: await token({ sub: 'named', channels: ['private'] }) }, 'named');
    expect(await c.request({ type: 'subscribe', id: 1, channel: 'private' })).toEqual({ type: 'reply', id: 1 });
    await c.close();
  });

  it('refuses a present but invalid token with 401 instead of connecting anonymously', async () => {
    await expect401(anon, { token: hmacJwt({ sub: 'old', exp: nowSec() - 60 }), via: 'header' }, 'expired');
    await expect401(anon, { token: hmacJwt(validClaims('x'), { key: 'wrong-secret-0123456789' }), via: 'query' }, 'bad_signature');
    await expect401(anon, { token: 'garbage', via: 'subprotocol' }, 'malformed');
    await expect401(anon, { token: unsignedJwt(validClaims('none')), via: 'header' }, 'alg_not_allowed');
    await expect401(anon, { token: tokenOfLength(9000, 'long'), via: 'header' }, 'too_long');
  });
});

describe('metrics and logs', () => {
  const handshakes = (labels: Record<string, string>): Promise<number> => metric(main.admin, 'pubgate_handshakes_total', labels);

  it('counts accepted and unauthorized handshakes', async () => {
    const accepted = await handshakes({ result: 'accepted' });
    const unauthorized = await handshakes({ result: 'rejected', reason: 'unauthorized' });
    await expectAccepted(main, { token: await token({ sub: 'counted' }) }, 'counted');
    expect(await handshakes({ result: 'accepted' })).toBe(accepted + 1);
    expect(await handshakes({ result: 'rejected', reason: 'unauthorized' })).toBe(unauthorized);
    await expect401(main, {});
    await expect401(main, { token: hmacJwt({ sub: 'old', exp: nowSec() - 60 }) });
    expect(await handshakes({ result: 'rejected', reason: 'unauthorized' })).toBe(unauthorized + 2);
    expect(await handshakes({ result: 'accepted' })).toBe(accepted + 1);
  });

  it('never writes a token to any log line, accepted or rejected, from any source', async () => {
    const tokens: string[] = [];
    const accept = async (via: 'query' | 'header' | 'subprotocol'): Promise<void> => {
      const t = await token({ sub: `leak-${via}`, channels: ['news'] });
      tokens.push(t);
      const c = await expectWelcome(main, { token: t, via }, `leak-${via}`);
      await main.waitForLog((l) => l.msg === 'connection open' && l.conn === c.welcome.conn);
      await c.close();
      await main.waitForLog((l) => l.msg === 'connection closed' && l.conn === c.welcome.conn);
    };
    await accept('query');
    await accept('header');
    await accept('subprotocol');
    const rejects: [string, 'query' | 'header' | 'subprotocol', string][] = [
      [hmacJwt({ sub: 'leak-old', exp: nowSec() - 60 }), 'query', 'expired'],
      [hmacJwt(validClaims('leak-sig'), { key: 'wrong-secret-0123456789' }), 'header', 'bad_signature'],
      [hmacJwt(validClaims('leak-sig2'), { key: 'wrong-secret-0123456789' }), 'subprotocol', 'bad_signature'],
      [tokenOfLength(9000, 'leak-long'), 'query', 'too_long'],
    ];
    for (const [t, via, reason] of rejects) {
      tokens.push(t);
      await expect401(main, { token: t, via }, reason);
    }
    // The gateway logs at debug here, so every line it writes is in gw.lines.
    const everything = [...main.lines.map((l) => JSON.stringify(l)), ...main.stderr].join('\n');
    expect(main.lines.some((l) => l.msg === 'connection open')).toBe(true);
    for (const t of tokens) {
      expect(everything).not.toContain(t);
      // Nor any part of it: every 32-character run of payload and signature
      // contains one of these aligned 24-character windows. (The header is the
      // same for every HS256 token and secret-free.)
      const secretPart = t.slice(t.indexOf('.') + 1);
      for (let i = 0; i + 24 <= secretPart.length; i += 8) {
        const window = secretPart.slice(i, i + 24);
        if (everything.includes(window)) expect.fail(`log contains part of a token: ${window}`);
      }
    }
  });

  it('logs each reject once with the code, before the next handshake (warn for the first of its reason in an interval, then debug)', async () => {
    const mark = logMark(main);
    await expect401(main, { token: 'nope' });
    const line = await logAfter(main, mark, (l) => l.msg === 'handshake rejected');
    expect(line).toMatchObject({ level: expect.stringMatching(/^(warn|debug)$/), code: 'unauthorized', reason: 'malformed', ip: '127.0.0.1' });
  });
});
