/**
 * Pusher socket ids (`<digits>.<digits>`, the form Pusher's server libraries
 * check) and the `welcome.conn` text the hub's `exclude` takes, both ways:
 * `<node prefix as a number>.<connection number>` ↔ `<6-hex prefix><base-36 number>`
 * (transport/conn-id.ts). The conversion needs no node's state, so any node
 * can turn an API call's `socket_id` into the `exclude` every node understands.
 */
import type { ConnIds } from '../transport/conn-id.js';

/** Hex digits of a conn-id prefix (conn-id.ts: three random bytes). */
const PREFIX_HEX = 6;

export interface SocketIds {
  of(id: number): string;
}

export function createSocketIds(connIds: ConnIds): SocketIds {
  const prefix = connIds.name(0).slice(0, -1);
  const node = parseInt(prefix, 16);
  return { of: (id) => `${node}.${id}` };
}

/** The `exclude` conn text of a socket id, or undefined when it is not one of ours in form. */
export function connOfSocketId(socketId: string): string | undefined {
  const m = /^(\d{1,8})\.(\d{1,15})$/.exec(socketId);
  if (!m) return undefined;
  const node = Number(m[1]);
  const id = Number(m[2]);
  if (node > 0xffffff || !Number.isSafeInteger(id)) return undefined;
  return node.toString(16).padStart(PREFIX_HEX, '0') + id.toString(36);
}
