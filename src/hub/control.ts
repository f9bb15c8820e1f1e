/**
 * Requests to every node, answered once every node has applied them
 * (POST /v1/subscribe and /v1/unsubscribe), over the broker's control channel.
 *
 * The asking node reads the node registry (Broker.nodes: the live nodes, by
 * lease), registers the request under a fresh id, and publishes it. Every node
 * (the asker included) applies it to its own connections (server-subs.ts:
 * each subscription confirmed by the broker before) and publishes an `ack`
 * addressed to the asker, `ok` false when it could not apply it. The request
 * is answered:
 * - once every node of the registry answered: done, or `unavailable` naming
 *   how many could not apply it;
 * - without the nodes whose lease ran out meanwhile (killed, or cut off from
 *   Redis: the registry is re-read every RECHECK_MS while requests wait);
 * - `unavailable` after CONTROL_TIMEOUT_MS, saying how many did not answer;
 * - `unavailable` at once when the broker is down, or goes down while waiting.
 *
 * Queries (the Pusher HTTP API's channel counts) go the same way with the
 * same rules: every node answers a `query` with its own subscription counts
 * (`answer`, through `deps.answer`), and the asker sums the answers of every
 * live node (CountSum). A node that does not answer in time makes the query
 * `unavailable`, as a request: a sum without it would be a wrong count.
 *
 * Bounded: at most MAX_PENDING requests and queries wait per node (more are
 * refused at once); answers for unknown or finished requests are ignored
 * (counted as `late`); one registry read per RECHECK_MS whatever the number
 * waiting; a query's sum keeps at most 2 × its bound of names.
 */
import type { Broker, BrokerStatus, ControlAnswer, ControlMessage, ControlQuery, ControlRequest } from '../broker/broker.js';
import { MAX_ANSWER_CHANNELS } from '../broker/control.js';
import { GatewayError } from '../errors.js';
import type { Log } from '../observability/logger.js';
import { LogTally } from '../observability/log-tally.js';
import type { ControlKind, ControlOp, ControlResult, Metrics } from '../observability/metrics.js';

/** A request not answered by every node within this long is answered `unavailable`. */
export const CONTROL_TIMEOUT_MS = 5000;
/** How often the registry is read again while requests wait (to stop waiting for dead nodes). */
export const RECHECK_MS = 500;
/** Requests waiting on one node at most. */
export const MAX_PENDING = 1024;

export interface ClusterControlDeps {
  readonly broker: Broker;
  /** Applies a server-side subscription request to this node's connections; false when it could not. */
  readonly apply: (op: ControlOp, user: string, channel: string) => Promise<boolean>;
  /**
   * This node's answer to a query: its matching channels with subscribers, in
   * name order, at most MAX_ANSWER_CHANNELS (`more` when it has others after
   * them). Absent: every query is answered with no channels.
   */
  readonly answer?: (q: ControlQuery) => Pick<ControlAnswer, 'counts' | 'more'>;
  /** `/v1/disconnect` arriving at this node. */
  readonly disconnect: (user: string) => void;
  readonly metrics: Metrics;
  readonly log: Log;
  readonly timeoutMs?: number;
  readonly recheckMs?: number;
  readonly maxPending?: number;
}

export interface ClusterControl {
  /** Applies a request on every node; resolves once every live node applied it, else rejects with GatewayError('unavailable'). */
  request(op: ControlOp, user: string, channel: string): Promise<void>;
  /**
   * Asks every node for its counts and sums them: resolves once every live
   * node answered, else rejects with GatewayError('unavailable') as request does.
   */
  query(q: QuestionOf): Promise<CountResult>;
  /** As query, with `byNode`: each answering node's total (the admin console's inspector). */
  queryByNode(q: QuestionOf): Promise<CountResult & Required<Pick<CountResult, 'byNode'>>>;
  /** Broker handler: a control message from any node. */
  onControl(msg: ControlMessage): void;
  /** Broker status: requests waiting when the broker goes down are answered `unavailable` at once. */
  onBrokerStatus(status: BrokerStatus): void;
  /** Requests waiting for answers. */
  pending(): number;
  /** Answers every waiting request `unavailable` and stops the timers (shutdown). */
  stop(): void;
}

/**
 * A query as the asker states it (control.ts adds the id and the asker):
 * app '' asks about the native channels; `top` (native, with a prefix) about
 * the busiest ones.
 */
export type QuestionOf =
  | { readonly app: string; readonly prefix: string; readonly top?: number }
  | { readonly app: string; readonly channels: readonly string[] };

type Count = readonly [name: string, n: number];
/** [name, count] pairs in name order. */
export const byName = (a: Count, b: Count): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
/** [name, count] pairs by count, most first; ties in name order. */
export const busiestFirst = (a: Count, b: Count): number => b[1] - a[1] || byName(a, b);

/** The summed answers of a query. */
export interface CountResult {
  /**
   * [name, subscriptions on every node], in name order, at most the query's
   * bound; for a `top` query, most subscriptions first (ties in name order),
   * at most `top`.
   */
  readonly counts: readonly (readonly [string, number])[];
  /** There are channels after the last one listed that are left out (a node or the bound cut its list). */
  readonly more: boolean;
  /**
   * queryByNode only: [instance, the sum of the counts it listed] for every
   * node that answered, by instance (for a query naming one channel: that
   * channel's subscriptions on each node).
   */
  readonly byNode?: readonly (readonly [string, number])[];
}

/** How a query's answers are summed (CountSum: name order; TopSum: busiest first). */
interface Summer {
  add(counts: readonly (readonly [string, number])[], more: boolean): void;
  result(): Omit<CountResult, 'byNode'>;
}

/**
 * Sums the nodes' answers to a query, bounded. Each node lists its first
 * names in order; a node that cut its list (`more`) lists nothing after its
 * last name, so the sum is exact only up to the smallest such last name (the
 * cutoff): names after it are dropped, and the answer says `more`. The same
 * cut keeps the sum within 2 × `max` names whatever the number of nodes: the
 * names after the first `max` can never be listed.
 */
export class CountSum implements Summer {
  private readonly sums = new Map<string, number>();
  /** Names after this one are left out; undefined while nothing was cut. */
  private cutoff: string | undefined;

  constructor(private readonly max: number = MAX_ANSWER_CHANNELS) {}

  add(counts: readonly (readonly [string, number])[], more: boolean): void {
    if (more) this.cut(counts.at(-1)?.[0] ?? '');
    for (const [name, n] of counts) {
      if (this.cutoff !== undefined && name > this.cutoff) continue;
      this.sums.set(name, (this.sums.get(name) ?? 0) + n);
    }
    if (this.sums.size > 2 * this.max) {
      const names = [...this.sums.keys()].sort();
      this.cut(names[this.max - 1] as string);
    }
  }

  result(): Omit<CountResult, 'byNode'> {
    const names = [...this.sums.keys()].sort();
    const listed = names.slice(0, this.max);
    return { counts: listed.map((n) => [n, this.sums.get(n) as number] as const), more: this.cutoff !== undefined || names.length > this.max };
  }

  private cut(at: string): void {
    if (this.cutoff !== undefined && this.cutoff <= at) return;
    this.cutoff = at;
    for (const name of [...this.sums.keys()]) if (name > at) this.sums.delete(name);
  }
}

/** Sums above which TopSum keeps only its best names (and says `more`). */
const MAX_TOP_SUMS = 10_000;

/**
 * Sums the nodes' answers to a `top` query: each node lists its `top` busiest
 * channels, the sums are ordered by subscriptions (most first, ties by name)
 * and the first `top` listed. Exact when no node cut its list; otherwise a
 * channel just below every node's cut could be missing or low, and the answer
 * says `more`. Bounded: at most MAX_TOP_SUMS names are kept.
 */
export class TopSum implements Summer {
  private readonly sums = new Map<string, number>();
  private cut = false;

  constructor(private readonly top: number) {}

  add(counts: readonly (readonly [string, number])[], more: boolean): void {
    if (more) this.cut = true;
    for (const [name, n] of counts) this.sums.set(name, (this.sums.get(name) ?? 0) + n);
    if (this.sums.size > MAX_TOP_SUMS) {
      const keep = this.ordered().slice(0, Math.max(this.top * 2, 1000));
      this.sums.clear();
      for (const [name, n] of keep) this.sums.set(name, n);
      this.cut = true;
    }
  }

  result(): Omit<CountResult, 'byNode'> {
    const all = this.ordered();
    return { counts: all.slice(0, this.top), more: this.cut || all.length > this.top };
  }

  private ordered(): [string, number][] {
    return [...this.sums].sort(busiestFirst);
  }
}

interface Pending {
  readonly op: ControlKind;
  /** Nodes whose answer is still awaited. */
  readonly waiting: Set<string>;
  /** Nodes asked. */
  readonly asked: number;
  /** Nodes that answered that they could not apply it. */
  failed: number;
  /** Nodes no longer waited for: their lease ran out. */
  gone: number;
  readonly startedMs: number;
  readonly timer: NodeJS.Timeout;
  readonly resolve: () => void;
  readonly reject: (e: GatewayError) => void;
  /** A query's answers so far, and the nodes they came from with their totals (one answer per node counts). */
  readonly sum?: Summer;
  readonly answered?: Map<string, number>;
}

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

export function createClusterControl(deps: ClusterControlDeps): ClusterControl {
  const { broker, metrics, log } = deps;
  const timeoutMs = deps.timeoutMs ?? CONTROL_TIMEOUT_MS;
  const recheckMs = deps.recheckMs ?? RECHECK_MS;
  const maxPending = deps.maxPending ?? MAX_PENDING;
  const self = broker.instance;
  const pending = new Map<string, Pending>();
  let seq = 0;
  let recheck: NodeJS.Timeout | undefined;
  let rechecking = false;
  const ackFailures = new LogTally(log, 'warn', 'answers to control requests not sent', { component: 'control' });
  metrics.observeControlPending(() => pending.size);

  const nowMs = (): number => performance.now();

  function finish(id: string, result: ControlResult, message?: string): void {
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    clearTimeout(p.timer);
    if (pending.size === 0 && recheck) {
      clearInterval(recheck);
      recheck = undefined;
    }
    metrics.controlRequest(p.op, result, (nowMs() - p.startedMs) / 1000);
    if (result === 'ok') {
      p.resolve();
      return;
    }
    log.info({ op: p.op, result, asked: p.asked, unanswered: p.waiting.size, failed: p.failed, gone: p.gone }, 'request to every node not completed');
    p.reject(new GatewayError('unavailable', message ?? 'the request could not be applied on every node', 1));
  }

  function settleIfDone(id: string, p: Pending): void {
    if (p.waiting.size > 0) return;
    if (p.failed > 0) {
      finish(id, 'failed', `${plural(p.failed, 'node', 'nodes')} of ${p.asked} could not apply it (broker unavailable there); it may be applied on the others, and retrying is safe`);
    } else {
      finish(id, 'ok');
    }
  }

  /** Re-reads the registry and stops waiting for nodes no longer in it (their lease ran out). */
  function recheckNodes(): void {
    if (rechecking || pending.size === 0) return;
    rechecking = true;
    broker.nodes().then(
      (list) => {
        const live = new Set(list);
        metrics.clusterNodes(live.size);
        for (const [id, p] of [...pending]) {
          for (const n of [...p.waiting]) {
            if (n === self || live.has(n)) continue;
            p.waiting.delete(n);
            p.gone++;
            log.info({ node: n, op: p.op }, 'not waiting for a node whose lease ran out');
          }
          settleIfDone(id, p);
        }
      },
      // The broker is down (onBrokerStatus answers the requests) or slow (their timeout does).
      (e: unknown) => log.debug({ err: e instanceof Error ? e.message : String(e) }, 'node registry read failed'),
    ).finally(() => {
      rechecking = false;
    });
  }

  function overloaded(op: ControlKind, startedMs: number): GatewayError {
    metrics.controlRequest(op, 'overloaded', (nowMs() - startedMs) / 1000);
    return new GatewayError('unavailable', `${maxPending} requests to every node are already waiting on this node; retry later`, 1);
  }

  /**
   * Sends a request or query to every live node and waits for their answers
   * (`sum` for a query): the registry read, the pending entry, the timeout.
   */
  async function ask(op: ControlKind, msg: (id: string) => ControlMessage, sum?: Summer, answered?: Map<string, number>): Promise<void> {
    const startedMs = nowMs();
    if (pending.size >= maxPending) throw overloaded(op, startedMs);
    let nodes: readonly string[];
    try {
      if (broker.status !== 'ready') throw new GatewayError('unavailable', 'broker is not connected', 1);
      nodes = await broker.nodes();
    } catch (e) {
      metrics.controlRequest(op, 'unavailable', (nowMs() - startedMs) / 1000);
      throw e instanceof GatewayError ? e : new GatewayError('unavailable', 'the node registry cannot be read', 1);
    }
    if (pending.size >= maxPending) throw overloaded(op, startedMs);
    const waiting = new Set(nodes);
    metrics.clusterNodes(waiting.size);
    waiting.add(self); // this node applies it too, registered yet or not
    const id = (++seq).toString(36);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const p = pending.get(id);
        if (!p) return;
        finish(id, 'timeout', `${plural(p.waiting.size, 'node', 'nodes')} of ${p.asked} did not answer within ${timeoutMs / 1000} s; ${op === 'query' ? 'retrying is safe' : 'it may be applied on the others, and retrying is safe'}`);
      }, timeoutMs);
      // Registered before publishing: the embedded broker answers synchronously.
      pending.set(id, { op, waiting, asked: waiting.size, failed: 0, gone: 0, startedMs, timer, resolve, reject, ...(sum ? { sum, answered: answered ?? new Map<string, number>() } : {}) });
      if (!recheck) {
        recheck = setInterval(recheckNodes, recheckMs);
        recheck.unref();
      }
      broker.publishControl(msg(id)).catch((e: unknown) => {
        finish(id, 'unavailable', e instanceof GatewayError ? e.message : 'the broker did not accept the request');
      });
    });
  }

  /** Asks every node; the sum of their answers, and each one's total. */
  async function sumOf(q: QuestionOf): Promise<{ result: () => Omit<CountResult, 'byNode'>; answered: Map<string, number> }> {
    const sum: Summer = 'prefix' in q && q.top !== undefined ? new TopSum(q.top) : new CountSum(MAX_ANSWER_CHANNELS);
    const answered = new Map<string, number>();
    await ask('query', (id) => ({ kind: 'query', id, from: self, ...q }), sum, answered);
    return { result: () => sum.result(), answered };
  }

  function answerQuery(msg: ControlQuery): void {
    let a: Pick<ControlAnswer, 'counts' | 'more'>;
    try {
      a = deps.answer ? deps.answer(msg) : { counts: [], more: false };
    } catch (e) {
      // Not answered: the asker's timeout (or this node's lease) settles it.
      log.error({ err: e }, 'answering a control query failed');
      metrics.controlApplied('query', false);
      return;
    }
    metrics.controlApplied('query', true);
    broker.publishControl({ kind: 'answer', id: msg.id, to: msg.from, node: self, counts: a.counts, more: a.more })
      .catch((e: unknown) => ackFailures.add('answer', 1, e instanceof Error ? e.message : String(e)));
  }

  function applyRequest(msg: ControlRequest): void {
    deps.apply(msg.kind, msg.user, msg.channel).then(
      (ok) => ok,
      (e: unknown) => {
        log.error({ err: e, op: msg.kind }, 'applying a control request failed');
        return false;
      },
    ).then((ok) => {
      metrics.controlApplied(msg.kind, ok);
      return broker.publishControl({ kind: 'ack', id: msg.id, to: msg.from, node: self, ok });
    }).catch((e: unknown) => ackFailures.add('ack', 1, e instanceof Error ? e.message : String(e)));
  }

  return {
    request(op, user, channel) {
      return ask(op, (id) => ({ kind: op, id, from: self, user, channel }));
    },

    async query(q) {
      return (await sumOf(q)).result();
    },

    async queryByNode(q) {
      const { result, answered } = await sumOf(q);
      const byNode = [...answered].sort(byName);
      return { ...result(), byNode };
    },

    onControl(msg) {
      switch (msg.kind) {
        case 'disconnect':
          deps.disconnect(msg.user);
          return;
        case 'subscribe':
        case 'unsubscribe':
          applyRequest(msg);
          return;
        case 'ack': {
          if (msg.to !== self) return; // another node's request
          const p = pending.get(msg.id);
          if (!p || p.sum) {
            metrics.controlAck('late');
            return;
          }
          metrics.controlAck(msg.ok ? 'ok' : 'error');
          // A node the registry did not list yet answers too; only a failure of it counts.
          if (!msg.ok) p.failed++;
          p.waiting.delete(msg.node);
          settleIfDone(msg.id, p);
          return;
        }
        case 'query':
          answerQuery(msg);
          return;
        case 'answer': {
          if (msg.to !== self) return; // another node's query
          const p = pending.get(msg.id);
          if (!p?.sum || !p.answered || p.answered.has(msg.node)) {
            metrics.controlAck('late');
            return;
          }
          metrics.controlAck('ok');
          p.answered.set(msg.node, msg.counts.reduce((t, c) => t + c[1], 0));
          // A node the registry did not list yet answers too: its subscriptions are real.
          p.sum.add(msg.counts, msg.more);
          p.waiting.delete(msg.node);
          settleIfDone(msg.id, p);
          return;
        }
      }
    },

    onBrokerStatus(status) {
      if (status === 'ready') return;
      for (const id of [...pending.keys()]) finish(id, 'unavailable', 'the broker connection was lost while waiting for the nodes\' answers; retrying is safe');
    },

    pending: () => pending.size,

    stop() {
      for (const id of [...pending.keys()]) finish(id, 'unavailable', 'node is shutting down; retrying is safe');
      if (recheck) clearInterval(recheck);
      recheck = undefined;
    },
  };
}
