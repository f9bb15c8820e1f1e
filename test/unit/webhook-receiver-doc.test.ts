/**
 * The Node receiver in docs/webhooks.md, run as written (extracted from the
 * page into a file beside node_modules, started with node) against the
 * deliverer: it handles each event once when the same batch comes twice, and
 * answers 401 to a request whose signature does not verify; with a raw secret too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/observability/metrics.js';
import { encodeEvent } from '../../src/webhooks/events.js';
import { createWebhookDeliverer, webhookBody, webhookMessageId } from '../../src/webhooks/deliverer.js';
import { createMemoryWebhookQueue } from '../../src/webhooks/memory-queue.js';
import type { WebhookQueue } from '../../src/webhooks/queue.js';
import { parseWebhookSecret, signWebhook } from '../../src/webhooks/signing.js';
import { memoryLog } from '../helpers/broker-contract.js';
import { freePort } from '../helpers/ports.js';
import { addWaiter, type Waiter } from '../helpers/waiters.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const WAIT_MS = 15_000;

function receiverSource(): string {
  const page = readFileSync(path.join(ROOT, 'docs/webhooks.md'), 'utf8');
  const section = page.slice(page.indexOf('## A receiver in Node.js'));
  const m = /```js\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('no js block in the receiver section of docs/webhooks.md');
  return m[1]!;
}

interface Receiver {
  readonly url: string;
  readonly lines: string[];
  waitForLines(n: number): Promise<void>;
}

const procs: ChildProcess[] = [];
const files: string[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) p.kill('SIGKILL');
  for (const f of files.splice(0)) rmSync(f, { force: true });
});

/** Starts the documented receiver; its stdout lines are the events it handled. */
async function startReceiver(secret: string): Promise<Receiver> {
  // Inside the repository, so that `import 'standardwebhooks'` resolves.
  const dir = path.join(ROOT, 'node_modules/.cache/pubgate-test');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `receiver-${process.pid}-${randomBytes(4).toString('hex')}.mjs`);
  writeFileSync(file, receiverSource());
  files.push(file);
  const port = await freePort();
  const proc = spawn(process.execPath, [file], { env: { ...process.env, WEBHOOK_SECRET: secret, PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(proc);
  const lines: string[] = [];
  const waiters: Waiter<number>[] = [];
  let rest = '';
  proc.stdout!.setEncoding('utf8');
  proc.stdout!.on('data', (d: string) => {
    rest += d;
    const parts = rest.split('\n');
    rest = parts.pop()!;
    lines.push(...parts);
    for (const w of [...waiters]) {
      if (w.pred(lines.length)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(lines.length);
      }
    }
  });
  return {
    url: `http://127.0.0.1:${port}/hooks`,
    lines,
    waitForLines: async (n) => {
      if (lines.length < n) await addWaiter(waiters, (k) => k >= n, WAIT_MS, () => new Error(`${lines.length} of ${n} lines from the receiver`));
    },
  };
}

/** The memory queue, whose first ack of a channel is lost (as when a node dies after the 2xx): the same batch goes twice. */
function forgetfulQueue(): { queue: WebhookQueue; append: (ch: string, texts: string[]) => void; acks: () => number; waitForAcks: (n: number) => Promise<void> } {
  const q = createMemoryWebhookQueue({ maxEvents: 1000 });
  let acks = 0;
  const waiters: Waiter<number>[] = [];
  const counted = (): void => {
    for (const w of [...waiters]) {
      if (w.pred(acks)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(acks);
      }
    }
  };
  const queue: WebhookQueue = {
    mark: (...a) => q.mark(...a),
    claim: (...a) => q.claim(...a),
    peek: (...a) => q.peek(...a),
    ack: (channel, ids) => {
      if (ids.length === 0) return q.ack(channel, ids);
      acks++;
      const done = acks === 1 ? q.fail(channel, ids, { baseMs: 1, maxMs: 1, windowMs: 60_000 }).then(() => undefined) : q.ack(channel, ids);
      return done.finally(counted);
    },
    fail: (...a) => q.fail(...a),
    size: () => q.size(),
  };
  return {
    queue,
    append: (ch, texts) => q.append(ch, texts, Date.now()),
    acks: () => acks,
    waitForAcks: async (n) => {
      if (acks < n) await addWaiter(waiters, (k) => k >= n, WAIT_MS, () => new Error(`${acks} of ${n} acks`));
    },
  };
}

async function run(secret: string): Promise<void> {
  const receiver = await startReceiver(secret);
  const { queue, append, acks, waitForAcks } = forgetfulQueue();
  const texts = [
    encodeEvent('docA1B2C3D4.0', 'channel_occupied', 'chat:1', undefined, Date.now()),
    encodeEvent('docA1B2C3D4.1', 'member_added', 'chat:1', '42', Date.now()),
  ];
  append('chat:1', texts);
  // Until the receiver listens, requests are refused and retried (backoff of at most 20 ms here).
  const deliverer = createWebhookDeliverer({
    queue, url: receiver.url, key: parseWebhookSecret(secret), retryWindowMs: 60_000, metrics: createMetrics('unit'), log: memoryLog(),
    backoffBaseMs: 1, backoffMaxMs: 20, pollMs: 5, gaugeMs: 0,
  });
  deliverer.start();
  try {
    await receiver.waitForLines(2);
    // The second send of the same batch (its ack was lost) is acknowledged, and handled no more.
    await waitForAcks(2);
  } finally {
    await deliverer.stop();
  }
  expect(acks()).toBe(2);
  expect(receiver.lines).toEqual(['channel_occupied chat:1 ', 'member_added chat:1 42']);

  // A request whose signature does not verify: 401, nothing handled.
  const body = webhookBody([encodeEvent('docX.0', 'channel_vacated', 'chat:1', undefined, Date.now())]);
  const id = webhookMessageId(body);
  const ts = Math.floor(Date.now() / 1000);
  const forged = await fetch(receiver.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signWebhook(randomBytes(32), id, ts, body) },
    body,
  });
  expect(forged.status).toBe(401);
  const good = await fetch(receiver.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signWebhook(parseWebhookSecret(secret), id, ts, body) },
    body,
  });
  expect(good.status).toBe(204);
  await receiver.waitForLines(3);
  expect(receiver.lines[2]).toBe('channel_vacated chat:1 ');
}

describe('the receiver example in docs/webhooks.md', () => {
  it('verifies with a whsec_ secret, handles a batch sent twice once, and refuses a bad signature', async () => {
    await run(`whsec_${randomBytes(32).toString('base64')}`);
  });

  it('verifies with a raw (non-ASCII) secret', async () => {
    await run('raw secret for the receiver: ünïcode ✓ 0123456789');
  });
});
