import type { ErrorCode } from './protocol.js';

/**
 * Why a client operation failed: a gateway error code from a `reply` frame, or
 * one of the client's own:
 * - `timeout`: no reply within `requestTimeoutMs` (a publish may or may not have been accepted);
 * - `disconnected`: the connection was lost before the reply (same caveat), or a publish was
 *   made while disconnected with `offlinePublish: 'reject'`;
 * - `queue_full`: a publish made while disconnected found `maxQueuedPublishes` already waiting;
 * - `closed`: the client was closed (by `close()` or by a close code that means stop);
 * - `unsubscribed`: the subscription was cancelled (by you, or by a backend's
 *   `POST /v1/unsubscribe`) before the server confirmed it, or
 *   `presence()`/`presenceStats()` was called on a subscription that has ended;
 * - `token`: `getToken` failed or returned no token, or `getSubscriptionToken` failed
 *   (threw, answered something other than a string, or did not settle in time);
 * - `protocol`: the server sent something the client cannot read;
 * - `handler`: an `onMessage` callback or a subscription's listener threw (reported through the `error` event);
 * - `transport_unsupported`: the client is on Server-Sent Events (its WebSocket failed), which only
 *   receives: socket `publish()`, `ping()` and presence queries need the WebSocket.
 */
export type ClientErrorCode = 'timeout' | 'disconnected' | 'queue_full' | 'closed' | 'unsubscribed' | 'token' | 'protocol' | 'handler' | 'transport_unsupported';

export class PubgateError extends Error {
  readonly code: ErrorCode | ClientErrorCode;
  /** The channel the failed operation was about, when there is one. */
  readonly channel: string | undefined;
  constructor(code: ErrorCode | ClientErrorCode, message: string, channel?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PubgateError';
    this.code = code;
    this.channel = channel;
  }
}
