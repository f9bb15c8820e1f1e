/**
 * Presence and join/leave (contract 1.1) as the client hands them out: the
 * results of `subscription.presence()` and `presenceStats()`, the `join` and
 * `leave` events of a subscription, and the checks that turn reply and push
 * frames into them.
 */
import { PubgateError } from './errors.js';
import type { JoinFrame, LeaveFrame, ReplyFrame } from './protocol.js';
import type { ResubscribeInfo, SubscriptionMessage, UnsubscribedEvent } from './client.js';

/**
 * A presence `info`: the `info` claim of the connection's token (or of its
 * subscription token), a JSON object of at most 1 KiB. Its shape is the
 * application's: `subscribe<T, I>()` lets you name it.
 */
export type PresenceInfo = Readonly<Record<string, unknown>>;

/** One user in a presence channel, however many connections (tabs, devices) it has there. */
export interface PresenceMember<I = PresenceInfo> {
  readonly user: string;
  /** The `info` of the user's oldest connection still present; absent when it has none. */
  readonly info?: I;
  /** The user's connections subscribed to the channel. */
  readonly conns: number;
}

/** What `subscription.presence()` resolves with. */
export interface PresenceResult<I = PresenceInfo> {
  /** One entry per user (a user with several connections is one member, with `conns`). */
  readonly members: ReadonlyArray<PresenceMember<I>>;
  /** The exact number of users in the channel (may be more than `members.length` when `truncated`). */
  readonly users: number;
  /** The exact number of connections subscribed to the channel. */
  readonly connections: number;
  /** True when `members` was cut at the server's `PUBGATE_PRESENCE_MAX_MEMBERS`. */
  readonly truncated: boolean;
}

/** What `subscription.presenceStats()` resolves with. */
export interface PresenceStats {
  readonly users: number;
  readonly connections: number;
}

/** A user's first connection joined the channel (another tab of a user already there produces none). */
export interface JoinEvent<I = PresenceInfo> {
  readonly channel: string;
  readonly user: string;
  /** The `info` claim of the user's connection; absent when its token has none. */
  readonly info?: I;
}

/** A user's last connection left the channel (unsubscribe, disconnect, or its node died). */
export interface LeaveEvent {
  readonly channel: string;
  readonly user: string;
}

/** Events of one subscription (`subscription.on(type, fn)`). `T` types the messages' data. */
export interface SubscriptionEvents<I = PresenceInfo, T = unknown> {
  /** A message of the channel (the same frame `onMessage` gets as its second argument). */
  message: SubscriptionMessage<T>;
  /** A user joined (channels whose namespace has `joinLeave`). Not sent for this connection's own user. */
  join: JoinEvent<I>;
  /** A user left (channels whose namespace has `joinLeave`). */
  leave: LeaveEvent;
  /**
   * The subscription was renewed after a reconnect (same payload as
   * `onResubscribe`). Join and leave events of the time in between are lost:
   * read `presence()` again here.
   */
  resubscribed: ResubscribeInfo;
  /**
   * The server ended the subscription: a backend called `POST /v1/unsubscribe`
   * for this user (no `reason`), or, for a server-side subscription, the new
   * connection after a reconnect did not have it (`reason: 'reconnected'`).
   * Not emitted for your own unsubscribe.
   */
  unsubscribed: UnsubscribedEvent;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function isInfo(v: unknown): v is PresenceInfo {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isMember(v: unknown): v is PresenceMember {
  if (v === null || typeof v !== 'object') return false;
  const m = v as Record<string, unknown>;
  return typeof m.user === 'string' && isCount(m.conns) && (m.info === undefined || isInfo(m.info));
}

function unreadable(kind: string, channel: string, reply: ReplyFrame): PubgateError {
  return new PubgateError('protocol', `the reply to ${kind} has no valid members/users/connections: ${JSON.stringify(reply).slice(0, 120)}`, channel);
}

/** The reply to a `presence` frame as a PresenceResult; a `protocol` error when it is not one. */
export function presenceResult(reply: ReplyFrame, channel: string): PresenceResult {
  const { members, users, connections } = reply;
  if (!Array.isArray(members) || !members.every(isMember) || !isCount(users) || !isCount(connections)) throw unreadable('presence', channel, reply);
  return { members, users, connections, truncated: reply.truncated === true };
}

/** The reply to a `presence_stats` frame as PresenceStats; a `protocol` error when it is not one. */
export function presenceStats(reply: ReplyFrame, channel: string): PresenceStats {
  const { users, connections } = reply;
  if (!isCount(users) || !isCount(connections)) throw unreadable('presence_stats', channel, reply);
  return { users, connections };
}

/** A join frame as the event handed to listeners, or undefined when it is malformed. */
export function joinEvent(f: JoinFrame): JoinEvent | undefined {
  if (typeof f.channel !== 'string' || typeof f.user !== 'string') return undefined;
  if (f.info !== undefined && !isInfo(f.info)) return undefined;
  return f.info === undefined ? { channel: f.channel, user: f.user } : { channel: f.channel, user: f.user, info: f.info };
}

/** A leave frame as the event handed to listeners, or undefined when it is malformed. */
export function leaveEvent(f: LeaveFrame): LeaveEvent | undefined {
  if (typeof f.channel !== 'string' || typeof f.user !== 'string') return undefined;
  return { channel: f.channel, user: f.user };
}
