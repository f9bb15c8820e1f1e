/**
 * A Pusher connection as the hub sees it: a Socket whose topics are the
 * Pusher-only uWS topics (`PUSHER_TOPIC` + internal channel), whose single
 * sends (held frames, replays) are turned into Pusher frames, and whose closes
 * carry Pusher's codes after a `pusher:error`. uWS topics are shared by every
 * ws route of an app: the prefix keeps native frames away from Pusher sockets,
 * and the transport publishes each message's Pusher frame to that topic once.
 *
 * Sized for many idle connections, as hub/session.ts: this object is all a
 * Pusher connection keeps beside a native session (its app, its uWS socket),
 * one object in the session's `pusher` field. Nothing derivable is stored: the
 * socket id comes from the connection number (socket-id.ts), a subscribed
 * channel's Pusher name from its internal name (channels.ts nameInApp), and
 * which channels are subscribed (or being subscribed) is the session's
 * `channels`, which the hub keeps.
 */
import type { Session, Socket } from '../hub/session.js';
import { encodePusherError, nativeToPusher, pusherCloseCode } from '../protocol/pusher/frames.js';
import type { WebSocket } from '../transport/uws.js';
import type { PusherApp } from './apps.js';
import { nameInApp } from './channels.js';
import { userPrefix } from './users.js';

/** The uWS topic of a channel's Pusher subscribers (a control character: no channel name has one). */
export const PUSHER_TOPIC = '\u0001';

export interface PusherSession extends Session {
  readonly pusher: PusherSocket;
}

export class PusherSocket implements Socket {
  /** The uWS socket, set at open (the upgrade makes the session before there is one); the socket's methods are for after. */
  ws: WebSocket<PusherSession> | undefined = undefined;
  /**
   * app: undefined when the key named no app (the socket is told 4001 and
   * closed at open). badProtocol: a `protocol` query other than 5-7 (told 4007
   * and closed at open).
   */
  constructor(
    readonly app: PusherApp | undefined,
    readonly badProtocol: boolean,
  ) {}

  /** On the prototype, not in each socket. */
  get transport(): 'pusher' {
    return 'pusher';
  }
  getUserData(): PusherSession {
    return this.ws!.getUserData();
  }
  subscribe(topic: string): boolean {
    return this.ws!.subscribe(PUSHER_TOPIC + topic);
  }
  unsubscribe(topic: string): boolean {
    return this.ws!.unsubscribe(PUSHER_TOPIC + topic);
  }
  isSubscribed(topic: string): boolean {
    return this.ws!.isSubscribed(PUSHER_TOPIC + topic);
  }
  /** Native frames from the hub (held frames, replays); Pusher frames are sent with sendPusher. */
  send(frame: string, _isBinary?: boolean, compress?: boolean): number {
    const ws = this.ws!;
    const app = this.app;
    const m = /^\{"type":"[a-z]+","channel":"([^"]*)"/.exec(frame);
    const p = m === null || app === undefined || !ws.getUserData().channels.has(m[1]!) ? undefined : nativeToPusher(frame, nameInApp(app, m[1]!), userPrefix(app));
    if (p === undefined) return 1;
    return ws.send(p, false, compress);
  }
  sendPusher(frame: string): void {
    const ws = this.ws!;
    if (ws.getUserData().open) ws.send(frame, false);
  }
  /** A native close code (protocol/close-codes.ts) becomes Pusher's, told first in a pusher:error. */
  end(code?: number, shortMessage?: string): void {
    const ws = this.ws!;
    const c = pusherCloseCode(code ?? 1000);
    if (c >= 4000) ws.send(encodePusherError(c, shortMessage ?? ''), false);
    ws.end(c, shortMessage);
  }
  /** Ends with a Pusher code as it is. */
  endPusher(code: number, message: string): void {
    const ws = this.ws!;
    const s = ws.getUserData();
    if (!s.open) return;
    s.open = false;
    ws.send(encodePusherError(code, message), false);
    ws.end(code, message);
  }
  ping(message?: string): number {
    return this.ws!.ping(message);
  }
  getBufferedAmount(): number {
    return this.ws!.getBufferedAmount();
  }
}
