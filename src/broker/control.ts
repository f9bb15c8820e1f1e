/**
 * Control messages on the wire (`<prefix>control` in Redis): JSON, one object
 * per message, validated field by field before use. Anything else is ignored
 * by the receiver (and counted: RedisBrokerEvents.onInvalidControl).
 */
import { isValidChannel } from '../protocol/channel.js';
import type { ControlMessage } from './broker.js';

/** Longest user id in a control message (the publish API's limit). */
export const MAX_CONTROL_USER = 1024;
/** Longest request id. */
export const MAX_CONTROL_ID = 64;
/** Longest instance name (Broker.instance). */
export const MAX_INSTANCE = 256;

const ID_RE = /^[A-Za-z0-9_-]+$/;

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
    default:
      return undefined;
  }
}
