/**
 * A TCP proxy in the test process that changes when the server's bytes reach
 * the client on some connections: those whose client bytes (the first KiB)
 * contain `marker`, e.g. the `CLIENT SETNAME` of a gateway's Redis subscriber
 * connection. Order and content are kept; only arrival moves:
 *
 * - `delayMs`: each chunk arrives that much later (a lagging connection);
 *   `setDelayMs` changes it for the chunks from then on;
 * - `batchMs`: chunks are held and delivered together, as one write, every
 *   `batchMs` (what a congested path or a slow reader sees: several replies in
 *   one read);
 * - `upstreamDelayMs`: the other way too, the client's bytes (after the one
 *   that matched) reach the server that much later (commands sent on a
 *   lagging path).
 *
 * Fault injection for races between two connections of one node to Redis.
 */
import net from 'node:net';
import { listenOnLoopback } from './ports.js';

export interface DelayProxyOptions {
  readonly target: { readonly host: string; readonly port: number };
  readonly marker: string;
  readonly delayMs?: number;
  readonly batchMs?: number;
  readonly upstreamDelayMs?: number;
}

export interface DelayProxy {
  readonly port: number;
  /** Connections that matched the marker so far. */
  readonly matched: number;
  /** From now on, chunks to matched connections arrive `ms` later (delay mode only). */
  setDelayMs(ms: number): void;
  close(): Promise<void>;
}

export async function startDelayProxy(o: DelayProxyOptions): Promise<DelayProxy> {
  const sockets = new Set<net.Socket>();
  let matched = 0;
  let delayMs = o.delayMs ?? 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(o.target.port, o.target.host);
    sockets.add(client);
    sockets.add(upstream);
    let head = '';
    let slow = false;
    const queue: Array<{ at: number; data: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    const up: Array<{ at: number; data: Buffer }> = [];
    let upTimer: NodeJS.Timeout | undefined;
    const releaseUp = (): void => {
      upTimer = undefined;
      const now = Date.now();
      while (up.length > 0 && up[0]!.at <= now) upstream.write(up.shift()!.data);
      if (up.length > 0) upTimer = setTimeout(releaseUp, up[0]!.at - now);
    };
    const release = (): void => {
      timer = undefined;
      if (o.batchMs !== undefined) {
        if (queue.length > 0) client.write(Buffer.concat(queue.splice(0).map((q) => q.data)));
        return;
      }
      const now = Date.now();
      while (queue.length > 0 && queue[0]!.at <= now) client.write(queue.shift()!.data);
      if (queue.length > 0) timer = setTimeout(release, queue[0]!.at - now);
    };
    client.on('data', (d: Buffer) => {
      const wasSlow = slow;
      if (!slow && head.length < 1024) {
        head += d.toString('latin1');
        if (head.includes(o.marker)) {
          slow = true;
          matched++;
        }
      }
      if (!wasSlow || !o.upstreamDelayMs) {
        upstream.write(d);
        return;
      }
      up.push({ at: Date.now() + o.upstreamDelayMs, data: d });
      if (!upTimer) upTimer = setTimeout(releaseUp, o.upstreamDelayMs);
    });
    upstream.on('data', (d: Buffer) => {
      if (!slow) {
        client.write(d);
        return;
      }
      queue.push({ at: Date.now() + delayMs, data: d });
      if (!timer) timer = setTimeout(release, o.batchMs ?? delayMs);
    });
    const end = (): void => {
      if (timer) clearTimeout(timer);
      if (upTimer) clearTimeout(upTimer);
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  const port = await listenOnLoopback(server);
  return {
    port,
    get matched() {
      return matched;
    },
    setDelayMs(ms: number) {
      delayMs = ms;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
