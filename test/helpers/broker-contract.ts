/**
 * The behaviour every Broker must have. Run it with
 * `runBrokerContract({ name, newBroker, sharedBackend })` from a test file.
 *
 * Everything waits for events (handler calls); nothing sleeps. Absence is
 * proven with a sentinel: after the message that must not arrive, a sentinel
 * is published on a channel that is still subscribed, and once the sentinel
 * arrived the earlier message would have arrived too (order per connection).
 */
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { Broker, BrokerHandlers, BrokerStatus, ControlMessage, NodeInfo } from '../../src/broker/broker.js';
import { frameOffset, type History, type HistoryOptions } from '../../src/broker/history.js';
import { GatewayError } from '../../src/errors.js';
import type { Log } from '../../src/observability/logger.js';

/** The user a control message names (disconnect, subscribe, unsubscribe). */
export const controlUser = (c: ControlMessage): string | undefined => ('user' in c ? c.user : undefined);

/** Records what a broker hands to its handlers and lets a test wait for it. */
export class Recorder implements BrokerHandlers {
  readonly statuses: BrokerStatus[] = [];
  readonly controls: ControlMessage[] = [];
  private readonly byChannel = new Map<string, string[]>();
  private readonly waiters = new Set<() => void>();
  total = 0;
  /** What nodeInfo() reports (the admin console's node info); its id is set per recorder. */
  info: NodeInfo = {
    id: `rec-${randomUUID().slice(0, 8)}`,
    version: '0.0.0-test',
    startedAt: new Date(0).toISOString(),
    uptimeSeconds: 1,
    connections: { total: 3, websocket: 1, sse: 1, pusher: 1 },
    subscriptions: 2,
    channels: 1,
    broker: 'ready',
    draining: false,
  };

  nodeInfo(): NodeInfo {
    return this.info;
  }

  onMessage(channel: string, frame: string): void {
    let list = this.byChannel.get(channel);
    if (!list) this.byChannel.set(channel, (list = []));
    list.push(frame);
    this.total += 1;
    this.poke();
  }
  onStatus(status: BrokerStatus): void {
    this.statuses.push(status);
    this.poke();
  }
  onControl(msg: ControlMessage): void {
    this.controls.push(msg);
    this.poke();
  }

  got(channel: string): readonly string[] {
    return this.byChannel.get(channel) ?? [];
  }
  get lastStatus(): BrokerStatus | undefined {
    return this.statuses.at(-1);
  }

  /**
   * Resolves once `check()` holds, re-checked after every handler call. `guardMs`
   * only turns a hang into a readable failure; it is not a timing expectation.
   */
  until(check: () => boolean, what: string, guardMs = 45_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`gave up waiting for ${what}`));
      }, guardMs);
      const waiter = (): void => {
        if (!check()) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve();
      };
      this.waiters.add(waiter);
    });
  }
  untilStatus(status: BrokerStatus, guardMs?: number): Promise<void> {
    return this.until(() => this.lastStatus === status, `status '${status}'`, guardMs);
  }
  /** Waits for the next transition to `status` after the ones seen so far. */
  nextStatus(status: BrokerStatus, guardMs?: number): Promise<void> {
    const seen = this.statuses.length;
    return this.until(() => this.statuses.slice(seen).includes(status), `a transition to '${status}'`, guardMs);
  }
  untilReceived(channel: string, frame: string): Promise<void> {
    return this.until(() => this.got(channel).includes(frame), `'${frame}' on ${channel}`);
  }

  /** Re-checks the waiters; call it from other event sinks (e.g. metrics callbacks) a test waits on. */
  notify(): void {
    this.poke();
  }

  private poke(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** A Log that keeps its lines, for asserting on warnings. */
export interface MemoryLog extends Log {
  readonly lines: Array<{ level: string; msg: string; obj: object }>;
}

export function memoryLog(): MemoryLog {
  const lines: Array<{ level: string; msg: string; obj: object }> = [];
  const make = (bindings: Record<string, unknown>): MemoryLog => {
    const at =
      (level: string) =>
      (obj: object, msg: string): void => {
        lines.push({ level, msg, obj: { ...bindings, ...obj } });
      };
    return {
      lines,
      fatal: at('fatal'),
      error: at('error'),
      warn: at('warn'),
      info: at('info'),
      debug: at('debug'),
      child: (b) => make({ ...bindings, ...b }),
      isLevelEnabled: () => true,
    };
  };
  return make({});
}

export async function expectUnavailable(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    () => {
      throw new Error('expected a rejection with code unavailable, but the call was accepted');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  expect((err as GatewayError).code).toBe('unavailable');
  return err as GatewayError;
}

/** Polls `check` every 20 ms until it holds; fails after `guardMs` (a hang guard, not a timing expectation). */
async function pollFor(check: () => Promise<boolean>, what: string, guardMs = 20_000): Promise<void> {
  const deadline = Date.now() + guardMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface BrokerContractOptions {
  readonly name: string;
  /** A new, unstarted broker. With sharedBackend, all instances talk to one backend. */
  readonly newBroker: () => Broker;
  /** True for multi-node brokers: the cross-instance cases run. */
  readonly sharedBackend: boolean;
  /** A new, unstarted broker keeping history; when given, the history contract runs too. */
  readonly newHistoryBroker?: (history: HistoryOptions) => Broker;
}

export function runBrokerContract(opts: BrokerContractOptions): void {
  describe(`Broker contract: ${opts.name}`, () => {
    const open: Broker[] = [];

    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()));
    });

    /** A started broker that is ready, with its recorder. */
    async function ready(): Promise<{ b: Broker; r: Recorder }> {
      const b = opts.newBroker();
      open.push(b);
      const r = new Recorder();
      await b.start(r);
      await r.untilStatus('ready');
      return { b, r };
    }

    const names = (): ((s: string) => string) => {
      const tag = randomUUID().slice(0, 8);
      return (s) => `t${tag}:${s}`;
    };

    it('reports ready through onStatus after start', async () => {
      const b = opts.newBroker();
      open.push(b);
      const r = new Recorder();
      await b.start(r);
      await r.untilStatus('ready');
      expect(b.status).toBe('ready');
      expect(b.subscribedCount()).toBe(0);
    });

    it('delivers each channel in publish order, without duplicates', async () => {
      const ch = names();
      const { b, r } = await ready();
      const channels = [ch('a'), ch('b'), ch('c')];
      for (const c of channels) await b.subscribe(c);
      const perChannel = 300;
      const sends: Array<Promise<void>> = [];
      for (let i = 0; i < perChannel; i++) for (const c of channels) sends.push(b.publish(c, `${c}#${i}`));
      await Promise.all(sends);
      await r.until(() => channels.every((c) => r.got(c).length >= perChannel), 'every message');
      for (const c of channels) expect(r.got(c)).toEqual(Array.from({ length: perChannel }, (_, i) => `${c}#${i}`));
    });

    it('hands frames over untouched', async () => {
      const ch = names();
      const { b, r } = await ready();
      await b.subscribe(ch('raw'));
      const frames = [
        '{"type":"message","channel":"x","data":{"k":[1,2,3]}}',
        'not json at all',
        '{"emoji":"\u{1F600}","accents":"é à ü","cjk":"漢字"}',
        ' leading and trailing spaces ',
        'x'.repeat(60_000),
        '',
      ];
      for (const f of frames) await b.publish(ch('raw'), f);
      await r.until(() => r.got(ch('raw')).length >= frames.length, 'every frame');
      expect(r.got(ch('raw'))).toEqual(frames);
    });

    it('delivers nothing for a channel it never subscribed to', async () => {
      const ch = names();
      const { b, r } = await ready();
      await b.subscribe(ch('sentinel'));
      await b.publish(ch('other'), 'must not arrive');
      await b.publish(ch('sentinel'), 'done');
      await r.untilReceived(ch('sentinel'), 'done');
      expect(r.got(ch('other'))).toEqual([]);
    });

    it('stops delivering a channel once it is unsubscribed', async () => {
      const ch = names();
      const { b, r } = await ready();
      await b.subscribe(ch('a'));
      await b.subscribe(ch('sentinel'));
      await b.publish(ch('a'), 'before');
      await r.untilReceived(ch('a'), 'before');
      await b.unsubscribe(ch('a'));
      await b.publish(ch('a'), 'after');
      await b.publish(ch('sentinel'), 'done');
      await r.untilReceived(ch('sentinel'), 'done');
      expect(r.got(ch('a'))).toEqual(['before']);
      expect(b.subscribedCount()).toBe(1);
    });

    it('treats repeated and concurrent subscribes as one subscription', async () => {
      const ch = names();
      const { b, r } = await ready();
      await Promise.all([b.subscribe(ch('a')), b.subscribe(ch('a')), b.subscribe(ch('a'))]);
      await b.subscribe(ch('a'));
      expect(b.subscribedCount()).toBe(1);
      await b.publish(ch('a'), 'once');
      await b.subscribe(ch('sentinel'));
      await b.publish(ch('sentinel'), 'done');
      await r.untilReceived(ch('sentinel'), 'done');
      expect(r.got(ch('a'))).toEqual(['once']);
      // One unsubscribe releases it, however many subscribes there were.
      await b.unsubscribe(ch('a'));
      await b.unsubscribe(ch('a'));
      expect(b.subscribedCount()).toBe(1);
      await b.publish(ch('a'), 'after');
      await b.publish(ch('sentinel'), 'done2');
      await r.untilReceived(ch('sentinel'), 'done2');
      expect(r.got(ch('a'))).toEqual(['once']);
    });

    it('ends in the state of the last call when subscribe and unsubscribe race', async () => {
      const ch = names();
      const { b, r } = await ready();
      await b.subscribe(ch('sentinel'));
      // subscribe then unsubscribe, issued back to back: ends unsubscribed.
      await Promise.allSettled([b.subscribe(ch('x')), b.unsubscribe(ch('x'))]);
      // subscribe, unsubscribe, subscribe: ends subscribed.
      await Promise.allSettled([b.subscribe(ch('y')), b.unsubscribe(ch('y')), b.subscribe(ch('y'))]);
      expect(b.subscribedCount()).toBe(2);
      await b.publish(ch('x'), 'x must not arrive');
      await b.publish(ch('y'), 'y arrives');
      await b.publish(ch('sentinel'), 'done');
      await r.untilReceived(ch('sentinel'), 'done');
      expect(r.got(ch('x'))).toEqual([]);
      expect(r.got(ch('y'))).toEqual(['y arrives']);
    });

    it('counts the channels it is subscribed to', async () => {
      const ch = names();
      const { b } = await ready();
      expect(b.subscribedCount()).toBe(0);
      await b.subscribe(ch('a'));
      await b.subscribe(ch('b'));
      await b.subscribe(ch('c'));
      expect(b.subscribedCount()).toBe(3);
      await b.unsubscribe(ch('b'));
      expect(b.subscribedCount()).toBe(2);
      await b.unsubscribe(ch('never'));
      expect(b.subscribedCount()).toBe(2);
    });

    it('delivers a control message to onControl on the publishing instance', async () => {
      const { b, r } = await ready();
      const user = `u-${randomUUID()}`;
      await b.publishControl({ kind: 'disconnect', user });
      await r.until(() => r.controls.some((c) => controlUser(c) === user), 'the control message');
      expect(r.controls.filter((c) => controlUser(c) === user)).toEqual([{ kind: 'disconnect', user }]);
    });

    it('delivers subscribe, unsubscribe and ack control messages with exactly their fields', async () => {
      const { b, r } = await ready();
      const id = randomUUID().slice(0, 8);
      const sent: ControlMessage[] = [
        { kind: 'subscribe', id, from: b.instance, user: 'u"1\\', channel: 'news:a/b=c' },
        { kind: 'unsubscribe', id, from: b.instance, user: 'ü', channel: 'news' },
        { kind: 'ack', id, to: b.instance, node: 'other~x', ok: false },
        { kind: 'ack', id, to: b.instance, node: b.instance, ok: true },
      ];
      for (const m of sent) await b.publishControl(m);
      await r.until(() => r.controls.filter((c) => 'id' in c && c.id === id).length === sent.length, 'the control messages');
      expect(r.controls.filter((c) => 'id' in c && c.id === id)).toEqual(sent);
    });

    it('lists its own instance with the info it reported (nodeInfos), and refuses nodeInfos() once closed', async () => {
      const { b, r } = await ready();
      if (!b.nodeInfos) throw new Error('the broker has no nodeInfos()');
      const mine = async (): Promise<unknown> => (await b.nodeInfos!()).find((n) => n.instance === b.instance);
      // A Redis broker stores it with its first renewal: poll until it shows.
      await pollFor(async () => ((await mine()) as { info?: unknown } | undefined)?.info !== undefined, 'its own info among the nodes');
      const n = (await mine()) as { info: unknown; reportedAtMs: number };
      expect(n.info).toEqual(r.info);
      expect(Number.isSafeInteger(n.reportedAtMs) && n.reportedAtMs > 0).toBe(true);
      await b.close();
      await expectUnavailable(b.nodeInfos());
    });

    it('lists its own instance among the live nodes once ready, and refuses nodes() once closed', async () => {
      const { b } = await ready();
      expect(typeof b.instance).toBe('string');
      // A Redis broker registers itself when it becomes ready (one script call): poll until it shows.
      await pollFor(async () => (await b.nodes()).includes(b.instance), 'its own instance among the nodes');
      await b.close();
      await expectUnavailable(b.nodes());
    });

    it('rejects publish, publishControl and subscribe with unavailable once closed', async () => {
      const ch = names();
      const { b, r } = await ready();
      await b.subscribe(ch('a'));
      await b.close();
      expect(b.status).toBe('down');
      expect(r.lastStatus).toBe('down');
      await expectUnavailable(b.publish(ch('a'), 'late'));
      await expectUnavailable(b.publishControl({ kind: 'disconnect', user: 'u' }));
      await expectUnavailable(b.subscribe(ch('b')));
      await b.unsubscribe(ch('a'));
      await b.close();
      expect(r.got(ch('a'))).toEqual([]);
    });

    it('publishes a keyed frame once per key and channel (publishOnce), and again once the key expired', async () => {
      const ch = names();
      const { b, r } = await ready();
      await b.subscribe(ch('p'));
      await b.subscribe(ch('q'));
      expect(await b.publishOnce(ch('p'), 'one', { key: 'k', ttlSec: 1 })).toBe(true);
      expect(await b.publishOnce(ch('p'), 'two', { key: 'k', ttlSec: 1 })).toBe(false);
      expect(await b.publishOnce(ch('q'), 'other channel', { key: 'k', ttlSec: 1 })).toBe(true);
      await b.publish(ch('p'), 'unkeyed');
      await r.until(() => r.got(ch('p')).length === 2 && r.got(ch('q')).length === 1, 'the first keyed and the unkeyed frame');
      expect(r.got(ch('p'))).toEqual(['one', 'unkeyed']);
      // Bounded wait for the 1 s ttl: each try waits for its answer.
      let again = false;
      for (let i = 0; i < 400 && !again; i++) {
        await new Promise((res) => setTimeout(res, 10));
        again = await b.publishOnce(ch('p'), 'three', { key: 'k', ttlSec: 1 });
      }
      expect(again).toBe(true);
      await r.until(() => r.got(ch('p')).length === 3, 'the frame published after expiry');
      expect(r.got(ch('p'))).toEqual(['one', 'unkeyed', 'three']);
    });

    if (opts.sharedBackend) {
      it('publishes a keyed frame once across instances, also when both send it at once', async () => {
        const ch = names();
        const a = await ready();
        const b = await ready();
        await b.b.subscribe(ch('c'));
        expect(await a.b.publishOnce(ch('c'), 'a1', { key: 'k1', ttlSec: 60 })).toBe(true);
        expect(await b.b.publishOnce(ch('c'), 'b1', { key: 'k1', ttlSec: 60 })).toBe(false);
        const racing = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).b.publishOnce(ch('c'), `r${i}`, { key: 'k2', ttlSec: 60 })),
        );
        expect(racing.filter(Boolean)).toHaveLength(1);
        await a.b.publish(ch('c'), 'end');
        await b.r.until(() => b.r.got(ch('c')).includes('end'), 'the closing frame');
        expect(b.r.got(ch('c'))).toHaveLength(3);
        expect(b.r.got(ch('c'))[0]).toBe('a1');
      });
    }

    const newHistoryBroker = opts.newHistoryBroker;
    if (newHistoryBroker) {
      describe('history', () => {
        const SIZE = 5;
        const make: (history: HistoryOptions) => Broker = newHistoryBroker;
        async function withHistory(): Promise<{ b: Broker; r: Recorder; h: History }> {
          const b = make({ size: SIZE, ttlSec: 60 });
          open.push(b);
          const r = new Recorder();
          await b.start(r);
          await r.untilStatus('ready');
          if (!b.history) throw new Error('the broker was created with history options but has no history');
          return { b, r, h: b.history };
        }
        const offsetsOf = (frames: readonly string[] | undefined): number[] | undefined => frames?.map(frameOffset);

        it('gives a new channel offset 0 and an epoch that stays', async () => {
          const ch = names();
          const { h } = await withHistory();
          const p = await h.position(ch('fresh'));
          expect(p.offset).toBe(0);
          expect(p.epoch).toMatch(/^[A-Za-z0-9_-]{4,}$/);
          expect(await h.position(ch('fresh'))).toEqual(p);
          expect(await h.since(ch('fresh'), 0, 10)).toEqual({ position: p, frames: [] });
        });

        it('numbers messages 1, 2, 3… and delivers each with its offset and epoch, in order', async () => {
          const ch = names();
          const { b, r, h } = await withHistory();
          await b.subscribe(ch('n'));
          const epoch = (await h.position(ch('n'))).epoch;
          const got = await Promise.all([1, 2, 3].map((i) => h.publish(ch('n'), `{"i":${i}}`)));
          expect(got).toEqual([1, 2, 3].map((offset) => ({ offset, epoch, repeat: false })));
          await r.until(() => r.got(ch('n')).length === 3, 'three messages');
          expect(r.got(ch('n'))).toEqual(
            [1, 2, 3].map((i) => `{"type":"message","channel":"${ch('n')}","offset":${i},"epoch":"${epoch}","data":{"i":${i}}}`),
          );
        });

        it('reads history in pages, and answers undefined for offsets it no longer holds or never had', async () => {
          const ch = names();
          const { h } = await withHistory();
          for (let i = 1; i <= 7; i++) await h.publish(ch('p'), String(i));
          const pos = await h.position(ch('p'));
          expect(pos.offset).toBe(7);
          // It keeps the last SIZE = 5: offsets 3..7.
          expect(offsetsOf((await h.since(ch('p'), 2, 2)).frames)).toEqual([3, 4]);
          expect(offsetsOf((await h.since(ch('p'), 4, 2)).frames)).toEqual([5, 6]);
          expect(offsetsOf((await h.since(ch('p'), 6, 2)).frames)).toEqual([7]);
          expect(offsetsOf((await h.since(ch('p'), 2, 100)).frames)).toEqual([3, 4, 5, 6, 7]);
          expect(await h.since(ch('p'), 7, 2)).toEqual({ position: pos, frames: [] });
          expect(await h.since(ch('p'), 1, 2)).toEqual({ position: pos, frames: undefined });
          expect(await h.since(ch('p'), 0, 2)).toEqual({ position: pos, frames: undefined });
          expect(await h.since(ch('p'), 8, 2)).toEqual({ position: pos, frames: undefined });
          const page = (await h.since(ch('p'), 4, 1)).frames ?? [];
          expect(page).toEqual([`{"type":"message","channel":"${ch('p')}","offset":5,"epoch":"${pos.epoch}","data":5}`]);
        });

        it('keeps channels apart', async () => {
          const ch = names();
          const { h } = await withHistory();
          await h.publish(ch('a'), '1');
          await h.publish(ch('a'), '2');
          await h.publish(ch('b'), '1');
          expect((await h.position(ch('a'))).offset).toBe(2);
          expect((await h.position(ch('b'))).offset).toBe(1);
          expect(offsetsOf((await h.since(ch('b'), 0, 10)).frames)).toEqual([1]);
        });

        it('appends and publishes a keyed message once per key and channel, answering a repeat with the first position', async () => {
          const ch = names();
          const { b, r, h } = await withHistory();
          await b.subscribe(ch('k'));
          await b.subscribe(ch('k2'));
          const idem = { key: 'order-1 ~!{}', ttlSec: 60 };
          const first = await h.publish(ch('k'), '"first"', undefined, idem);
          const again = await h.publish(ch('k'), '"second body"', undefined, idem);
          expect(first).toMatchObject({ offset: 1, repeat: false });
          expect(again).toEqual({ offset: 1, epoch: first.epoch, repeat: true });
          // Scope per channel: the same key on another channel is a new publish.
          expect(await h.publish(ch('k2'), '"other channel"', undefined, idem)).toMatchObject({ offset: 1, repeat: false });
          expect(await h.publish(ch('k'), '"unkeyed"')).toMatchObject({ offset: 2, repeat: false });
          await r.until(() => r.got(ch('k')).length === 2, 'the keyed and the unkeyed message');
          expect(r.got(ch('k')).map((f) => JSON.parse(f).data)).toEqual(['first', 'unkeyed']);
          expect(offsetsOf((await h.since(ch('k'), 0, 10)).frames)).toEqual([1, 2]);
        });

        it('forgets a key after its ttl: the same key then publishes again', async () => {
          const ch = names();
          const { h } = await withHistory();
          const idem = { key: 'short', ttlSec: 1 };
          expect(await h.publish(ch('t'), '1', undefined, idem)).toMatchObject({ offset: 1, repeat: false });
          let next = await h.publish(ch('t'), '2', undefined, idem);
          // Bounded: the key lives 1 s; each round trip waits for an answer, the loop ends well before the guard.
          for (let i = 0; i < 400 && next.repeat; i++) {
            await new Promise((res) => setTimeout(res, 10));
            next = await h.publish(ch('t'), '2', undefined, idem);
          }
          expect(next).toMatchObject({ offset: 2, repeat: false });
        });

        if (opts.sharedBackend) {
          it('publishes a keyed message once across instances, also when both send it at once', async () => {
            const ch = names();
            const a = await withHistory();
            const b = await withHistory();
            await b.b.subscribe(ch('x'));
            const p1 = await a.h.publish(ch('x'), '"a"', undefined, { key: 'k1', ttlSec: 60 });
            expect(await b.h.publish(ch('x'), '"b"', undefined, { key: 'k1', ttlSec: 60 })).toEqual({ ...p1, repeat: true });
            const racing = await Promise.all(
              Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).h.publish(ch('x'), `${i}`, undefined, { key: 'k2', ttlSec: 60 })),
            );
            expect(racing.filter((p) => !p.repeat)).toHaveLength(1);
            expect(new Set(racing.map((p) => p.offset))).toEqual(new Set([2]));
            await a.h.publish(ch('x'), '"end"');
            await b.r.until(() => b.r.got(ch('x')).some((f) => f.includes('"end"')), 'the closing message');
            expect(b.r.got(ch('x')).map(frameOffset)).toEqual([1, 2, 3]);
          });

          it('shares offsets, epoch and history between instances', async () => {
            const ch = names();
            const a = await withHistory();
            const b = await withHistory();
            await b.b.subscribe(ch('s'));
            const p1 = await a.h.publish(ch('s'), '"a"');
            const p2 = await b.h.publish(ch('s'), '"b"');
            expect(p2).toEqual({ offset: p1.offset + 1, epoch: p1.epoch, repeat: false });
            await b.r.until(() => b.r.got(ch('s')).length === 2, 'both messages on b');
            expect(b.r.got(ch('s')).map(frameOffset)).toEqual([1, 2]);
            expect(await a.h.since(ch('s'), 0, 10)).toEqual(await b.h.since(ch('s'), 0, 10));
          });
        }
      });
    }

    if (!opts.sharedBackend) return;

    describe('across instances', () => {
      it('delivers a publish on one instance to a subscriber on another', async () => {
        const ch = names();
        const a = await ready();
        const b = await ready();
        await b.b.subscribe(ch('news'));
        await a.b.publish(ch('news'), 'hello from a');
        await b.r.untilReceived(ch('news'), 'hello from a');
        expect(b.r.got(ch('news'))).toEqual(['hello from a']);
      });

      it('delivers only to instances subscribed to the channel', async () => {
        const ch = names();
        const a = await ready();
        const b = await ready();
        await b.b.subscribe(ch('x'));
        await a.b.subscribe(ch('sentinel'));
        await a.b.publish(ch('x'), 'for b only');
        await a.b.publish(ch('sentinel'), 'done');
        await b.r.untilReceived(ch('x'), 'for b only');
        await a.r.untilReceived(ch('sentinel'), 'done');
        expect(a.r.got(ch('x'))).toEqual([]);
      });

      it('delivers control messages to every instance', async () => {
        const a = await ready();
        const b = await ready();
        const user = `u-${randomUUID()}`;
        await a.b.publishControl({ kind: 'disconnect', user });
        for (const x of [a, b]) await x.r.until(() => x.r.controls.some((c) => controlUser(c) === user), 'the control message');
        for (const x of [a, b]) expect(x.r.controls.filter((c) => controlUser(c) === user)).toHaveLength(1);
      });

      it('lists every live instance among the nodes, with distinct names, and drops one that closed', async () => {
        const a = await ready();
        const b = await ready();
        expect(a.b.instance).not.toBe(b.b.instance);
        const both = async (): Promise<boolean> => {
          const list = await a.b.nodes();
          return list.includes(a.b.instance) && list.includes(b.b.instance);
        };
        await pollFor(both, 'both instances among the nodes');
        expect(await b.b.nodes()).toEqual(expect.arrayContaining([a.b.instance, b.b.instance]));
        await b.b.close();
        // A clean close leaves the registry at once (no lease to wait for).
        expect(await a.b.nodes()).not.toContain(b.b.instance);
      });

      it('lists every live instance with the info it reported, and drops the info of one that closed', async () => {
        const a = await ready();
        const b = await ready();
        const infoOf = async (x: { b: Broker }): Promise<unknown> => (await a.b.nodeInfos!()).find((n) => n.instance === x.b.instance)?.info;
        await pollFor(async () => (await infoOf(a)) !== undefined && (await infoOf(b)) !== undefined, 'both infos among the nodes');
        expect(await infoOf(a)).toEqual(a.r.info);
        expect(await infoOf(b)).toEqual(b.r.info);
        // Renewed with what the node reports now.
        b.r.info = { ...b.r.info, subscriptions: 7 };
        await pollFor(async () => ((await infoOf(b)) as { subscriptions?: number } | undefined)?.subscriptions === 7, 'the renewed info');
        await b.b.close();
        expect((await a.b.nodeInfos!()).map((n) => n.instance)).not.toContain(b.b.instance);
      });

      it('delivers 10 000 messages over 20 channels between two instances in order, without duplicates', async () => {
        const ch = names();
        const a = await ready();
        const b = await ready();
        const channels = Array.from({ length: 20 }, (_, i) => ch(`bulk${i}`));
        await Promise.all(channels.map((c) => b.b.subscribe(c)));
        const total = 10_000;
        for (let start = 0; start < total; start += 1000) {
          const sends: Array<Promise<void>> = [];
          for (let i = start; i < start + 1000; i++) {
            const c = channels[i % channels.length] ?? '';
            sends.push(a.b.publish(c, `${c}#${Math.floor(i / channels.length)}`));
          }
          await Promise.all(sends);
        }
        await b.r.until(() => b.r.total >= total, `${total} messages`);
        const perChannel = total / channels.length;
        for (const c of channels) {
          expect(b.r.got(c)).toEqual(Array.from({ length: perChannel }, (_, i) => `${c}#${i}`));
        }
        expect(b.r.total).toBe(total);
      });
    });
  });
}
