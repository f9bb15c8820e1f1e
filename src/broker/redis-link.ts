/**
 * One subscriber connection and the channels it must hold. We resubscribe
 * ourselves (ioredis autoResubscribe is off) so that `live()` becomes true only
 * once Redis has confirmed every wanted channel on the current connection.
 *
 * Ordering: SUBSCRIBE/UNSUBSCRIBE for a channel go out on one connection in
 * call order, so a subscribe racing an unsubscribe ends in the state of the
 * last call; `wanted` mirrors that state and is what a reconnect restores.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Log } from '../observability/logger.js';
import { disconnectRedis, errorText, unavailable, type TransportEvents } from './redis-conn.js';

export interface LinkOptions {
  /** For logs (standalone: 'subscriber'; cluster: the node's host:port). */
  readonly name: string;
  /** redis:// URL (standalone); host and port may instead come in redisOptions (cluster). */
  readonly url?: string;
  readonly redisOptions: RedisOptions;
  /** SSUBSCRIBE/SUNSUBSCRIBE/smessage (cluster) instead of SUBSCRIBE/UNSUBSCRIBE/message. */
  readonly sharded: boolean;
  readonly log: Log;
  readonly events: TransportEvents;
  /** Cluster: a command was answered MOVED (topology changed). */
  readonly onMoved?: () => void;
  /** Channels with the same key may share one command (cluster: the slot). */
  readonly batchKey?: (redisChannel: string) => number;
}

/** Channels per SUBSCRIBE command when resubscribing. */
const BATCH = 500;
/** SUBSCRIBE commands awaiting their answer at once when resubscribing. */
const WINDOW = 32;

export class SubLink {
  /** Channels this connection must hold (user and pinned). */
  readonly wanted = new Set<string>();
  private readonly confirmedSet = new Set<string>();
  /**
   * Channels that must be confirmed for the link to be live: pinned ones, and
   * every channel Redis confirmed once (which a reconnect must restore). A
   * first subscribe still in flight is not in it, so new channels do not make
   * a healthy node look down. Always a superset of confirmedSet.
   */
  private readonly established = new Set<string>();
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly redis: Redis;
  private epoch = 0;
  private everReady = false;
  private errorLogged = false;
  private closed = false;

  constructor(private readonly o: LinkOptions) {
    this.redis = o.url !== undefined ? new Redis(o.url, o.redisOptions) : new Redis(o.redisOptions);
    const r = this.redis;
    r.on(o.sharded ? 'smessage' : 'message', (channel: string, payload: string) => {
      o.events.message(channel, payload);
    });
    r.on('ready', () => this.onReady());
    r.on('close', () => this.onClose());
    r.on('error', (err: Error) => this.onError(err));
    r.on('moved', () => o.onMoved?.());
  }

  connected(): boolean {
    return !this.closed && this.redis.status === 'ready';
  }

  live(): boolean {
    return this.connected() && this.confirmedSet.size === this.established.size;
  }

  isConfirmed(ch: string): boolean {
    return this.confirmedSet.has(ch);
  }

  start(): void {
    this.redis.connect().catch((err: unknown) => {
      // The retry strategy keeps trying; the failure is reported through 'error'/'close'.
      this.o.log.debug({ link: this.o.name, err: errorText(err) }, 'redis subscriber connect attempt failed');
    });
  }

  /** User subscribe: confirmed now, or rejected (nothing kept) when the connection is down. */
  add(ch: string): Promise<void> {
    if (!this.connected()) return Promise.reject(unavailable('broker subscriber connection is down'));
    this.wanted.add(ch);
    if (this.confirmedSet.has(ch)) return Promise.resolve();
    return this.inflight.get(ch) ?? this.send([ch]);
  }

  /** Keep a channel subscribed from now on, across reconnects. */
  pin(ch: string): void {
    this.wanted.add(ch);
    this.established.add(ch);
    if (this.connected() && !this.confirmedSet.has(ch) && !this.inflight.has(ch)) {
      this.send([ch]).catch((err: unknown) => {
        this.o.log.debug({ link: this.o.name, err: errorText(err) }, 'redis subscribe of an internal channel failed');
      });
    }
  }

  /** Drop a channel (unsubscribe if connected). Resolves when Redis answered; never rejects. */
  remove(ch: string): Promise<void> {
    this.wanted.delete(ch);
    this.confirmedSet.delete(ch);
    this.established.delete(ch);
    this.inflight.delete(ch);
    this.o.events.change();
    if (!this.connected()) return Promise.resolve();
    const cmd = this.o.sharded ? this.redis.sunsubscribe(ch) : this.redis.unsubscribe(ch);
    return cmd.then(
      () => undefined,
      (err: unknown) => {
        // A dropped connection releases every subscription anyway; a timeout means a sick connection.
        this.o.log.warn({ link: this.o.name, err: errorText(err) }, 'redis unsubscribe was not confirmed');
        this.recycle();
      },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await disconnectRedis(this.redis);
  }

  private send(chs: string[]): Promise<void> {
    const epoch = this.epoch;
    const cmd = this.o.sharded ? this.redis.ssubscribe(...chs) : this.redis.subscribe(...chs);
    const p = cmd.then(
      () => {
        if (epoch !== this.epoch) throw unavailable('broker subscriber connection dropped');
        for (const ch of chs) {
          if (this.inflight.get(ch) === p) this.inflight.delete(ch);
          if (this.wanted.has(ch)) {
            this.confirmedSet.add(ch);
            this.established.add(ch);
          }
        }
        this.o.events.change();
      },
      (err: unknown) => {
        for (const ch of chs) if (this.inflight.get(ch) === p) this.inflight.delete(ch);
        if (epoch === this.epoch && this.connected()) {
          // No answer (timeout) or an error on a live connection: start over on a fresh one.
          this.o.log.warn({ link: this.o.name, err: errorText(err), channels: chs.length }, 'redis subscribe failed; reconnecting');
          this.recycle();
        }
        throw unavailable('broker did not confirm the subscription');
      },
    );
    for (const ch of chs) this.inflight.set(ch, p);
    return p;
  }

  /** Drop the connection and let the retry strategy open a new one (which resubscribes). */
  private recycle(): void {
    if (!this.closed && this.redis.status === 'ready') this.redis.disconnect(true);
  }

  private onReady(): void {
    if (this.closed) return;
    if (this.everReady) this.o.events.reconnected('subscriber');
    this.everReady = true;
    this.errorLogged = false;
    const todo = [...this.wanted].filter((ch) => !this.confirmedSet.has(ch) && !this.inflight.has(ch));
    this.o.log.debug({ link: this.o.name, channels: todo.length }, 'redis subscriber connected; resubscribing');
    void this.resubscribe(todo, this.epoch);
    this.o.events.change();
  }

  /**
   * Sends the SUBSCRIBE batches with at most WINDOW commands awaiting their
   * answer, so that each one gets its whole command timeout however many
   * channels there are. A failed batch recycles the connection (see send).
   */
  private async resubscribe(todo: readonly string[], epoch: number): Promise<void> {
    const list = batches(todo, this.o.batchKey);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < list.length && epoch === this.epoch && !this.closed) {
        const batch = (list[next++] ?? []).filter((ch) => this.wanted.has(ch) && !this.confirmedSet.has(ch) && !this.inflight.has(ch));
        if (batch.length === 0) continue;
        try {
          await this.send(batch);
        } catch (err) {
          this.o.log.debug({ link: this.o.name, err: errorText(err) }, 'redis resubscribe batch failed');
          return;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(WINDOW, list.length) }, worker));
  }

  private onClose(): void {
    this.epoch += 1;
    this.confirmedSet.clear();
    this.inflight.clear();
    if (this.closed) return;
    this.o.events.failure('subscriber', 'connection closed');
    this.o.events.change();
  }

  private onError(err: Error): void {
    const msg = errorText(err);
    if (/Command queue state error/.test(msg)) {
      // An unsolicited reply (e.g. SUNSUBSCRIBE after a slot moved): ioredis' view is off; reconnect.
      this.o.log.warn({ link: this.o.name, err: msg }, 'redis subscriber out of sync; reconnecting');
      this.recycle();
      return;
    }
    if (this.closed) return;
    if (!this.errorLogged) this.o.log.warn({ link: this.o.name, err: msg }, 'redis subscriber connection error');
    else this.o.log.debug({ link: this.o.name, err: msg }, 'redis subscriber connection error');
    this.errorLogged = true;
    this.o.events.failure('subscriber', msg);
  }
}

/** Splits channels into SUBSCRIBE commands: at most BATCH each, one batch key (slot) per command. */
function batches(chs: readonly string[], key?: (ch: string) => number): string[][] {
  const byKey = new Map<number, string[]>();
  for (const ch of chs) {
    const k = key ? key(ch) : 0;
    const g = byKey.get(k);
    if (g) g.push(ch);
    else byKey.set(k, [ch]);
  }
  const out: string[][] = [];
  for (const g of byKey.values()) for (let i = 0; i < g.length; i += BATCH) out.push(g.slice(i, i + BATCH));
  return out;
}
