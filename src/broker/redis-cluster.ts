/**
 * Redis Cluster with sharded pub/sub (Redis >= 7): SPUBLISH through an ioredis
 * Cluster client (which routes by slot and follows MOVED), and our own
 * subscriber connection per master holding SSUBSCRIBE for the channels whose
 * slot that master owns. ioredis' own sharded subscribers resubscribe without
 * telling anyone when it is done, so readiness could not wait for Redis'
 * confirmation; hence the SubLinks here.
 *
 * Topology comes from the Cluster client's slot table ('refresh' event). When a
 * subscriber connection drops, a command is answered MOVED, or anything is not
 * live, the slot table is refreshed every second until it is; channels whose
 * slot moved are released on the old master and subscribed on the new one
 * (reported as a subscriber reconnect: messages may have been missed), and
 * connections to nodes that are no longer masters are closed.
 */
import { Cluster, type Redis } from 'ioredis';
import type { Log } from '../observability/logger.js';
import { SubLink } from './redis-link.js';
import {
  Scripts,
  backoffMs,
  RESP_VERSION,
  connOptions,
  errorText,
  parseHostPort,
  unavailable,
  type ConnTuning,
  type Publisher,
  type SubRouter,
  type TransportEvents,
} from './redis-conn.js';

const SLOTS = 16384;

const CRC16_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

/** The cluster slot of a key (CRC16/XMODEM mod 16384, honouring `{hash tags}`), as CLUSTER KEYSLOT. */
export function keySlot(key: string): number {
  let k = key;
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) k = key.slice(open + 1, close);
  }
  let crc = 0;
  for (const b of Buffer.from(k, 'utf8')) crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ b) & 0xff] ?? 0);
  return crc % SLOTS;
}

export class ClusterTransport implements Publisher, SubRouter {
  private readonly cluster: Cluster;
  private readonly scripts: Scripts;
  /** master node key (host:port) → its subscriber connection */
  private readonly links = new Map<string, SubLink>();
  /** redis channel → master node key it is subscribed on */
  private readonly owner = new Map<string, string>();
  private readonly pinned = new Set<string>();
  /** slot → master node key, from the last slot-table refresh */
  private topology: string[] | undefined;
  /** node keys of the masters in `topology` */
  private masters = new Set<string>();
  private healTimer: NodeJS.Timeout | undefined;
  private lastDelayMs = 0;
  private everReady = false;
  private errorLogged = false;
  private closed = false;
  private readonly linkEvents: TransportEvents;

  constructor(
    seeds: readonly string[],
    private readonly tuning: ConnTuning,
    private readonly connName: string,
    private readonly log: Log,
    private readonly events: TransportEvents,
  ) {
    this.cluster = new Cluster(seeds.map(parseHostPort), {
      lazyConnect: true,
      enableOfflineQueue: false,
      enableReadyCheck: true,
      clusterRetryStrategy: (times: number) => {
        this.lastDelayMs = backoffMs(times);
        return this.lastDelayMs;
      },
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100,
      slotsRefreshTimeout: 1000,
      redisOptions: {
        // Node connections are lazy (ioredis) and keep a short offline queue while they
        // connect; maxRetriesPerRequest 0 flushes it on any drop. While a node connection
        // is in its 'connect' state (ready check, CLIENT SETNAME/SETINFO round trips),
        // ioredis writes SPUBLISH (flagged 'loading') straight away while earlier commands
        // still sit in the offline queue, which reorders publishes. So: no ready check, no
        // client name or info, every master connected eagerly (warmUp), and the publisher
        // counts as ready only when every master connection is.
        enableReadyCheck: false,
        disableClientInfo: true,
        protocol: RESP_VERSION,
        connectTimeout: tuning.connectTimeoutMs,
        // No ioredis per-command timer (see untimedWhileReady in redis-conn.ts):
        // publishes and scripts are bounded by the broker's publish timeout, and
        // these connections send no handshake commands.
        keepAlive: tuning.keepAliveMs,
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
      },
    });
    this.scripts = new Scripts(this.cluster);
    this.linkEvents = {
      ...events,
      failure: (conn, reason) => {
        events.failure(conn, reason);
        this.heal();
      },
      change: () => {
        events.change();
        this.heal();
      },
    };
    this.cluster.on('refresh', () => this.onTopology());
    this.cluster.on('+node', (node: Redis) => {
      node.on('ready', () => events.change());
      node.on('close', () => this.linkEvents.change());
    });
    this.cluster.on('-node', () => this.linkEvents.change());
    this.cluster.on('ready', () => {
      if (this.closed) return;
      if (this.everReady) events.reconnected('publisher');
      this.everReady = true;
      this.errorLogged = false;
      this.lastDelayMs = 0;
      this.onTopology();
      this.warmUp();
      events.change();
    });
    for (const st of ['close', 'reconnecting', 'end']) {
      this.cluster.on(st, () => {
        if (this.closed) return;
        if (st === 'close') events.failure('publisher', 'cluster connection closed');
        events.change();
      });
    }
    this.cluster.on('error', (err: Error) => {
      if (this.closed) return;
      const msg = errorText(err);
      if (!this.errorLogged) log.warn({ conn: 'cluster', err: msg }, 'redis cluster error');
      else log.debug({ conn: 'cluster', err: msg }, 'redis cluster error');
      this.errorLogged = true;
      events.failure('publisher', msg);
    });
    this.cluster.on('node error', (err: Error, key: string) => {
      log.debug({ node: key, err: errorText(err) }, 'redis cluster node error');
    });
  }

  // ---- Publisher ----------------------------------------------------------

  /** The cluster client is up and holds a ready connection to every master of the slot table. */
  ready(): boolean {
    if (this.closed || this.cluster.status !== 'ready' || this.masters.size === 0) return false;
    const up = new Set<string>();
    for (const n of this.cluster.nodes('master')) if (n.status === 'ready') up.add(`${n.options.host ?? ''}:${n.options.port ?? ''}`);
    for (const key of this.masters) if (!up.has(key)) return false;
    return true;
  }

  /** Opens the publishing connection to every master now, so none is opened under traffic. */
  private warmUp(): void {
    if (this.cluster.status !== 'ready') return;
    for (const n of this.cluster.nodes('master')) {
      if (n.status === 'wait') {
        n.connect().catch((err: unknown) => {
          this.log.debug({ err: errorText(err) }, 'redis cluster node connect failed');
        });
      }
    }
  }

  retryAfterSec(): number {
    return Math.max(1, Math.ceil(this.lastDelayMs / 1000));
  }

  publish(redisChannel: string, payload: string): Promise<void> {
    return this.cluster.spublish(redisChannel, payload).then(() => undefined);
  }

  /** Runs on the master that owns the slot of the first key (every key and shard channel of a script share it). */
  script(lua: string, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    return this.scripts.run(lua, keys, args);
  }

  // ---- SubRouter ----------------------------------------------------------

  add(redisChannel: string): Promise<void> {
    const key = this.topology?.[keySlot(redisChannel)];
    const link = key === undefined ? undefined : this.links.get(key);
    if (key === undefined || !link) return Promise.reject(unavailable('broker cluster topology is not known'));
    this.owner.set(redisChannel, key);
    return link.add(redisChannel);
  }

  pin(redisChannel: string): void {
    this.pinned.add(redisChannel);
    this.assign(redisChannel);
  }

  remove(redisChannel: string): Promise<void> {
    const key = this.owner.get(redisChannel);
    this.owner.delete(redisChannel);
    const link = key === undefined ? undefined : this.links.get(key);
    return link ? link.remove(redisChannel) : Promise.resolve();
  }

  confirmed(redisChannel: string): boolean {
    const key = this.owner.get(redisChannel);
    return key !== undefined && (this.links.get(key)?.isConfirmed(redisChannel) ?? false);
  }

  live(): boolean {
    if (this.closed || !this.topology || this.links.size === 0) return false;
    for (const ch of this.pinned) if (!this.owner.has(ch)) return false;
    for (const link of this.links.values()) if (!link.live()) return false;
    return true;
  }

  start(): void {
    if (this.cluster.status !== 'wait') return; // one object plays both roles: started once
    this.cluster.connect().catch((err: unknown) => {
      this.log.debug({ err: errorText(err) }, 'redis cluster connect attempt failed');
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.healTimer) clearInterval(this.healTimer);
    const links = [...this.links.values()];
    this.links.clear();
    const c = this.cluster;
    const ended = new Promise<void>((resolve) => {
      if (c.status === 'end') resolve();
      c.once('end', () => resolve());
      setTimeout(resolve, 1000).unref();
    });
    c.disconnect();
    await Promise.all([...links.map((l) => l.close()), ended]);
  }

  // ---- topology -----------------------------------------------------------

  /** Subscribe a channel on the master that owns its slot now, if known. */
  private assign(redisChannel: string): void {
    const key = this.topology?.[keySlot(redisChannel)];
    const link = key === undefined ? undefined : this.links.get(key);
    if (key === undefined || !link) return;
    this.owner.set(redisChannel, key);
    link.pin(redisChannel);
  }

  private onTopology(): void {
    if (this.closed) return;
    const topo: string[] = new Array<string>(SLOTS);
    const masters = new Set<string>();
    for (let s = 0; s < SLOTS; s++) {
      const key = this.cluster.slots[s]?.[0];
      if (key !== undefined) {
        topo[s] = key;
        masters.add(key);
      }
    }
    if (masters.size === 0) return;
    this.warmUp();
    const prev = this.topology;
    const changed = prev === undefined || topo.some((key, slot) => prev[slot] !== key);
    this.topology = topo;
    this.masters = masters;
    for (const key of masters) if (!this.links.has(key)) this.openLink(key);
    if (changed) {
      // Move channels whose slot changed hands (failover, resharding).
      const moves: Array<[string, string, string]> = [];
      for (const [ch, key] of this.owner) {
        const now = topo[keySlot(ch)];
        if (now !== undefined && now !== key) moves.push([ch, key, now]);
      }
      if (moves.length > 0) {
        this.log.info({ channels: moves.length }, 'redis cluster slots moved; resubscribing their channels on the new masters');
        // What the new master published before our SSUBSCRIBE there is missed, as
        // after a subscriber reconnect: reported the same way, before resubscribing.
        this.events.reconnected('subscriber');
      }
      for (const [ch, key, now] of moves) {
        void this.links.get(key)?.remove(ch);
        this.owner.set(ch, now);
        this.links.get(now)?.pin(ch);
      }
    }
    for (const ch of this.pinned) if (!this.owner.has(ch)) this.assign(ch);
    for (const [key, link] of [...this.links]) {
      if (!masters.has(key)) {
        this.links.delete(key);
        void link.close();
        this.log.info({ node: key }, 'redis cluster node is no longer a master; closed its subscriber');
      }
    }
    if (prev === undefined) this.log.info({ masters: masters.size }, 'redis cluster topology known');
    this.events.change();
  }

  private openLink(key: string): void {
    const { host, port } = parseHostPort(key);
    const link = new SubLink({
      name: key,
      redisOptions: { ...connOptions(this.tuning, () => undefined), host, port, connectionName: `${this.connName}-sub` },
      sharded: true,
      log: this.log,
      events: this.linkEvents,
      onMoved: () => this.heal(),
      batchKey: keySlot,
    });
    this.links.set(key, link);
    link.start();
  }

  /** While anything is not live, refresh the slot table every second (and once right now). */
  private heal(): void {
    if (this.closed || this.healTimer) return;
    if (this.ready() && this.live()) return;
    const step = (): void => {
      if (this.closed || (this.ready() && this.live())) {
        clearInterval(this.healTimer);
        this.healTimer = undefined;
        return;
      }
      if (this.cluster.status === 'ready') {
        this.warmUp();
        this.cluster.refreshSlotsCache();
      }
    };
    this.healTimer = setInterval(step, 1000);
    this.healTimer.unref();
    setImmediate(step);
  }
}
