/**
 * Webhook events (contract 1.1, "Webhooks"): what the cluster-wide state
 * produces (occupancy: occupied/vacated; presence: member added/removed) and
 * the webhook queue carries to the receiver.
 *
 * An event travels as its JSON text, built once where the change is decided
 * (a Lua script in Redis, or the memory stores) and never re-serialized: the
 * queue stores the text, the deliverer joins texts into the request body.
 * Field order is fixed (`id` first, so scripts can read it without a JSON
 * parser): `{"id":…,"name":…,"channel":…,"user":…,"time_ms":…}` (`user` only
 * on member events).
 *
 * Ids: `<base>.<n>`, where `base` is a random name made for the store call
 * that produced the event (12 base64url characters from the node) and `n` the
 * event's number within that call. Unique without coordination, the same on
 * every retry (the text is stored, not rebuilt).
 */
import { randomBytes } from 'node:crypto';

export const WEBHOOK_EVENT_NAMES = ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'] as const;
export type WebhookEventName = (typeof WEBHOOK_EVENT_NAMES)[number];

/** A random id base for one store call (12 base64url characters). */
export function newEventBase(): string {
  return randomBytes(9).toString('base64url');
}

/**
 * An event's JSON text. `user` is the user id (a string; JSON-escaped here);
 * the channel needs no escaping (channel names are restricted, see protocol/channel.ts).
 */
export function encodeEvent(id: string, name: WebhookEventName, channel: string, user: string | undefined, timeMs: number): string {
  const u = user === undefined ? '' : `,"user":${JSON.stringify(user)}`;
  return `{"id":"${id}","name":"${name}","channel":"${channel}"${u},"time_ms":${timeMs}}`;
}

/** Lua for the Redis stores: the same text as encodeEvent (`user` given as its JSON text, or nil). */
export const LUA_ENCODE_EVENT = `
local function wh_encode(id, name, ch, user_json, time_ms)
  local u = ''
  if user_json then u = ',"user":' .. user_json end
  return '{"id":"' .. id .. '","name":"' .. name .. '","channel":"' .. ch .. '"' .. u .. ',"time_ms":' .. time_ms .. '}'
end
`;

export interface EventHead {
  readonly id: string;
  readonly name: WebhookEventName;
  readonly channel: string;
  readonly timeMs: number;
}

const HEAD = /^\{"id":"([^"]+)","name":"([a-z_]+)","channel":"([^"]*)"(?:,"user":(?:"(?:[^"\\]|\\.)*"))?,"time_ms":(\d+)\}$/;

/** Reads the fields the deliverer needs from an event text (undefined for a text this module did not build). */
export function eventHead(text: string): EventHead | undefined {
  const m = HEAD.exec(text);
  if (!m) return undefined;
  const name = m[2] as WebhookEventName;
  if (!(WEBHOOK_EVENT_NAMES as readonly string[]).includes(name)) return undefined;
  return { id: m[1] as string, name, channel: m[3] as string, timeMs: Number(m[4]) };
}
