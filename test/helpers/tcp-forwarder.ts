/**
 * A TCP forwarder on a fixed loopback port, standing in for a load balancer:
 * clients keep one URL while the gateway behind it is killed, restarted on
 * another port, or swapped. With no target it accepts and drops connections
 * at once (the client sees 1006), as a load balancer without healthy backends does.
 */
import net from 'node:net';
import { listenOnLoopback } from './ports.js';

export interface Forwarder {
  readonly port: number;
  /** ws://127.0.0.1:port + path */
  url(path?: string): string;
  /** http://127.0.0.1:port */
  readonly http: string;
  /** Sends new connections to 127.0.0.1:targetPort, or drops them (undefined). */
  setTarget(targetPort: number | undefined): void;
  /** Cuts every open connection (no close frame). */
  dropAll(): void;
  /** Open client connections. */
  readonly open: number;
  close(): Promise<void>;
}

export async function startForwarder(targetPort?: number): Promise<Forwarder> {
  let target = targetPort;
  const pairs = new Set<net.Socket>();
  const server = net.createServer((client) => {
    pairs.add(client);
    client.on('close', () => pairs.delete(client));
    client.on('error', () => client.destroy());
    if (target === undefined) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await listenOnLoopback(server);
  return {
    port,
    http: `http://127.0.0.1:${port}`,
    url: (path = '/ws') => `ws://127.0.0.1:${port}${path}`,
    setTarget(p) {
      target = p;
    },
    dropAll() {
      for (const s of pairs) s.destroy();
    },
    get open() {
      return pairs.size;
    },
    async close() {
      for (const s of pairs) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
