/**
 * A Pusher connection as the hub sees it: a Socket whose topics are the
 * Pusher-only uWS topics (`PUSHER_TOPIC` + internal channel), whose single
 * sends (held frames, replays) are turned into Pusher frames, and whose closes
 * carry Pusher's codes after a `pusher:error`. uWS topics are shared by every
 * ws route of an app: the prefix keeps native frames away from Pusher sockets,
 * and the transport publishes each message's Pusher frame to that topic once.
 */
import type { Session, Socket } from '../hub/session.js';
import { encodePusherError, nativeToPusher, pusherCloseCode } from '../protocol/pusher/frames.js';
import type { WebSocket } from '../transport/uws.js';
import type { PusherApp } from './apps.js';
import { userPrefix } from './users.js';

/** The uWS topic of a channel's Pusher subscribers (a control character: no channel name has one). */
export const PUSHER_TOPIC = '\u0001';

export interface PusherState {
  /** Undefined when the key named no app: the socket is told 4001 and closed at open. */
  readonly app: PusherApp | undefined;
  readonly socketId: string;
  /** Set at open. */
  socket: PusherSocket | undefined;
  /** Subscribed (or being subscribed) channels: internal name → Pusher name. */
  readonly names: Map<string, string>;
}

export interface PusherSession extends Session {
  readonly pusher: PusherState;
}

export class PusherSocket implements Socket {
  readonly transport = 'pusher' as const;
  constructor(private readonly ws: WebSocket<PusherSession>) {}

  getUserData(): PusherSession {
    return this.ws.getUserData();
  }
  subscribe(topic: string): boolean {
    return this.ws.subscribe(PUSHER_TOPIC + topic);
  }
  unsubscribe(topic: string): boolean {
    return this.ws.unsubscribe(PUSHER_TOPIC + topic);
  }
  isSubscribed(topic: string): boolean {
    return this.ws.isSubscribed(PUSHER_TOPIC + topic);
  }
  /** Native frames from the hub (held frames, replays); Pusher frames are sent with sendPusher. */
  send(frame: string, _isBinary?: boolean, compress?: boolean): number {
    const s = this.ws.getUserData();
    const m = /^\{"type":"[a-z]+","channel":"([^"]*)"/.exec(frame);
    const name = m ? s.pusher.names.get(m[1]!) : undefined;
    const p = name === undefined || s.pusher.app === undefined ? undefined : nativeToPusher(frame, name, userPrefix(s.pusher.app));
    if (p === undefined) return 1;
    return this.ws.send(p, false, compress);
  }
  sendPusher(frame: string): void {
    if (this.ws.getUserData().open) this.ws.send(frame, false);
  }
  /** A native close code (protocol/close-codes.ts) becomes Pusher's, told first in a pusher:error. */
  end(code?: number, shortMessage?: string): void {
    const c = pusherCloseCode(code ?? 1000);
    if (c >= 4000) this.ws.send(encodePusherError(c, shortMessage ?? ''), false);
    this.ws.end(c, shortMessage);
  }
  /** Ends with a Pusher code as it is. */
  endPusher(code: number, message: string): void {
    const s = this.ws.getUserData();
    if (!s.open) return;
    s.open = false;
    this.ws.send(encodePusherError(code, message), false);
    this.ws.end(code, message);
  }
  ping(message?: string): number {
    return this.ws.ping(message);
  }
  getBufferedAmount(): number {
    return this.ws.getBufferedAmount();
  }
}
