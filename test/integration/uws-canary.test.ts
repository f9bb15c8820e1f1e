/**
 * Canary for uWebSockets issue #1928 (uNetworking/uWebSockets, the C++ core of
 * uWebSockets.js; reported for uWebSockets.js as #1108): a WebSocket upgrade
 * completed asynchronously, `res.cork(() => res.upgrade(...))` after an
 * `await`, is closed by uWS right after its `open` event, without an error and
 * without the application closing it. Fixed by uWebSockets PR #1929 ("Fix
 * cork() closing a WebSocket that was upgraded asynchronously"; in
 * uWebSockets.js >= v20.69 according to issue 12). The build pubgate uses,
 * `uws-pack` 20.0.8 (upstream ~v20.49), does not carry the fix, which is why
 * pubgate completes its upgrades synchronously (src/auth/jws-sync.ts,
 * src/transport/upgrade.ts), why the upgrades that must complete after an
 * await (connect proxy, JWKS) are corked on another socket
 * (src/transport/cork-anchor.ts), and why this test is marked as the known
 * failure.
 *
 * Mechanism (from the PR): after the callback given to `res.cork()`, uWS runs
 * its post-response HTTP logic unless it sees that the socket was upgraded,
 * which it detects by the socket's address changing. Adopting the socket into
 * the WebSocket context reallocates it smaller, and glibc shrinks in place:
 * same address, the upgrade goes unnoticed, and uWS reads the HTTP state of
 * what is now a WebSocket. A request that carried `Connection: close` (exactly
 * that value: uWS flags it by its length) has the close flag set there, so uWS
 * shuts the fresh WebSocket down. That makes the reproduction deterministic
 * rather than lucky: measured on this build, 3 019 of 3 020 asynchronous
 * upgrades with `Connection: close` were cut (the other one was still open
 * after a 300 ms wait, on a loaded machine), and none of 80 synchronous ones
 * or of 60 asynchronous ones with another `Connection` value.
 * The known-failure test asserts that all of ATTEMPTS such upgrades succeed;
 * with the bug present at that rate, all of them escaping it (what would make
 * the test report a fix that is not there) is beyond practical possibility.
 * Bounded: ATTEMPTS sequential attempts of at most ATTEMPT_MS each.
 *
 * WHEN THIS TEST STARTS FAILING ("expected to fail, but passed"), first check
 * that the other test in this file still passes: if it does not, the harness
 * is broken, not uWS fixed. If it does, the uWS build in package.json carries
 * the fix:
 *   1. Confirm it (the build's version and release notes name PR #1929), then
 *      change `it.fails` below to `it`, so the test guards the fix from now on.
 *   2. The asynchronous upgrade path can then be trusted: revisit why
 *      src/auth/jws-sync.ts exists (issue 12, item 2) and whether jose's
 *      asynchronous verification may replace it, and update the README's
 *      runtime/uWS section and docs/benchmarks.md (which attributes 1006
 *      closes right after `open` to this issue).
 */
import * as uws from 'uWebSockets.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asyncUpgrade, attemptUpgrade, echoBehavior, type UpgradeOutcome } from '../helpers/raw-upgrade.js';

const ATTEMPTS = 20;
const ATTEMPT_MS = 2000;

type Outcome = UpgradeOutcome;

let listenSocket: uws.us_listen_socket | undefined;
let port = 0;
const open = new Set<uws.WebSocket<unknown>>();

/** Sends `hello` on open and echoes every text message, like any server that greets its clients. */
const behavior = (upgrade: uws.WebSocketBehavior<unknown>['upgrade']): uws.WebSocketBehavior<unknown> =>
  echoBehavior(upgrade, { open: (ws) => void open.add(ws), close: (ws) => void open.delete(ws) });

beforeAll(async () => {
  const app = uws.App();
  // Upgraded inside the upgrade handler: uWS's synchronous path, not affected.
  app.ws('/sync', behavior((res, req, context) => {
    res.upgrade({}, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
  }));
  // Upgraded after an await and corked on itself, as uWS documents.
  app.ws('/async', behavior(asyncUpgrade((res, upgrade) => res.cork(upgrade))));
  await new Promise<void>((resolve, reject) => {
    app.listen('127.0.0.1', 0, (ls) => {
      if (!ls) return reject(new Error('the canary app cannot listen on 127.0.0.1'));
      listenSocket = ls;
      port = uws.us_socket_local_port(ls);
      resolve();
    });
  });
});

afterAll(() => {
  if (listenSocket) uws.us_listen_socket_close(listenSocket);
  for (const ws of [...open]) ws.close();
});

/** ATTEMPTS upgrades one after the other; how each ended. */
async function outcomes(path: string, connection: string): Promise<Partial<Record<Outcome, number>>> {
  const counts: Partial<Record<Outcome, number>> = {};
  for (let i = 0; i < ATTEMPTS; i++) {
    const o = await attemptUpgrade(port, path, connection, ATTEMPT_MS);
    counts[o] = (counts[o] ?? 0) + 1;
  }
  return counts;
}

describe('uWS issue #1928 canary (uws-pack 20.0.8)', () => {
  it('completes synchronous upgrades with Connection: close, and asynchronous ones without it (the harness works)', async () => {
    expect(await outcomes('/sync', 'close')).toEqual({ ok: ATTEMPTS });
    expect(await outcomes('/async', 'Upgrade')).toEqual({ ok: ATTEMPTS });
  });

  // Known failure: uWS #1928. See the top of this file for what to do when it passes.
  it.fails('completes asynchronous upgrades (res.cork(() => res.upgrade()) after an await) from clients sending Connection: close', async () => {
    expect(await outcomes('/async', 'close')).toEqual({ ok: ATTEMPTS });
  });
});
