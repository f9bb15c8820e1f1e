/**
 * Loopback ports for the servers tests start: listening on one the OS picks,
 * and a port that was free a moment ago (for processes that bind it themselves).
 */
import net from 'node:net';

/** Listens on 127.0.0.1 on a port the OS picks; resolves with that port. */
export function listenOnLoopback(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : 0);
    });
  });
}

/** A port that was free a moment ago on 127.0.0.1 (the OS picks it). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.unref();
  const port = await listenOnLoopback(srv);
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
