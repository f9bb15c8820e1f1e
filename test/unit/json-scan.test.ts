import { describe, expect, it } from 'vitest';
import { arrayElements, objectMembers } from '../../src/protocol/json-scan.js';

const text = (s: string, span: { start: number; end: number } | undefined): string | undefined => (span ? s.slice(span.start, span.end) : undefined);

describe('objectMembers', () => {
  it('returns the raw text of each member value', () => {
    const s = ' { "a" : 1.0 , "b":"x\\"}{[" ,"c":{"d":[1,{"e":"]"}]},"n":null,"t":true,"big":1e400 } ';
    const m = objectMembers(s);
    expect(text(s, m.get('a'))).toBe('1.0');
    expect(text(s, m.get('b'))).toBe('"x\\"}{["');
    expect(text(s, m.get('c'))).toBe('{"d":[1,{"e":"]"}]}');
    expect(text(s, m.get('n'))).toBe('null');
    expect(text(s, m.get('t'))).toBe('true');
    expect(text(s, m.get('big'))).toBe('1e400');
  });

  it('keys members as JSON.parse does: escapes decoded, the last duplicate wins', () => {
    const s = '{"data":1,"d\\u0061ta":2,"x":{"data":3}}';
    expect(JSON.parse(s).data).toBe(2);
    expect(text(s, objectMembers(s).get('data'))).toBe('2');
    const t = '{"data":[1],"data":{"z":0}}';
    expect(text(t, objectMembers(t).get('data'))).toBe('{"z":0}');
  });

  it('finds nothing in a value that is not an object', () => {
    expect(objectMembers('[1,2]').size).toBe(0);
    expect(objectMembers('"s"').size).toBe(0);
    expect(objectMembers('{}').size).toBe(0);
  });
});

describe('arrayElements', () => {
  it('returns the raw text of each element', () => {
    const s = '{"m":[ {"a":"],"} , 2 ,"x", [[]] ]}';
    const span = objectMembers(s).get('m');
    expect(arrayElements(s, span!).map((sp) => s.slice(sp.start, sp.end))).toEqual(['{"a":"],"}', '2', '"x"', '[[]]']);
    expect(arrayElements('[]', { start: 0, end: 2 })).toEqual([]);
  });
});
