/**
 * Control messages on the wire (`<prefix>control` in Redis): JSON, one object
 * per message, validated field by field before use. Anything else is ignored
 * by the receiver (and counted: RedisBrokerEvents.onInvalidControl).
 */
import { isValidChannel } from '../protocol/channel.js';
import { isValidPusherChannel } from '../pusher/channels.js';
import type { ControlMessage } from './broker.js';

/** Longest user id in a control message (the publish API's limit). */
export const MAX_CONTROL_USER = 1024;
/** Longest request id. */
export const MAX_CONTROL_ID = 64;
/** Longest instance name (Broker.instance). */
export const MAX_INSTANCE = 256;

/** Channels one node lists in an answer to a query, at most; and names one query asks about. */
export const MAX_ANSWER_CHANNELS = 1000;
export const MAX_QUERY_CHANNELS = 100;
/** Longest prefix in a query (a Pusher name is at most 164 characters: a longer prefix matches nothing). */
export const MAX_QUERY_PREFIX = 164;
/** Longest prefix in a query about native channels (a native name is at most 200 characters). */
export const MAX_NATIVE_QUERY_PREFIX = 200;
/** Largest `top` of a query: the busiest channels one node lists (as many as any answer holds). */
export const MAX_QUERY_TOP = MAX_ANSWER_CHANNELS;

const ID_RE = /^[A-Za-z0-9_-]+$/;
/** A Pusher app id (pusher/apps.ts). */
const APP_RE = /^[A-Za-z0-9_.-]{1,64}$/;

const text = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max;
const isId = (v: unknown): v is string => text(v, MAX_CONTROL_ID) && ID_RE.test(v);

/** The wire text of a control message: exactly its fields, nothing else. */
export function encodeControl(msg: ControlMessage): string {
  switch (msg.kind) {
    case 'disconnect':
      return JSON.stringify({ kind: msg.kind, user: msg.user });
    case 'subscribe':
    case 'unsubscribe':
      return JSON.stringify({ kind: msg.kind, id: msg.id, from: msg.from, user: msg.user, channel: msg.channel });
    case 'ack':
      return JSON.stringify({ kind: msg.kind, id: msg.id, to: msg.to, node: msg.node, ok: msg.ok });
    case 'query':
      if (msg.channels !== undefined) return JSON.stringify({ kind: msg.kind, id: msg.id, from: msg.from, app: msg.app, channels: msg.channels });
      return msg.top !== undefined
        ? JSON.stringify({ kind: msg.kind, id: msg.id, from: msg.from, app: msg.app, prefix: msg.prefix ?? '', top: msg.top })
        : JSON.stringify({ kind: msg.kind, id: msg.id, from: msg.from, app: msg.app, prefix: msg.prefix ?? '' });
    case 'answer':
      return JSON.stringify({ kind: msg.kind, id: msg.id, to: msg.to, node: msg.node, counts: msg.counts, more: msg.more });
  }
}

/** A control message from the wire, or undefined when it is not a valid one. Unknown fields are ignored. */
export function parseControl(wire: string): ControlMessage | undefined {
  let v: unknown;
  try {
    v = JSON.parse(wire);
  } catch {
    return undefined; // not JSON: the caller logs and counts it
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  switch (o['kind']) {
    case 'disconnect':
      return text(o['user'], MAX_CONTROL_USER) ? { kind: 'disconnect', user: o['user'] } : undefined;
    case 'subscribe':
    case 'unsubscribe': {
      const { id, from, user, channel } = o;
      if (!isId(id) || !text(from, MAX_INSTANCE) || !text(user, MAX_CONTROL_USER) || !isValidChannel(channel)) return undefined;
      return { kind: o['kind'], id, from, user, channel };
    }
    case 'ack': {
      const { id, to, node, ok } = o;
      if (!isId(id) || !text(to, MAX_INSTANCE) || !text(node, MAX_INSTANCE) || typeof ok !== 'boolean') return undefined;
      return { kind: 'ack', id, to, node, ok };
    }
    case 'query': {
      const { id, from, app, prefix, channels, top } = o;
      // app '': the native channels.
      if (!isId(id) || !text(from, MAX_INSTANCE) || typeof app !== 'string' || (app !== '' && !APP_RE.test(app))) return undefined;
      const native = app === '';
      // Exactly one of prefix (possibly empty: every channel) and channels; top only with a native prefix.
      if (channels === undefined) {
        if (typeof prefix !== 'string' || prefix.length > (native ? MAX_NATIVE_QUERY_PREFIX : MAX_QUERY_PREFIX)) return undefined;
        if (top === undefined) return { kind: 'query', id, from, app, prefix };
        if (!native || typeof top !== 'number' || !Number.isInteger(top) || top < 1 || top > MAX_QUERY_TOP) return undefined;
        return { kind: 'query', id, from, app, prefix, top };
      }
      if (prefix !== undefined || top !== undefined || !Array.isArray(channels) || channels.length === 0 || channels.length > MAX_QUERY_CHANNELS) return undefined;
      if (!channels.every(native ? isValidChannel : isValidPusherChannel)) return undefined;
      return { kind: 'query', id, from, app, channels };
    }
    case 'answer': {
      const { id, to, node, counts, more } = o;
      if (!isId(id) || !text(to, MAX_INSTANCE) || !text(node, MAX_INSTANCE) || typeof more !== 'boolean') return undefined;
      if (!Array.isArray(counts) || counts.length > MAX_ANSWER_CHANNELS) return undefined;
      const list: [string, number][] = [];
      for (const c of counts) {
        if (!Array.isArray(c) || c.length !== 2) return undefined;
        const [name, n] = c as unknown[];
        // A Pusher name, or a native one (a query with app '').
        if (!(isValidPusherChannel(name) || isValidChannel(name)) || typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) return undefined;
        list.push([name, n]);
      }
      return { kind: 'answer', id, to, node, counts: list, more };
    }
    default:
      return undefined;
  }
}
