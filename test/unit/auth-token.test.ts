import { describe, expect, it } from 'vitest';
import { extractToken, MAX_TOKEN_LENGTH, selectSubprotocol } from '../../src/auth/token.js';

const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl';
const OTHER = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.b3RoZXI';
const none = { authorization: '', protocols: '', query: '' };

describe('extractToken', () => {
  it('returns undefined when no source carries a token', () => {
    expect(extractToken(none)).toBeUndefined();
  });

  it('reads a Bearer Authorization header with any scheme case', () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      expect(extractToken({ ...none, authorization: `${scheme} ${JWT}` })).toEqual({ token: JWT, source: 'header' });
    }
  });

  it('trims whitespace around the header token', () => {
    expect(extractToken({ ...none, authorization: `  Bearer   ${JWT}  ` })).toEqual({ token: JWT, source: 'header' });
  });

  it('ignores an Authorization header with another scheme and falls through', () => {
    expect(extractToken({ ...none, authorization: 'Basic dXNlcjpwYXNz', query: `access_token=${JWT}` }))
      .toEqual({ token: JWT, source: 'query' });
    expect(extractToken({ ...none, authorization: `Bearer${JWT}` })).toBeUndefined();
  });

  it('treats an empty Bearer value as absent', () => {
    expect(extractToken({ ...none, authorization: 'Bearer ', protocols: `bearer.${JWT}` }))
      .toEqual({ token: JWT, source: 'subprotocol' });
    expect(extractToken({ ...none, authorization: 'Bearer' })).toBeUndefined();
  });

  it('reads a bearer.<jwt> subprotocol entry from a comma-separated, padded list', () => {
    expect(extractToken({ ...none, protocols: `pubgate.v1, bearer.${JWT}` }))
      .toEqual({ token: JWT, source: 'subprotocol' });
    expect(extractToken({ ...none, protocols: ` bearer.${JWT} ,pubgate.v1` }))
      .toEqual({ token: JWT, source: 'subprotocol' });
    expect(extractToken({ ...none, protocols: `pubgate.v1,bearer.${JWT}` }))
      .toEqual({ token: JWT, source: 'subprotocol' });
  });

  it('ignores an empty bearer. entry and unrelated subprotocols', () => {
    expect(extractToken({ ...none, protocols: 'pubgate.v1, bearer.' })).toBeUndefined();
    expect(extractToken({ ...none, protocols: 'pubgate.v1, chat' })).toBeUndefined();
    expect(extractToken({ ...none, protocols: `xbearer.${JWT}` })).toBeUndefined();
  });

  it('reads the access_token query parameter, percent-decoded', () => {
    expect(extractToken({ ...none, query: `a=1&access_token=${JWT}&b=2` })).toEqual({ token: JWT, source: 'query' });
    const encoded = JWT.replace(/\./g, '%2E').replace('e', '%65');
    expect(extractToken({ ...none, query: `access_token=${encoded}` })).toEqual({ token: JWT, source: 'query' });
  });

  it('takes the first access_token when the parameter repeats', () => {
    expect(extractToken({ ...none, query: `access_token=${JWT}&access_token=${OTHER}` }))
      .toEqual({ token: JWT, source: 'query' });
  });

  it('tolerates a leading ? and ignores an empty or look-alike parameter', () => {
    expect(extractToken({ ...none, query: `?access_token=${JWT}` })).toEqual({ token: JWT, source: 'query' });
    expect(extractToken({ ...none, query: 'access_token=' })).toBeUndefined();
    expect(extractToken({ ...none, query: `xaccess_token=${JWT}&token=${JWT}` })).toBeUndefined();
  });

  it('follows the contract order header → subprotocol → query', () => {
    const all = { authorization: `Bearer ${JWT}`, protocols: `bearer.${OTHER}`, query: `access_token=${OTHER}` };
    expect(extractToken(all)).toEqual({ token: JWT, source: 'header' });
    expect(extractToken({ ...all, authorization: '' })).toEqual({ token: OTHER, source: 'subprotocol' });
    expect(extractToken({ ...all, authorization: '', protocols: 'pubgate.v1' })).toEqual({ token: OTHER, source: 'query' });
  });

  it('returns over-long tokens unchanged so the verifier can reject them as too_long', () => {
    const long = 'a'.repeat(MAX_TOKEN_LENGTH + 1);
    expect(extractToken({ ...none, authorization: `Bearer ${long}` })?.token).toHaveLength(MAX_TOKEN_LENGTH + 1);
  });

  it('exports the contract limit of 8192 characters', () => {
    expect(MAX_TOKEN_LENGTH).toBe(8192);
  });
});

describe('selectSubprotocol', () => {
  it('selects pubgate.v1 when offered, wherever it is in the list', () => {
    expect(selectSubprotocol('pubgate.v1')).toBe('pubgate.v1');
    expect(selectSubprotocol(`bearer.${JWT}, pubgate.v1`)).toBe('pubgate.v1');
    expect(selectSubprotocol(` pubgate.v1 ,bearer.${JWT}`)).toBe('pubgate.v1');
  });

  it('never selects the bearer entry or an unknown protocol', () => {
    expect(selectSubprotocol(`bearer.${JWT}`)).toBeUndefined();
    expect(selectSubprotocol('chat, superchat')).toBeUndefined();
    expect(selectSubprotocol('')).toBeUndefined();
    expect(selectSubprotocol('pubgate.v2, PUBGATE.V1')).toBeUndefined();
  });
});
