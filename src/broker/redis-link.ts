/**
 * One subscriber connection and the channels it must hold. We resubscribe
 * ourselves (ioredis autoResubscribe is off) so that `live()` becomes true only
 * once Redis has confirmed every wanted channel on the current connection.
 *
 * The subscription state and the (S)SUBSCRIBE/(S)UNSUBSCRIBE commands are the
 * SubscriptionBatcher's (sub-batcher.ts): changes coalesced per event-loop
 * turn into multi-channel commands of bounded size, in call order per channel,
 * a bounded number in flight. Only the connection dropping is a loss here: a
 * slow or failed (un)subscribe never recycles the connection.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { Log } from '../observability/logger.js';
import { disconnectRedis, errorText, unavailable, untimedWhileReady, type TransportEvents } from './redis-conn.js';
import { SubscriptionBatcher } from './sub-batcher.js';

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

export class SubLink {
  private readonly redis: Redis;
  private readonly batcher: SubscriptionBatcher;
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
    this.batcher = new SubscriptionBatcher({
      name: o.name,
      log: o.log,
      batchKey: o.batchKey,
      stallMs: r.options.commandTimeout ?? 1000,
      onChange: () => o.events.change(),
      send: (op, chs) => {
        if (op === 'subscribe') return o.sharded ? r.ssubscribe(...chs) : r.subscribe(...chs);
        return o.sharded ? r.sunsubscribe(...chs) : r.unsubscribe(...chs);
      },
    });
    // (Un)subscribe commands are bounded by the batcher's stall watchdog (a
    // command ioredis timed out would leave its count of commands in flight wrong).
    untimedWhileReady(r);
  }

  connected(): boolean {
    return !this.closed && this.redis.status === 'ready';
  }

  live(): boolean {
    return this.connected() && this.batcher.live();
  }

  isConfirmed(ch: string): boolean {
    return this.batcher.isConfirmed(ch);
  }

  start(): void {
    this.redis.connect().catch((err: unknown) => {
      // The retry strategy keeps trying; the failure is reported through 'error'/'close'.
      this.o.log.debug({ link: this.o.name, err: errorText(err) }, 'redis subscriber connect attempt failed');
    });
  }

  /** User subscribe: confirmed now or once Redis answers, or rejected (nothing kept) when the connection is down. */
  add(ch: string): Promise<void> {
    if (!this.connected()) return Promise.reject(unavailable('broker subscriber connection is down'));
    return this.batcher.add(ch);
  }

  /** Keep a channel subscribed from now on, across reconnects. */
  pin(ch: string): void {
    this.batcher.pin(ch);
  }

  /** Drop a channel (unsubscribe if connected). Resolves when Redis answered; never rejects. */
  remove(ch: string): Promise<void> {
    return this.batcher.remove(ch);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.batcher.connectionDown('broker is closed');
    this.batcher.flushLogs();
    await disconnectRedis(this.redis);
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
    this.o.log.debug({ link: this.o.name, channels: this.batcher.wanted.size }, 'redis subscriber connected; resubscribing');
    this.batcher.connectionUp();
    this.o.events.change();
  }

  private onClose(): void {
    this.batcher.connectionDown('broker subscriber connection dropped');
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
