/**
 * @pubgate/client: the browser and Node.js client of the pubgate gateway.
 *
 *   import { connect } from '@pubgate/client';
 *   const client = connect({ url: 'wss://ws.example.com/ws', getToken });
 *   const off = client.subscribe('news', (data) => console.log(data));
 */
export { connect } from './client.js';
export type {
  ClientEvents,
  ConnectOptions,
  ConnectionState,
  MessageHandler,
  PubgateClient,
  PublishOptions,
  ResubscribeInfo,
  SubscribeOptions,
  SubscribeResult,
  Subscription,
  SubscriptionMessage,
  SubscriptionToken,
  Transport,
  UnsubscribedEvent,
  WebSocketConstructor,
  WebSocketLike,
} from './client.js';
export type { JoinEvent, LeaveEvent, PresenceInfo, PresenceMember, PresenceResult, PresenceStats, SubscriptionEvents } from './presence.js';
export { PubgateError, type ClientErrorCode } from './errors.js';
export type { SseFetch, SseResponseLike } from './sse.js';
export {
  PubgateApiError,
  createApiClient,
  type ApiBatchMessage,
  type ApiClientOptions,
  type ApiErrorCode,
  type ApiHistoryMessage,
  type ApiHistoryOptions,
  type ApiHistoryResult,
  type ApiPresenceResult,
  type ApiPresenceStats,
  type ApiPublishOptions,
  type ApiPublishResult,
  type FetchLike,
  type FetchResponseLike,
  type PubgateApiClient,
} from './api.js';
export { DEFAULT_BACKOFF, backoffWindow, fullJitter, reconnectDelay, reconnectPlan, type BackoffOptions, type ReconnectPlan } from './backoff.js';
export {
  ABNORMAL_CLOSURE,
  BEARER_PREFIX,
  CHANNEL_RE,
  CLOSE,
  ERROR_CODES,
  SUBPROTOCOL,
  isValidChannel,
  shouldReconnect,
  type ClientFrame,
  type ClientFrameType,
  type CloseCode,
  type ErrorCode,
  type JoinFrame,
  type LeaveFrame,
  type MessageFrame,
  type PresenceMemberFrame,
  type ReplyFrame,
  type ServerFrame,
  type SinceOffset,
  type SubscribedFrame,
  type UnsubscribedFrame,
  type WelcomeFrame,
} from './protocol.js';
