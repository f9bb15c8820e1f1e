/**
 * SSE framing (transport/sse-events.ts) and the fan-out's once-per-message
 * event text (transport/sse.ts SseFanout), with stand-in responses.
 */
import { describe, expect, it } from 'vitest';
import { NO_CHANNELS, type Session } from '../../src/hub/session.js';
import { encodeMessage } from '../../src/protocol/frames.js';
import type { ResponseState } from '../../src/transport/http.js';
import { eventText, formatId, framePosition, idShape, KIND_MESSAGE, parseLastEventId } from '../../src/transport/sse-events.js';
import { SseFanout, SseStream, readChannels } from '../../src/transport/sse.js';
import type { HttpResponse } from '../../src/transport/uws.js';

function session(id: number): Session {
  return { id, user: 'u', exp: 0, perms: { subscribe: () => true, publish: () => false }, channels: NO_CHANNELS, open: true, idleBeats: 0, frameFullAtMs: 0, extra: undefined };
}

/** A response that records what was written (as one text) and never pushes back. */
function response(): HttpResponse & { out: string[] } {
  const out: string[] = [];
  const res = {
    out,
    onWritable: () => res,
    cork: (fn: () => void) => {
      fn();
      return res;
    },
    writeStatus: () => res,
    writeHeader: () => res,
    write: (t: string) => {
      out.push(t);
      return true;
    },
    end: () => res,
  };
  return res as unknown as HttpResponse & { out: string[] };
}

const state = (): ResponseState => ({ aborted: false, done: true, onAbort: undefined });
const hooks = { dropped: () => undefined, drain: () => undefined, closed: () => undefined, close: () => undefined };

function stream(fanout: SseFanout, channels: readonly string[], history: readonly string[], id: number) {
  const res = response();
  const s = new SseStream(res, state(), session(id), idShape(history), fanout, { maxBackpressure: 1 << 20, hooks });
  for (const c of channels) s.subscribe(c);
  return { s, res };
}

describe('SSE framing', () => {
  it('reads the position right after the channel, never from inside data', () => {
    expect(framePosition(encodeMessage('a', '{"offset":9,"epoch":"zz"}'))).toBeUndefined();
    expect(framePosition(encodeMessage('a', '{"offset":9}', 42, 'h7Kq'))).toEqual({ offset: 42, epoch: 'h7Kq' });
  });

  it('drops the type member and splits data with line breaks into data lines', () => {
    expect(eventText(KIND_MESSAGE, encodeMessage('n', '{"a":1}'), undefined)).toBe('event: message\ndata: {"channel":"n","data":{"a":1}}\n\n');
    expect(eventText(KIND_MESSAGE, encodeMessage('n', '[1,\r\n2]'), 'x')).toBe('event: message\nid: x\ndata: {"channel":"n","data":[1,\ndata: 2]}\n\n');
  });

  it('round-trips an id through Last-Event-ID, and ignores one for other channels or damaged', () => {
    const shape = idShape(['h:b', 'h:a'])!;
    expect(shape.channels).toEqual(['h:a', 'h:b']);
    const id = formatId(shape, (c) => (c === 'h:a' ? { offset: 3, epoch: 'e-1' } : { offset: 7, epoch: 'E_2' }));
    expect(id).toBe(`${shape.prefix}.e-1:3,E_2:7`);
    expect([...parseLastEventId(id, shape)!]).toEqual([['h:a', { offset: 3, epoch: 'e-1' }], ['h:b', { offset: 7, epoch: 'E_2' }]]);
    expect(parseLastEventId(id, idShape(['h:a', 'h:c']))).toBeUndefined();
    for (const bad of ['', 'garbage', `${shape.prefix}.e-1:3`, `${shape.prefix}.e-1:x,E_2:7`, `${shape.prefix}.e 1:3,E_2:7`]) {
      expect(parseLastEventId(bad, shape), bad).toBeUndefined();
    }
  });

  it('takes an id made for some of the stream\'s history channels for those channels only (a channel was added)', () => {
    const two = idShape(['h:a', 'h:c'])!;
    const id = formatId(two, (c) => (c === 'h:a' ? { offset: 3, epoch: 'ea' } : { offset: 9, epoch: 'ec' }));
    const three = idShape(['h:a', 'h:b', 'h:c'])!;
    expect([...parseLastEventId(id, three)!]).toEqual([['h:a', { offset: 3, epoch: 'ea' }], ['h:c', { offset: 9, epoch: 'ec' }]]);
    // A subset the stream does not have (h:d) covers nothing.
    const other = formatId(idShape(['h:a', 'h:d'])!, () => ({ offset: 1, epoch: 'e' }));
    expect(parseLastEventId(other, three)).toBeUndefined();
    // More positions than the stream has history channels: nothing.
    const four = formatId(idShape(['h:a', 'h:b', 'h:c', 'h:d'])!, () => ({ offset: 1, epoch: 'e' }));
    expect(parseLastEventId(four, three)).toBeUndefined();
  });

  it('checks the channel list: none, too many distinct (before names), invalid', () => {
    expect(readChannels('', 2)).toMatchObject({ refusal: { code: 'bad_request', reason: 'no_channel' } });
    expect(readChannels('channel=a&channel=b&channel=a', 2)).toEqual({ value: ['a', 'b'] });
    expect(readChannels('channel=a&channel=b&channel=c%20d', 2)).toMatchObject({ refusal: { code: 'limit_exceeded', reason: 'too_many_channels' } });
    expect(readChannels('channel=a&channel=c%20d', 2)).toMatchObject({ refusal: { code: 'bad_request', reason: 'bad_channel' } });
  });
});

describe('SSE fan-out', () => {
  it('builds one event text per message for every stream at the node\'s positions, and writes that same text to each', () => {
    const fanout = new SseFanout();
    const streams = Array.from({ length: 50 }, (_x, i) => stream(fanout, ['h:a', 'h:b'], ['h:a', 'h:b'], i));
    // Every stream starts where the node is.
    fanout.publish('h:a', encodeMessage('h:a', '1', 1, 'A'));
    fanout.publish('h:b', encodeMessage('h:b', '1', 1, 'B'));
    for (const { s } of streams) s.welcome('{}', new Map([['h:a', { offset: 1, epoch: 'A' }], ['h:b', { offset: 1, epoch: 'B' }]]));
    // Events go out at the end of the event-loop pass, one write per stream (flushed here at once).
    fanout.flush();
    const before = fanout.eventsBuilt;
    expect(fanout.publish('h:a', encodeMessage('h:a', '{"x":2}', 2, 'A'))).toBe(50);
    expect(fanout.eventsBuilt - before).toBe(1);
    expect(streams.every(({ res }) => !res.out.at(-1)?.includes('"x":2'))).toBe(true);
    fanout.flush();
    const texts = new Set(streams.map(({ res }) => res.out.at(-1)));
    expect(texts.size).toBe(1);
    expect([...texts][0]).toContain(`id: ${streams[0]!.s.shape!.prefix}.A:2,B:1\n`);
    // A plain channel: one text for all, carrying each stream's id (here the same).
    const plain = stream(fanout, ['n'], [], 99);
    plain.s.welcome('{}', new Map());
    const b2 = fanout.eventsBuilt;
    fanout.publish('n', encodeMessage('n', '3'));
    expect(fanout.eventsBuilt - b2).toBe(1);
  });

  it('gives a stream behind the node on another channel its own id, with its own position', () => {
    const fanout = new SseFanout();
    // The node delivered h:b up to 5 (to another stream) before these two started.
    const other = stream(fanout, ['h:b'], ['h:b'], 3);
    other.s.welcome('{}', new Map([['h:b', { offset: 4, epoch: 'B' }]]));
    fanout.publish('h:b', encodeMessage('h:b', '1', 5, 'B'));
    const a = stream(fanout, ['h:a', 'h:b'], ['h:a', 'h:b'], 1);
    const b = stream(fanout, ['h:a', 'h:b'], ['h:a', 'h:b'], 2);
    a.s.welcome('{}', new Map([['h:a', { offset: 0, epoch: 'A' }], ['h:b', { offset: 5, epoch: 'B' }]]));
    b.s.welcome('{}', new Map([['h:a', { offset: 0, epoch: 'A' }], ['h:b', { offset: 4, epoch: 'B' }]]));
    fanout.flush();
    const before = fanout.eventsBuilt;
    fanout.publish('h:a', encodeMessage('h:a', '1', 1, 'A'));
    fanout.flush();
    expect(fanout.eventsBuilt - before).toBe(2);
    expect(a.res.out.at(-1)).toContain('.A:1,B:5\n');
    expect(b.res.out.at(-1)).toContain('.A:1,B:4\n');
  });

  it('writes what came before the welcome whole even under backpressure, and only later events are skipped as a slow consumer', () => {
    const fanout = new SseFanout();
    const written: string[] = [];
    let slow = 0;
    const res = {
      onWritable: () => res,
      cork: (fn: () => void) => {
        fn();
        return res;
      },
      writeStatus: () => res,
      writeHeader: () => res,
      // uWS buffers everything and reports backpressure on every write.
      write: (t: string) => {
        written.push(t);
        return false;
      },
      end: () => res,
    } as unknown as HttpResponse;
    const s = new SseStream(res, state(), session(7), idShape(['h:r']), fanout, {
      maxBackpressure: 1000,
      hooks: { ...hooks, dropped: () => void slow++ },
    });
    s.subscribe('h:r');
    // A recovery's replay arrives before the welcome: 10 × 500 characters, five times maxBackpressure.
    for (let i = 1; i <= 10; i++) s.send(encodeMessage('h:r', JSON.stringify('z'.repeat(500)), i, 'E'));
    s.welcome('{}', new Map([['h:r', { offset: 0, epoch: 'E' }]]));
    expect(slow).toBe(0);
    // Pending until the end of the pass, and counted as buffered meanwhile (a replay is paced on it).
    expect(written).toHaveLength(0);
    expect(s.getBufferedAmount()).toBeGreaterThan(5000);
    fanout.flush();
    expect(s.getBufferedAmount()).toBeGreaterThan(5000);
    // The welcome and the whole replay went to uWS in one write (which pushed back), none skipped.
    expect(written).toHaveLength(1);
    expect(written[0]!.match(/event: message/g)).toHaveLength(10);
    // A live message now goes over the limit: skipped, the stream reported slow.
    expect(fanout.publish('h:r', encodeMessage('h:r', '1', 11, 'E'))).toBe(0);
    expect(slow).toBe(1);
  });
});

describe('SSE writes per event-loop pass', () => {
  it('sends a burst of events to a stream in one write at the end of the pass, in order', async () => {
    const fanout = new SseFanout();
    const { s, res } = stream(fanout, ['n'], [], 5);
    s.welcome('{}', new Map());
    for (let i = 1; i <= 16; i++) fanout.publish('n', encodeMessage('n', String(i)));
    const writesBefore = res.out.length;
    await new Promise((resolve) => setImmediate(resolve));
    // Welcome and 16 messages: one write, in publish order.
    expect(res.out.length - writesBefore).toBe(1);
    const text = res.out.at(-1)!;
    expect(text.startsWith('event: welcome')).toBe(true);
    const datas = [...text.matchAll(/"data":(\d+)/g)].map((m) => Number(m[1]));
    expect(datas).toEqual(Array.from({ length: 16 }, (_x, i) => i + 1));
  });
});
