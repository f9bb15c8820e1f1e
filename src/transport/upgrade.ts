/**
 * The WebSocket handshake: the shared connection admission (connect.ts) with
 * the upgrade's own request checks (Upgrade/Connection, version, key) before
 * the Origin, and the upgrade itself once accepted. A rejected upgrade is a
 * plain HTTP status with the JSON error body; the upgrade never happens.
 */
import { selectSubprotocol } from '../auth/token.js';
import type { Session } from '../hub/session.js';
import type { ConnectHandler, ConnectKind, ShapeResult } from './connect.js';
import type { HttpRequest, HttpResponse } from './uws.js';

type Context = Parameters<HttpResponse['upgrade']>[4];

const KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

/** Whether a comma-separated header value (`Connection`, `Upgrade`) lists `token`, case-insensitively. */
function listsToken(header: string, token: string): boolean {
  return header.split(',').some((t) => t.trim().toLowerCase() === token);
}

const UPGRADE_NEEDED = 'this endpoint needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)';

export function createUpgradeHandler(connect: ConnectHandler): (res: HttpResponse, req: HttpRequest, context: Context) => void {
  return (res, req, context) => {
    const kind: ConnectKind<null> = {
      transport: 'ws',
      shape(head): ShapeResult<null> {
        // uWS calls this handler for any GET with a Sec-WebSocket-Key, even without
        // `Upgrade: websocket` / `Connection: Upgrade` (RFC 6455 §4.2.1 requires
        // both): a proxy that strips those hop-by-hop headers must get the same 426
        // as a plain GET, not a 101 it cannot relay.
        if (!listsToken(head.upgrade, 'websocket') || !listsToken(head.connection, 'upgrade')) {
          return { refusal: { code: 'bad_request', message: UPGRADE_NEEDED, reason: 'not_upgrade', headers: { Upgrade: 'websocket' }, status: 426 } };
        }
        if (head.version !== '13') {
          return { refusal: { code: 'bad_request', message: 'Sec-WebSocket-Version must be 13', reason: 'bad_version', headers: { 'Sec-WebSocket-Version': '13' }, status: 426 } };
        }
        if (!KEY_RE.test(head.key)) return { refusal: { code: 'bad_request', message: 'missing or invalid Sec-WebSocket-Key', reason: 'bad_ws_key' } };
        return { value: null };
      },
      accept(session: Session, _shape, { res: r, head, sync }) {
        const upgrade = (): void => r.upgrade(session, head.key, selectSubprotocol(head.protocols) ?? '', head.extensions, context);
        // Inside the handler the response is already corked; after an await it must be corked again.
        if (sync) upgrade();
        else r.cork(upgrade);
      },
    };
    connect(res, req, kind);
  };
}
