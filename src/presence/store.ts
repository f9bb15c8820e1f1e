/**
 * The presence store: who is subscribed to each presence channel, across the
 * cluster. Implemented in memory (presence/memory-store.ts, the embedded
 * broker) and in Redis (broker/redis-presence.ts, through the broker's own
 * connections); the node side (presence/presence.ts) keeps its leases.
 *
 * Entries are per connection and owned by a node (its boot id): a node's
 * entries in a channel live while that node renews its lease on the channel.
 * Every change that makes a user appear (its first connection) or disappear
 * (its last) publishes a `join` or `leave` frame on the channel, in the same
 * atomic step as the change, when the channel has joinLeave: so frames come in
 * the order of the presence changes, exactly once per change, and through the
 * channel's normal fan-out.
 *
 * Users are passed around as strings; `info` as the JSON text of an object.
 *
 * With webhooks on, the same changes produce the webhook events
 * `member_added` (a user's first connection, unless restored silently) and
 * `member_removed` (its last), in the same step, whether or not the channel has
 * joinLeave (webhooks/sink.ts).
 */

export interface PresenceEntry {
  /** Cluster-unique connection id: `<node boot id>.<connection number>`. */
  readonly conn: string;
  readonly user: string;
  /** The token's `info` claim as JSON text, or undefined. */
  readonly info: string | undefined;
  /**
   * The entry's order key (which of a user's connections came first), given
   * by the store at its first add; passed back when the entry is restored, so
   * a restore keeps the order.
   */
  seq?: number;
}

export interface PresenceMember {
  readonly user: string;
  /** Info of the user's oldest connection still present, or undefined. */
  readonly info: string | undefined;
  readonly conns: number;
}

export interface PresenceStats {
  readonly users: number;
  readonly connections: number;
}

export interface PresenceSnapshot extends PresenceStats {
  /** At most the asked maximum of users; `truncated` when there are more. */
  readonly members: readonly PresenceMember[];
  readonly truncated: boolean;
}

/** What a call swept besides its own work: leases of dead nodes, and the entries they held. */
export interface Swept {
  readonly leases: number;
  readonly entries: number;
}

/** How a call treats a channel: its namespace's joinLeave, and the lease length for the calling node. */
export interface PresenceCall {
  readonly joinLeave: boolean;
  /** The calling node's lease on the channel lasts this long from now (Redis time). */
  readonly leaseMs: number;
}

/**
 * Writes answer the channel's epoch: a name the store makes when the
 * channel's presence starts. A node that sees it change knows the store lost
 * the channel (Redis restarted without its data), not just this node's lease.
 */
export interface Epoch {
  readonly epoch: string;
}

export interface PresenceStore {
  /**
   * Adds the node's entries (skipping those present); renews its lease.
   * `silent`: no `join` (restoring entries the store lost, whose users were
   * never reported gone). Answers each entry's order key.
   */
  add(channel: string, node: string, entries: readonly PresenceEntry[], call: PresenceCall, silent?: boolean): Promise<Swept & Epoch & { seqs: number[] }>;
  /**
   * Removes the node's entries (absent ones are skipped). With `release` and
   * no entries of the node left, its lease on the channel is dropped too.
   */
  remove(channel: string, node: string, conns: readonly string[], call: PresenceCall, release: boolean): Promise<Swept & Epoch>;
  /**
   * Renews the node's lease and sweeps dead leases. `held` is how many entries
   * the store has for the node; `lost` says the lease had expired or vanished.
   */
  renew(channel: string, node: string, call: PresenceCall): Promise<Swept & Epoch & { held: number; lost: boolean }>;
  /** Removes the node's entries not in `keep`; answers which of `keep` are missing (to add again). */
  resync(channel: string, node: string, keep: readonly string[], call: PresenceCall): Promise<Swept & Epoch & { missing: string[] }>;
  /** Members (at most `max` users), after sweeping dead leases. */
  presence(channel: string, max: number, call: PresenceCall): Promise<Swept & PresenceSnapshot>;
  /** Exact user and connection counts, after sweeping dead leases. */
  stats(channel: string, call: PresenceCall): Promise<Swept & PresenceStats>;
  /**
   * Removes a node known to be dead (its liveness ran out, occupancy/sweeper.ts)
   * from the channel whether or not its lease did: its entries go (with
   * `leave` and member_removed), up to a budget per call (`left`: how many
   * remain; call again), then its lease. A node that was only slow finds its
   * lease lost at its next renewal and restores its entries (with `join`).
   */
  evict(channel: string, node: string, call: PresenceCall): Promise<Swept & { removed: number; left: number }>;
}

/** The `join` frame text (`info` is JSON text of an object; the channel needs no escaping). */
export function encodeJoin(channel: string, user: string, info: string | undefined): string {
  return `{"type":"join","channel":"${channel}","user":${JSON.stringify(user)}${info !== undefined ? `,"info":${info}` : ''}}`;
}

export function encodeLeave(channel: string, user: string): string {
  return `{"type":"leave","channel":"${channel}","user":${JSON.stringify(user)}}`;
}
