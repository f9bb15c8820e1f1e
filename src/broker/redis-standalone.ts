/**
 * Standalone Redis: one publishing connection (PUBLISH, fails fast while down)
 * and one subscriber connection (SubLink) holding every channel of this node.
 * The server is named by a URL or found through Redis Sentinel (the current
 * master of a group, looked up again on every reconnect): see standaloneConnection.
 */
import { Redis } from 'ioredis';
import type { Log } from '../observability/logger.js';
import { SubLink } from './redis-link.js';
import { Scripts, connOptions, disconnectRedis, errorText, standaloneConnection, untimedWhileReady, type ConnTuning, type StandaloneTarget, type Publisher, type SubRouter, type TransportEvents } from './redis-conn.js';

export class StandalonePublisher implements Publisher {
  private readonly redis: Redis;
  private readonly scripts: Scripts;
  private lastDelayMs = 0;
  private everReady = false;
  private errorLogged = false;
  private closed = false;

  constructor(target: StandaloneTarget, tuning: ConnTuning, connectionName: string, private readonly log: Log, private readonly events: TransportEvents) {
    const base = connOptions(tuning, (d) => {
      this.lastDelayMs = d;
    });
    const { url, options } = standaloneConnection(target, { ...base, connectionName }, tuning);
    this.redis = url !== undefined ? new Redis(url, options) : new Redis(options);
    this.scripts = new Scripts(this.redis);
    // Publishes are bounded by the broker's publish timeout (redis-broker.ts guarded).
    untimedWhileReady(this.redis);
    this.redis.on('ready', () => {
      if (this.closed) return;
      if (this.everReady) events.reconnected('publisher');
      this.everReady = true;
      this.errorLogged = false;
      this.lastDelayMs = 0;
      events.change();
    });
    this.redis.on('close', () => {
      if (this.closed) return;
      events.failure('publisher', 'connection closed');
      events.change();
    });
    this.redis.on('error', (err: Error) => {
      if (this.closed) return;
      const msg = errorText(err);
      if (!this.errorLogged) log.warn({ conn: 'publisher', err: msg }, 'redis publisher connection error');
      else log.debug({ conn: 'publisher', err: msg }, 'redis publisher connection error');
      this.errorLogged = true;
      events.failure('publisher', msg);
    });
  }

  ready(): boolean {
    return !this.closed && this.redis.status === 'ready';
  }

  retryAfterSec(): number {
    return Math.max(1, Math.ceil(this.lastDelayMs / 1000));
  }

  publish(redisChannel: string, payload: string): Promise<void> {
    return this.redis.publish(redisChannel, payload).then(() => undefined);
  }

  script(lua: string, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    return this.scripts.run(lua, keys, args);
  }

  start(): void {
    this.redis.connect().catch((err: unknown) => {
      this.log.debug({ conn: 'publisher', err: errorText(err) }, 'redis publisher connect attempt failed');
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await disconnectRedis(this.redis);
  }
}

/** Every channel on the one subscriber connection. */
export class StandaloneRouter implements SubRouter {
  private readonly link: SubLink;

  constructor(target: StandaloneTarget, tuning: ConnTuning, connectionName: string, log: Log, events: TransportEvents) {
    const { url, options } = standaloneConnection(target, { ...connOptions(tuning, () => undefined), connectionName }, tuning);
    this.link = new SubLink({
      name: 'subscriber',
      ...(url !== undefined ? { url } : {}),
      redisOptions: options,
      sharded: false,
      log,
      events,
    });
  }

  add(redisChannel: string): Promise<void> {
    return this.link.add(redisChannel);
  }
  pin(redisChannel: string): void {
    this.link.pin(redisChannel);
  }
  remove(redisChannel: string): Promise<void> {
    return this.link.remove(redisChannel);
  }
  confirmed(redisChannel: string): boolean {
    return this.link.isConfirmed(redisChannel);
  }
  live(): boolean {
    return this.link.live();
  }
  start(): void {
    this.link.start();
  }
  close(): Promise<void> {
    return this.link.close();
  }
}
