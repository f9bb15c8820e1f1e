/**
 * The WebSocket handshake: the shared connection admission (connect.ts) with
 * the upgrade's own request checks (Upgrade/Connection, version, key) before
 * the Origin, and the upgrade itself once accepted. A rejected upgrade is a
 * plain HTTP status with the JSON error body; the upgrade never happens.
 */
import { selectSubprotocol } from '../auth/token.js';
import type { Session } from '../hub/session.js';
import type { Admitted, ConnectHandler, ConnectKind, ShapeResult } from './connect.js';
import type { UpgradeHead } from './admission.js';
import type { HttpRequest, HttpResponse } from './uws.js';

export type UpgradeContext = Parameters<HttpResponse['upgrade']>[4];
type Context = UpgradeContext;

const KEY_RE = /^[A-Za-z0-9+/]{22}==$/;

/** Whether a comma-separated header value (`Connection`, `Upgrade`) lists `token`, case-insensitively. */
function listsToken(header: string, token: string): boolean {
  return header.split(',').some((t) => t.trim().toLowerCase() === token);
}

const UPGRADE_NEEDED = 'this endpoint needs a WebSocket upgrade (Upgrade: websocket, Connection: Upgrade)';

/**
 * The upgrade's own request checks, before the Origin (every WebSocket
 * endpoint: `/ws` and Pusher's `/app/{key}`). uWS calls an upgrade handler for
 * any GET with a Sec-WebSocket-Key, even without `Upgrade: websocket` /
 * `Connection: Upgrade` (RFC 6455 §4.2.1 requires both): a proxy that strips
 * those hop-by-hop headers must get the same 426 as a plain GET, not a 101 it
 * cannot relay.
 */
export function upgradeRefusal(head: UpgradeHead): ShapeResult<never> | undefined {
  if (!listsToken(head.upgrade, 'websocket') || !listsToken(head.connection, 'upgrade')) {
    return { refusal: { code: 'bad_request', message: UPGRADE_NEEDED, reason: 'not_upgrade', headers: { Upgrade: 'websocket' }, status: 426 } };
  }
  if (head.version !== '13') {
    return { refusal: { code: 'bad_request', message: 'Sec-WebSocket-Version must be 13', reason: 'bad_version', headers: { 'Sec-WebSocket-Version': '13' }, status: 426 } };
  }
  if (!KEY_RE.test(head.key)) return { refusal: { code: 'bad_request', message: 'missing or invalid Sec-WebSocket-Key', reason: 'bad_ws_key' } };
  return undefined;
}

/**
 * Upgrades an accepted connection: inside the handler the response is already
 * corked; after an await it must be corked again, on another socket when one
 * is available (cork-anchor.ts: uWS #1928 cuts some upgrades corked on themselves).
 */
export function upgradeAccepted<U>(userData: U, protocol: string, { res, head, sync, asyncCork }: Admitted, context: Context): void {
  const upgrade = (): void => res.upgrade(userData, head.key, protocol, head.extensions, context);
  if (sync) upgrade();
  else if (asyncCork) asyncCork(res, upgrade);
  else res.cork(upgrade);
}

export function createUpgradeHandler(connect: ConnectHandler): (res: HttpResponse, req: HttpRequest, context: Context) => void {
  return (res, req, context) => {
    const kind: ConnectKind<null> = {
      transport: 'ws',
      shape: (head) => upgradeRefusal(head) ?? { value: null },
      accept(session: Session, _shape, a) {
        upgradeAccepted(session, selectSubprotocol(a.head.protocols) ?? '', a, context);
      },
    };
    connect(res, req, kind);
  };
}
