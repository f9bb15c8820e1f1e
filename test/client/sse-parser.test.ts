/**
 * The client's event-stream parser (WHATWG rules), the codec of the `id:`
 * positions, and the SSE URL derived from the WebSocket URL.
 */
import { describe, expect, it } from 'vitest';
import { SseParser, SseTooLarge, decodePosition, encodePosition, historyHash, sseUrlFor, type SseEvent } from '../../packages/client/src/sse.js';

function parse(chunks: string[], maxBytes?: number): { events: SseEvent[]; comments: string[]; retries: number[]; parser: SseParser } {
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const retries: number[] = [];
  const parser = new SseParser({ onEvent: (e) => events.push(e), onComment: (c) => comments.push(c), onRetry: (ms) => retries.push(ms), ...(maxBytes ? { maxBytes } : {}) });
  for (const c of chunks) parser.push(c);
  return { events, comments, retries, parser };
}

describe('SSE parser', () => {
  it('reads events with LF, CRLF and CR line ends alike', () => {
    for (const nl of ['\n', '\r\n', '\r']) {
      const { events } = parse([`event: welcome${nl}data: {"a":1}${nl}${nl}data: x${nl}${nl}`]);
      expect(events, JSON.stringify(nl)).toEqual([
        { event: 'welcome', data: '{"a":1}', id: '' },
        { event: 'message', data: 'x', id: '' },
      ]);
    }
  });

  it('joins data lines with LF, keeps the last id across events, and dispatches nothing for an event without data', () => {
    const { events, parser } = parse(['id: 7\nevent: message\n\n', 'data: a\ndata:b\ndata:  c\n\n', 'data: d\n\n']);
    expect(events).toEqual([
      { event: 'message', data: 'a\nb\n c', id: '7' },
      { event: 'message', data: 'd', id: '7' },
    ]);
    expect(parser.lastEventId).toBe('7');
  });

  it('handles lines and CRLF pairs split across chunks', () => {
    const text = 'event: message\r\nid: p1\r\ndata: {"channel":"feed","offset":3}\r\n\r\n: ping\r\n\r\n';
    for (let cut = 1; cut < text.length; cut++) {
      const { events, comments } = parse([text.slice(0, cut), text.slice(cut)]);
      expect(events, `cut at ${cut}`).toEqual([{ event: 'message', data: '{"channel":"feed","offset":3}', id: 'p1' }]);
      expect(comments, `cut at ${cut}`).toEqual(['ping']);
    }
  });

  it('reports comments, reads retry, ignores unknown fields and an id containing NUL, and takes a line without a colon as a field with an empty value', () => {
    const { events, comments, retries } = parse([': ping\nretry: 3000\nretry: x\nfoo: bar\nid: a\0b\ndata\n\n']);
    expect(comments).toEqual(['ping']);
    expect(retries).toEqual([3000]);
    expect(events).toEqual([{ event: 'message', data: '', id: '' }]);
  });

  it('refuses a line or an event over its bound', () => {
    expect(() => parse(['data: ' + 'x'.repeat(200)], 100)).toThrow(SseTooLarge);
    expect(() => parse(['data: ' + 'x'.repeat(60) + '\n', 'data: ' + 'y'.repeat(60) + '\n'], 100)).toThrow(SseTooLarge);
    expect(parse(['data: ' + 'x'.repeat(80) + '\n\n'], 100).events).toHaveLength(1);
  });
});

describe('SSE positions', () => {
  it('encodes the positions of the history channels in sorted order behind the hash of their sorted names, as the gateway does', () => {
    const pos = new Map([
      ['feed:2', { offset: 9, epoch: 'e2' }],
      ['feed:1', { offset: 41, epoch: 'h7Kq' }],
    ]);
    const id = encodePosition(['news', 'feed:2', 'feed:1'], pos);
    expect(id).toBe(`${historyHash(['feed:1', 'feed:2'])}.h7Kq:41,e2:9`);
    // The gateway's FNV-1a of "feed:1 feed:2" (src/transport/sse-events.ts), computed by hand here.
    let h = 0x811c9dc5;
    for (const c of 'feed:1 feed:2') h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
    expect(historyHash(['feed:2', 'feed:1'])).toBe(h.toString(16).padStart(8, '0'));
    expect(decodePosition(id!, ['feed:1', 'feed:2', 'news'])).toEqual(
      new Map([
        ['feed:1', { epoch: 'h7Kq', offset: 41 }],
        ['feed:2', { epoch: 'e2', offset: 9 }],
      ]),
    );
  });

  it('finds through the hash which channels of a stream keep history', () => {
    const id = `${historyHash(['b', 'd'])}.E:1,F:2`;
    expect(decodePosition(id, ['a', 'b', 'c', 'd'])).toEqual(
      new Map([
        ['b', { epoch: 'E', offset: 1 }],
        ['d', { epoch: 'F', offset: 2 }],
      ]),
    );
    expect(decodePosition(id, ['a', 'b', 'c', 'd'], new Set(['b']), new Set(['a']))).toEqual(
      new Map([
        ['b', { epoch: 'E', offset: 1 }],
        ['d', { epoch: 'F', offset: 2 }],
      ]),
    );
    expect(decodePosition(id, ['a', 'b', 'c', 'd'], new Set(['a']))).toBeUndefined(); // a is not one of them
  });

  it('covers only the channels with a known position, builds nothing without one, and reads no id of another set or format', () => {
    const pos = new Map([['feed:1', { offset: 1, epoch: 'e' }]]);
    expect(encodePosition(['feed:1', 'other'], pos)).toBe(`${historyHash(['feed:1'])}.e:1`);
    expect(encodePosition(['news'], new Map())).toBeUndefined();
    const id = encodePosition(['feed:1'], pos)!;
    expect(decodePosition(id, ['feed:2', 'feed:3'])).toBeUndefined();
    expect(decodePosition('garbage', ['feed:1'])).toBeUndefined();
    expect(decodePosition(`${historyHash(['feed:1'])}.e:x`, ['feed:1'])).toBeUndefined();
    expect(decodePosition(`${historyHash(['feed:1'])}.e:1,f:2`, ['feed:1'])).toBeUndefined();
  });

  it('derives the SSE URL from the WebSocket URL', () => {
    expect(sseUrlFor('wss://ws.example.com/ws')).toBe('https://ws.example.com/sse');
    expect(sseUrlFor('ws://127.0.0.1:8080/ws')).toBe('http://127.0.0.1:8080/sse');
    expect(sseUrlFor('wss://example.com/realtime/ws?tenant=a')).toBe('https://example.com/realtime/sse?tenant=a');
    expect(sseUrlFor('ws://h:1')).toBe('http://h:1/sse');
  });
});
