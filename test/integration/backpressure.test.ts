import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token, type Client } from '../helpers/client.js';
import { TEST_API_KEY, metric, startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { waitUntil } from '../helpers/handshake.js';

/** Resident set size of a process, bytes (Linux). */
function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

const MESSAGE_BYTES = 1000;
const BATCH = 500;
const TOTAL_BYTES = 50 * 1024 * 1024;
const BATCHES = Math.ceil(TOTAL_BYTES / (MESSAGE_BYTES * BATCH));
const TOTAL = BATCHES * BATCH;
const PAD = 'x'.repeat(MESSAGE_BYTES - 30);

async function publishBatches(gw: GatewayProcess, channel: string): Promise<void> {
  for (let b = 0; b < BATCHES; b++) {
    const messages = Array.from({ length: BATCH }, (_, i) => ({ channel, data: { n: b * BATCH + i, pad: PAD } }));
    const res = await fetch(`${gw.http}/v1/publish/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages }),
    });
    expect(res.status).toBe(200);
  }
}

/** Counts messages with consecutive `n` from 0; resolves when `count` arrived, fails on a gap. */
function inOrder(c: Client, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let next = 0;
    c.ws.on('message', (raw) => {
      const f = JSON.parse(raw.toString()) as { type: string; data?: { n: number } };
      if (f.type !== 'message') return;
      if (f.data?.n !== next) reject(new Error(`expected message ${next}, got ${String(f.data?.n)}`));
      next++;
      if (next === count) resolve();
    });
  });
}

async function subscriber(gw: GatewayProcess, sub: string, channel: string): Promise<Client> {
  const c = await connect(gw.url, { token: await token({ sub, channels: [channel] }) });
  expect(await c.request({ type: 'subscribe', id: 1, channel })).toEqual({ type: 'reply', id: 1 });
  return c;
}

describe.each(['close', 'drop'] as const)('slowConsumerPolicy=%s', (policy) => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({
      PUBGATE_SLOW_CONSUMER_POLICY: policy,
      PUBGATE_MAX_BACKPRESSURE: String(256 * 1024),
      PUBGATE_MAX_PUBLISH_BYTES: String(2 * 1024 * 1024),
      PUBGATE_LOG_LEVEL: 'info',
    });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it(`keeps memory bounded and fast subscribers whole while a paused subscriber falls 50 MB behind`, async () => {
    const channel = `bp-${policy}`;
    const fast = await subscriber(gw, 'fast', channel);
    const slow = await subscriber(gw, 'slow', channel);
    const allArrived = inOrder(fast, TOTAL);
    const rssBefore = rssBytes(gw.proc.pid!);
    const dropsBefore = await metric(gw.admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' });
    slow.ws.pause(); // stops reading: the kernel buffers fill, then the node's send buffer

    await publishBatches(gw, channel);
    await allArrived;
    const rssAfter = rssBytes(gw.proc.pid!);
    expect(rssAfter - rssBefore).toBeLessThan(100 * 1024 * 1024);
    expect(await metric(gw.admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' })).toBeGreaterThan(dropsBefore);

    if (policy === 'close') {
      // It reads again: what was buffered arrives, then the 4008 close.
      slow.ws.resume();
      expect((await slow.closed).code).toBe(4008);
      expect(await metric(gw.admin, 'pubgate_slow_consumer_closes_total')).toBe(1);
      expect(await metric(gw.admin, 'pubgate_disconnects_total', { code: '4008' })).toBe(1);
    } else {
      // Kept open: it catches up, skipped messages were counted, and it receives new ones.
      let received = 0;
      slow.ws.on('message', (raw) => {
        if ((JSON.parse(raw.toString()) as { type: string }).type === 'message') received++;
      });
      const sentinel = slow.next((f) => f.type === 'message' && (f.data as { sentinel?: boolean }).sentinel === true, 30_000);
      slow.ws.resume();
      await waitUntil(async () => {
        const res = await fetch(`${gw.http}/v1/publish`, {
          method: 'POST',
          headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ channel, data: { sentinel: true } }),
        });
        return res.status === 200 && (await Promise.race([sentinel.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 500))]));
      }, 'the dropped-from subscriber receives a new message', 30_000);
      expect(received).toBeLessThan(TOTAL + 1);
      const dropped = await metric(gw.admin, 'pubgate_messages_dropped_total', { reason: 'slow_consumer' });
      // Every message is either received or counted as dropped, except the few
      // uWS skips before it reports the first drop (docs/protocol.md,
      // Backpressure): at most one send buffer's worth.
      const onsetBound = Math.ceil((256 * 1024) / MESSAGE_BYTES);
      expect(received - 1 + (dropped - dropsBefore)).toBeGreaterThanOrEqual(TOTAL - onsetBound);
      expect(received - 1 + (dropped - dropsBefore)).toBeLessThanOrEqual(TOTAL + onsetBound);
      expect(slow.ws.readyState).toBe(slow.ws.OPEN);
      await slow.close();
    }
    await fast.close();
  });
});
