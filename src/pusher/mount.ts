/**
 * Mounts `/app/{key}` on the public uWS app and gives the transport the
 * Pusher side of its publish: a message's Pusher frame, built once, to the
 * channel's Pusher-only topic.
 */
import { nativeToPusher } from '../protocol/pusher/frames.js';
import { uwsPayloadLimit } from '../transport/server.js';
import { COMPRESSION_DISABLED, COMPRESSION_SHARED, type TemplatedApp } from '../transport/uws.js';
import type { PusherApps } from './apps.js';
import { pusherChannel } from './channels.js';
import { createPusherEndpoint, type PusherEndpointDeps } from './endpoint.js';
import { PUSHER_TOPIC, type PusherSession } from './socket.js';
import { userPrefix } from './users.js';

export interface PusherFanout {
  /** Sends the Pusher form of a native frame on `channel` to its Pusher subscribers; how many it reached. */
  publish(channel: string, frame: string): number;
}

export function createPusherFanout(app: TemplatedApp, apps: PusherApps | undefined, compressFrom = Number.POSITIVE_INFINITY): PusherFanout {
  if (apps === undefined) return { publish: () => 0 };
  return {
    publish(channel, frame) {
      const topic = PUSHER_TOPIC + channel;
      const n = app.numSubscribers(topic);
      if (n === 0) return 0;
      const p = pusherChannel(apps, channel);
      const out = p === undefined ? undefined : nativeToPusher(frame, p.name, userPrefix(p.app));
      if (out === undefined) return 0;
      app.publish(topic, out, false, out.length >= compressFrom);
      return n;
    },
  };
}

export function mountPusher(app: TemplatedApp, deps: PusherEndpointDeps): PusherFanout {
  const { config } = deps;
  const endpoint = createPusherEndpoint(deps);
  const { conns } = deps;
  app.ws<PusherSession>('/app/:key', {
    compression: config.compression === 'shared' ? COMPRESSION_SHARED : COMPRESSION_DISABLED,
    maxPayloadLength: uwsPayloadLimit(config.maxPayloadLength),
    maxBackpressure: config.maxBackpressure,
    closeOnBackpressureLimit: false,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    upgrade: endpoint.upgrade,
    open: endpoint.open,
    message: endpoint.message,
    close: endpoint.close,
    // The socket is opened (has its ws) from open on.
    pong: (ws) => {
      const socket = ws.getUserData().pusher;
      if (socket.ws) conns.pong(socket);
    },
    dropped: (ws) => {
      const socket = ws.getUserData().pusher;
      if (socket.ws) conns.dropped(socket);
    },
    drain: (ws) => {
      const socket = ws.getUserData().pusher;
      if (socket.ws) conns.drain(socket);
    },
  });
  return createPusherFanout(app, deps.apps, config.compression === 'shared' ? config.compressionThreshold : Number.POSITIVE_INFINITY);
}
