/**
 * The connect and subscribe proxies of a node, built from its config: each is
 * there only when its URL is set, and both share one bounded client
 * (proxy-client.ts), so PUBGATE_PROXY_CONCURRENCY bounds them together.
 */
import type { Config } from '../config.js';
import type { Log } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import {
  encodeConnectRequest,
  encodeSubscribeRequest,
  readConnectAnswer,
  readSubscribeAnswer,
  type ConnectGrant,
  type ConnectRequest,
  type SubscribeGrant,
  type SubscribeRequest,
} from './answers.js';
import { createProxyClient, type Outcome, type ProxyClient } from './proxy-client.js';

export type { ConnectGrant, ConnectRequest, SubscribeGrant, SubscribeRequest } from './answers.js';
export type { Outcome } from './proxy-client.js';

export interface ConnectProxy {
  /** Asks whether a token-less upgrade (or a refresh of such a connection) is accepted; `signal` aborts it. */
  ask(req: ConnectRequest, signal?: AbortSignal): Promise<Outcome<ConnectGrant>>;
}

export interface SubscribeProxy {
  /** Asks whether a connection may subscribe to a channel its claims and tokens do not allow. */
  ask(req: SubscribeRequest): Promise<Outcome<SubscribeGrant>>;
}

export interface Proxies {
  readonly connect: ConnectProxy | undefined;
  readonly subscribe: SubscribeProxy | undefined;
  /** Writes the pending failure log line. */
  flush(): void;
  /** Shutdown: writes the pending failure log line and closes the connections to the backends. */
  close(): void;
}

export type ProxyConfig = Pick<Config, 'connectProxyUrl' | 'subscribeProxyUrl' | 'proxyKey' | 'proxyTimeoutMs' | 'proxyConcurrency'>;

export function createProxies(config: ProxyConfig, metrics: Metrics, log: Log, client?: ProxyClient): Proxies {
  const c = client ?? createProxyClient({
    key: config.proxyKey,
    timeoutMs: config.proxyTimeoutMs,
    concurrency: config.proxyConcurrency,
    metrics,
    log,
  });
  const connectUrl = config.connectProxyUrl;
  const subscribeUrl = config.subscribeProxyUrl;
  return {
    connect: connectUrl === undefined ? undefined : {
      ask: (req, signal) => c.call('connect', connectUrl, encodeConnectRequest(req), readConnectAnswer, signal),
    },
    subscribe: subscribeUrl === undefined ? undefined : {
      ask: (req) => c.call('subscribe', subscribeUrl, encodeSubscribeRequest(req), readSubscribeAnswer),
    },
    flush: () => c.flush(),
    close: () => c.close(),
  };
}

/** The reply or handshake message for a call that brought no decision (never the backend's own text). */
export function failureMessage(proxy: 'connect' | 'subscribe', result: Exclude<Outcome<unknown>['result'], 'allow' | 'deny'>): string {
  switch (result) {
    case 'timeout':
      return `the ${proxy} proxy did not answer in time`;
    case 'overloaded':
      return 'too many proxy calls in flight on this node';
    case 'bad_status':
      return `the ${proxy} proxy answered with an unexpected status`;
    case 'bad_response':
      return `the ${proxy} proxy gave an invalid answer`;
    case 'aborted':
      return `the ${proxy} proxy call was aborted`;
    case 'error':
      return `the ${proxy} proxy cannot be reached`;
  }
}
