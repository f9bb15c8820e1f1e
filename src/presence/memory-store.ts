/**
 * Presence in process memory, for the embedded broker: the same semantics as
 * the Redis store (broker/redis-presence.ts), leases included, so the node
 * side and its tests do not care which one they have. Join/leave frames go
 * through `publish` synchronously, in the order of the changes.
 *
 * Bounded by what is subscribed: a channel's state is dropped once it holds no
 * entry and no lease.
 */
import { randomBytes } from 'node:crypto';
import { encodeEvent, newEventBase, type WebhookEventName } from '../webhooks/events.js';
import type { EventSink } from '../webhooks/sink.js';
import type { PresenceCall, PresenceEntry, PresenceMember, PresenceStore, Swept } from './store.js';
import { encodeJoin, encodeLeave } from './store.js';

interface Stored {
  readonly user: string;
  readonly info: string | undefined;
  readonly node: string;
  readonly seq: number;
}

interface ChannelPresence {
  seq: number;
  readonly epoch: string;
  readonly entries: Map<string, Stored>;
  /** user → its connections, in the order they were added (oldest first). */
  readonly users: Map<string, Map<string, Stored>>;
  /** node → lease expiry (ms). */
  readonly leases: Map<string, number>;
  /** node → its connections here. */
  readonly byNode: Map<string, Set<string>>;
}

export function createMemoryPresence(
  publish: (channel: string, frame: string) => void,
  nowMs: () => number = Date.now,
  /** Webhooks on: member events go here, in the order of the changes. */
  events?: EventSink,
): PresenceStore {
  const channels = new Map<string, ChannelPresence>();
  const idBase = newEventBase();
  let eventNo = 0;

  function event(name: WebhookEventName, channel: string, user: string): void {
    events?.append(channel, [encodeEvent(`${idBase}.${++eventNo}`, name, channel, user, nowMs())]);
  }

  function get(channel: string): ChannelPresence {
    let c = channels.get(channel);
    if (!c) channels.set(channel, (c = { seq: 0, epoch: randomBytes(6).toString('base64url'), entries: new Map(), users: new Map(), leases: new Map(), byNode: new Map() }));
    return c;
  }

  function forget(channel: string, c: ChannelPresence): void {
    if (c.entries.size === 0 && c.leases.size === 0) channels.delete(channel);
  }

  function drop(channel: string, c: ChannelPresence, conn: string, joinLeave: boolean): boolean {
    const e = c.entries.get(conn);
    if (!e) return false;
    c.entries.delete(conn);
    c.byNode.get(e.node)?.delete(conn);
    const mine = c.users.get(e.user);
    mine?.delete(conn);
    if (mine && mine.size === 0) {
      c.users.delete(e.user);
      if (joinLeave) publish(channel, encodeLeave(channel, e.user));
      event('member_removed', channel, e.user);
    }
    return true;
  }

  function sweep(channel: string, c: ChannelPresence, joinLeave: boolean): Swept {
    const now = nowMs();
    let leases = 0;
    let entries = 0;
    for (const [node, until] of c.leases) {
      if (until > now) continue;
      for (const conn of c.byNode.get(node) ?? []) if (drop(channel, c, conn, joinLeave)) entries++;
      c.byNode.delete(node);
      c.leases.delete(node);
      leases++;
    }
    return { leases, entries };
  }

  function renewLease(c: ChannelPresence, node: string, call: PresenceCall): boolean {
    const had = c.leases.has(node);
    c.leases.set(node, nowMs() + call.leaseMs);
    return !had;
  }

  function addOne(channel: string, c: ChannelPresence, node: string, e: PresenceEntry, joinLeave: boolean, silent: boolean): number {
    const had = c.entries.get(e.conn);
    if (had) return had.seq;
    const seq = e.seq ?? c.seq + 1;
    c.seq = Math.max(c.seq, seq);
    const stored: Stored = { user: e.user, info: e.info, node, seq };
    c.entries.set(e.conn, stored);
    let set = c.byNode.get(node);
    if (!set) c.byNode.set(node, (set = new Set()));
    set.add(e.conn);
    let mine = c.users.get(e.user);
    if (!mine) {
      c.users.set(e.user, (mine = new Map()));
      mine.set(e.conn, stored);
      if (!silent) {
        if (joinLeave) publish(channel, encodeJoin(channel, e.user, e.info));
        event('member_added', channel, e.user);
      }
    } else {
      mine.set(e.conn, stored);
    }
    return seq;
  }

  return {
    add(channel, node, entries, call, silent = false) {
      const c = get(channel);
      const swept = sweep(channel, c, call.joinLeave);
      renewLease(c, node, call);
      const seqs = entries.map((e) => addOne(channel, c, node, e, call.joinLeave, silent));
      return Promise.resolve({ ...swept, epoch: c.epoch, seqs });
    },
    remove(channel, node, conns, call, release) {
      const c = channels.get(channel);
      if (!c) return Promise.resolve({ leases: 0, entries: 0, epoch: '' });
      const swept = sweep(channel, c, call.joinLeave);
      for (const conn of conns) if (c.entries.get(conn)?.node === node) drop(channel, c, conn, call.joinLeave);
      if (release && (c.byNode.get(node)?.size ?? 0) === 0) {
        c.byNode.delete(node);
        c.leases.delete(node);
      }
      forget(channel, c);
      return Promise.resolve({ ...swept, epoch: c.epoch });
    },
    renew(channel, node, call) {
      const c = get(channel);
      const swept = sweep(channel, c, call.joinLeave);
      const lost = renewLease(c, node, call);
      return Promise.resolve({ ...swept, epoch: c.epoch, held: c.byNode.get(node)?.size ?? 0, lost });
    },
    resync(channel, node, keep, call) {
      const c = get(channel);
      const swept = sweep(channel, c, call.joinLeave);
      renewLease(c, node, call);
      const wanted = new Set(keep);
      for (const conn of [...(c.byNode.get(node) ?? [])]) if (!wanted.has(conn)) drop(channel, c, conn, call.joinLeave);
      const missing = keep.filter((conn) => c.entries.get(conn)?.node !== node);
      return Promise.resolve({ ...swept, epoch: c.epoch, missing });
    },
    presence(channel, max, call) {
      const c = channels.get(channel);
      if (!c) return Promise.resolve({ leases: 0, entries: 0, members: [], users: 0, connections: 0, truncated: false });
      const swept = sweep(channel, c, call.joinLeave);
      const members: PresenceMember[] = [];
      for (const [user, mine] of c.users) {
        if (members.length >= max) break;
        let oldest: Stored | undefined;
        for (const s of mine.values()) if (!oldest || s.seq < oldest.seq) oldest = s;
        members.push({ user, info: oldest?.info, conns: mine.size });
      }
      const snapshot = { members, users: c.users.size, connections: c.entries.size, truncated: c.users.size > members.length };
      forget(channel, c);
      return Promise.resolve({ ...swept, ...snapshot });
    },
    evict(channel, node, call) {
      const c = channels.get(channel);
      if (!c) return Promise.resolve({ leases: 0, entries: 0, removed: 0, left: 0 });
      const swept = sweep(channel, c, call.joinLeave);
      let removed = 0;
      for (const conn of [...(c.byNode.get(node) ?? [])]) if (drop(channel, c, conn, call.joinLeave)) removed++;
      c.byNode.delete(node);
      c.leases.delete(node);
      forget(channel, c);
      return Promise.resolve({ ...swept, removed, left: 0 });
    },
    stats(channel, call) {
      const c = channels.get(channel);
      if (!c) return Promise.resolve({ leases: 0, entries: 0, users: 0, connections: 0 });
      const swept = sweep(channel, c, call.joinLeave);
      const r = { ...swept, users: c.users.size, connections: c.entries.size };
      forget(channel, c);
      return Promise.resolve(r);
    },
  };
}
