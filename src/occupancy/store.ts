/**
 * Cluster-wide occupancy: which nodes hold at least one subscriber of a
 * channel. The first node to hold a channel anywhere makes `channel_occupied`,
 * the last to let go `channel_vacated` (contract 1.1, "Webhooks"), decided in
 * one atomic step in the store, so two nodes racing cannot both report one
 * transition, and the events alternate.
 *
 * Members are node *generations* (`<node>#<n>`): a node that was declared
 * dead while it was only cut off comes back under a new generation, so a sweep
 * of its old generation cannot remove what the new one holds.
 *
 * Nodes' deaths are found through Liveness: each node renews an entry every
 * tick, lasting PUBGATE_PRESENCE_TTL, and records the channels it holds in a
 * set of its own *before* it takes them (write-ahead), so a node that dies
 * leaves a complete list. Any node claims an expired entry (one claimer, for
 * a while) and sweeps that list (occupancy/occupancy.ts).
 */

export interface OccupancyStore {
  /** The member holds the channel; the first member anywhere appends `channel_occupied` (not when `silent`: restoring after the store lost its data). */
  add(channel: string, member: string, silent: boolean): Promise<void>;
  /** The member let go of the channel; the last one appends `channel_vacated`. */
  remove(channel: string, member: string): Promise<void>;
}

export interface RenewResult {
  /** The entry was missing: first registration, the node was swept, or the store lost its data. */
  readonly added: boolean;
  /** The store's liveness epoch: a change means the store lost its data (not that this node was swept). */
  readonly epoch: string;
}

export interface DeadMember {
  readonly member: string;
  /** Another generation of the same node is alive (it was cut off, not dead): its presence is its own to keep. */
  readonly baseAlive: boolean;
}

export interface Liveness {
  /** Renews the member's entry for `ttlMs`. */
  renew(member: string, ttlMs: number): Promise<RenewResult>;
  /** A clean shutdown: the member's entry and channel list go (its channels were released before). */
  leave(member: string): Promise<void>;
  /** Records channels the member is about to take (before taking them). */
  hold(member: string, channels: readonly string[]): Promise<void>;
  /** Forgets channels the member let go of (after letting go). */
  unhold(member: string, channels: readonly string[]): Promise<void>;
  /**
   * Claims one member whose entry ran out (or whose sweep was abandoned by a
   * claimer that died) for `claimMs`; undefined when there is none.
   */
  claimDead(claimMs: number): Promise<DeadMember | undefined>;
  /** Keeps a claim for another `claimMs` (a long sweep). */
  extend(member: string, claimMs: number): Promise<void>;
  /** A page of a member's channel list. `cursor` '0' starts; the answer's '0' ends. */
  held(member: string, cursor: string, count: number): Promise<{ cursor: string; channels: string[] }>;
  /** The sweep of a member is complete: its list and claim go. */
  done(member: string): Promise<void>;
}
