/**
 * Pusher socket ids (`<digits>.<digits>`, the form Pusher's server libraries
 * check) for this node's connections, and back to the `welcome.conn` text the
 * hub's `exclude` takes: `<node prefix as a number>.<connection number>`.
 */
import type { ConnIds } from '../transport/conn-id.js';

export interface SocketIds {
  of(id: number): string;
  /** The conn text of a socket id of this node; undefined for another node's or a malformed one. */
  conn(socketId: string): string | undefined;
}

export function createSocketIds(connIds: ConnIds): SocketIds {
  const zero = connIds.name(0);
  const prefix = zero.slice(0, -1); // conn-id.ts: hex prefix + base-36 number
  const node = parseInt(prefix, 16);
  return {
    of: (id) => `${node}.${id}`,
    conn(socketId) {
      const m = /^(\d{1,10})\.(\d{1,15})$/.exec(socketId);
      if (!m || Number(m[1]) !== node) return undefined;
      return connIds.name(Number(m[2]));
    },
  };
}
