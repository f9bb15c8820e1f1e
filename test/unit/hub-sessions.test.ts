import { beforeEach, describe, expect, it } from 'vitest';
import { createMemoryBroker } from '../../src/broker/memory-broker.js';
import { createHub, type HubWithBroker } from '../../src/hub/hub.js';
import { NO_CHANNELS, OneChannel, addChannel, deleteChannel, type Session, type Socket } from '../../src/hub/session.js';
import { createMetrics } from '../../src/observability/metrics.js';
import { silentLogger } from '../../src/observability/logger.js';
import { NO_OPTIONS } from '../../src/channels/namespaces.js';

let nextId = 0;

/** A socket as the hub sees it; `end` closes it the way the transport does (close handler → hub.remove). */
function socket(user: string, onEnd: (ws: Socket) => void): Socket & { topics: Set<string> } {
  const session: Session = {
    id: nextId++, user, exp: 1, perms: { subscribe: () => true, publish: () => true }, channels: NO_CHANNELS,
    open: true, idleBeats: 0, frameFullAtMs: 0, extra: undefined,
  };
  const topics = new Set<string>();
  const ws = {
    topics,
    getUserData: () => session,
    subscribe: (t: string) => topics.add(t) && true,
    unsubscribe: (t: string) => topics.delete(t),
    send: () => 1,
    end: () => {
      session.open = false;
      onEnd(ws);
    },
    ping: () => 1,
    getBufferedAmount: () => 0,
    isSubscribed: () => false,
  };
  return ws;
}

describe('hub sessions', () => {
  let hub: HubWithBroker;
  let closed: Array<[string, number]>;
  const open = (user: string): ReturnType<typeof socket> => {
    const ws = socket(user, (w) => hub.remove(w));
    hub.add(ws);
    return ws;
  };

  beforeEach(async () => {
    closed = [];
    const broker = createMemoryBroker();
    hub = createHub({
      broker,
      topics: { publish: () => 0, sendTo: () => undefined },
      metrics: createMetrics('test'),
      log: silentLogger(),
      closeSocket: (ws, code) => {
        closed.push([ws.getUserData().user, code]);
        ws.end(code);
      },
      channelOptions: () => NO_OPTIONS,
      maxBackpressure: 1 << 20,
      maxRecoveryBuffer: 10,
    });
    await broker.start({ onMessage: (ch, f) => hub.deliver(ch, f), onStatus: () => {}, onControl: (m) => hub.control(m) });
  });

  it('counts and visits every socket, whether its user has one connection or several', () => {
    const a1 = open('alice');
    const a2 = open('alice');
    const a3 = open('alice');
    const b = open('bob');
    hub.add(a2); // adding twice changes nothing
    expect(hub.size).toBe(4);
    const seen: Socket[] = [];
    hub.forEach((ws) => seen.push(ws));
    expect(new Set(seen)).toEqual(new Set([a1, a2, a3, b]));
    expect(seen).toHaveLength(4);

    hub.remove(a1);
    hub.remove(a1); // removing twice changes nothing
    hub.remove(b);
    expect(hub.size).toBe(2);
    hub.remove(a3);
    expect(hub.size).toBe(1);
    const left: Socket[] = [];
    hub.forEach((ws) => left.push(ws));
    expect(left).toEqual([a2]);
    const a4 = open('alice');
    expect(hub.size).toBe(2);
    hub.remove(a2);
    hub.remove(a4);
    expect(hub.size).toBe(0);
    hub.forEach(() => {
      throw new Error('no socket left');
    });
  });

  it('visits each socket once while the callback closes them', () => {
    const all = [open('alice'), open('alice'), open('bob'), open('carol'), open('carol'), open('carol')];
    const seen: Socket[] = [];
    hub.forEach((ws) => {
      seen.push(ws);
      ws.end();
    });
    expect(seen).toHaveLength(all.length);
    expect(new Set(seen)).toEqual(new Set(all));
    expect(hub.size).toBe(0);
  });

  it('disconnects every connection of a user, and only those', async () => {
    open('alice');
    open('alice');
    open('bob');
    await hub.disconnectUser('alice');
    expect(closed).toEqual([['alice', 4501], ['alice', 4501]]);
    await hub.disconnectUser('bob');
    await hub.disconnectUser('nobody');
    expect(closed).toEqual([['alice', 4501], ['alice', 4501], ['bob', 4501]]);
    expect(hub.size).toBe(0);
  });

  it('shares one empty channel set until the first subscribe, and returns to it after the last', async () => {
    const ws = open('alice');
    const s = ws.getUserData();
    expect(s.channels).toBe(NO_CHANNELS);
    await hub.subscribe(ws, 'a');
    await hub.subscribe(ws, 'b');
    expect(s.channels).not.toBe(NO_CHANNELS);
    expect([...s.channels]).toEqual(['a', 'b']);
    expect(NO_CHANNELS.size).toBe(0);
    hub.unsubscribe(ws, 'a');
    expect([...s.channels]).toEqual(['b']);
    hub.unsubscribe(ws, 'b');
    expect(s.channels).toBe(NO_CHANNELS);
    hub.unsubscribe(ws, 'b');
    expect(s.channels).toBe(NO_CHANNELS);
    await hub.subscribe(ws, 'c');
    expect(hub.channelCount()).toBe(1);
    hub.remove(ws);
    expect(s.channels).toBe(NO_CHANNELS);
    expect(hub.channelCount()).toBe(0);
    expect(NO_CHANNELS.size).toBe(0);
  });

  it('keeps one channel in a OneChannel, a Set from the second, and NO_CHANNELS after the last', async () => {
    const ws = open('alice');
    const s = ws.getUserData();
    await hub.subscribe(ws, 'a');
    expect(s.channels).toBeInstanceOf(OneChannel);
    const one = s.channels;
    expect(one.size).toBe(1);
    expect(one.has('a')).toBe(true);
    expect(one.has('b')).toBe(false);
    expect([...one]).toEqual(['a']);
    expect([...one.keys()]).toEqual(['a']);
    expect([...one.entries()]).toEqual([['a', 'a']]);
    const seen: string[] = [];
    one.forEach((v, k, set) => seen.push(`${v}/${k}/${set === one}`));
    expect(seen).toEqual(['a/a/true']);
    await hub.subscribe(ws, 'a'); // again: unchanged
    expect(s.channels).toBe(one);
    await hub.subscribe(ws, 'b');
    expect(s.channels).toBeInstanceOf(Set);
    expect([...s.channels]).toEqual(['a', 'b']);
    expect([...one]).toEqual(['a']); // immutable: a holder of the old value is not surprised
    hub.unsubscribe(ws, 'a');
    hub.unsubscribe(ws, 'b');
    expect(s.channels).toBe(NO_CHANNELS);
  });

  it('deleteChannel on a OneChannel while iterating it finishes the iteration with the channel it started with', () => {
    const s = { channels: NO_CHANNELS } as Session;
    addChannel(s, 'x');
    const seen: string[] = [];
    for (const ch of s.channels) {
      expect(deleteChannel(s, ch)).toBe(true);
      seen.push(ch);
    }
    expect(seen).toEqual(['x']);
    expect(s.channels).toBe(NO_CHANNELS);
    expect(deleteChannel(s, 'x')).toBe(false);
  });
});
