/**
 * The one place uWebSockets.js is loaded. uWS reads its request-head limit
 * from UWS_HTTP_MAX_HEADERS_SIZE when the addon loads; the contract's
 * 8192-character tokens need more than the 4 KiB default, so the variable is
 * set here, before the import below is evaluated (ESM evaluates imports in
 * order: ./uws-env.js runs first).
 */
import { MAX_REQUEST_HEAD_BYTES } from './uws-env.js';
import * as uws from 'uWebSockets.js';

export { MAX_REQUEST_HEAD_BYTES };
export const { App, SSLApp, us_listen_socket_close, us_socket_local_port } = uws;
export type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, WebSocketBehavior, us_listen_socket } from 'uWebSockets.js';

/**
 * Compression options. The repack's typings declare these constants as types
 * only; the values exist at runtime (SHARED_COMPRESSOR is 1, DISABLED is 0).
 */
const runtime = uws as unknown as { DISABLED: number; SHARED_COMPRESSOR: number; SHARED_DECOMPRESSOR: number };
export const COMPRESSION_DISABLED: uws.CompressOptions = runtime.DISABLED as uws.CompressOptions;
export const COMPRESSION_SHARED: uws.CompressOptions = (runtime.SHARED_COMPRESSOR | runtime.SHARED_DECOMPRESSOR) as uws.CompressOptions;

/**
 * Listens on host:port without SO_REUSEPORT (uWS's default), so a port that is
 * already taken fails instead of being shared with another process. The native
 * binding accepts (host, port, options, cb); the repack's typings omit it.
 */
export function listenExclusive(app: uws.TemplatedApp, host: string, port: number, cb: (ls: uws.us_listen_socket | false) => void): void {
  const LIBUS_LISTEN_EXCLUSIVE_PORT = 1;
  (app.listen as unknown as (h: string, p: number, o: number, c: (ls: uws.us_listen_socket | false) => void) => void)(
    host, port, LIBUS_LISTEN_EXCLUSIVE_PORT, cb,
  );
}
