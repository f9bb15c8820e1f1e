import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, token } from '../helpers/client.js';
import { metric, publish, startGateway, type GatewayProcess } from '../helpers/gateway.js';

let gw: GatewayProcess;

beforeAll(async () => {
  gw = await startGateway({ PUBGATE_MAX_SUBSCRIPTIONS: '3', PUBGATE_MAX_PAYLOAD_LENGTH: '1024' });
});
afterAll(async () => {
  await gw?.stop();
});

describe('frames', () => {
  it('sends welcome first with node, conn, user, expiresIn and ping', async () => {
    const c = await connect(gw.url, { token: await token({ sub: 'u1', channels: ['news'] }, { ttlSec: 600 }) });
    expect(c.welcome).toMatchObject({ type: 'welcome', user: 'u1', ping: 25 });
    expect(typeof c.welcome.node).toBe('string');
    expect(typeof c.welcome.conn).toBe('string');
    expect(c.welcome.expiresIn).toBeGreaterThan(590);
    expect(c.welcome.expiresIn).toBeLessThanOrEqual(600);
    expect(c.ws.protocol).toBe('pubgate.v1');
    await c.close();
  });

  it('subscribes, receives a publish byte-for-byte, and unsubscribes', async () => {
    const c = await connect(gw.url, { token: await token({ sub: 'u2', channels: ['news', 'chat:*'] }) });
    expect(await c.request({ type: 'subscribe', id: 1, channel: 'chat:7' })).toEqual({ type: 'reply', id: 1 });
    const data = '{"text":"h\\u00e9llo ☃","n":[1.0,-0,1e400,null],"deep":{"a":{"b":[true,false]}},"big":12345678901234567890}';
    const received = new Promise<string>((resolve) => c.ws.once('message', (m) => resolve(m.toString())));
    const res = await publish(gw, `{"channel":"chat:7","data":${data}}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ channel: 'chat:7' });
    const raw = await received;
    expect(raw).toBe(`{"type":"message","channel":"chat:7","data":${data}}`);
    expect(await c.request({ type: 'unsubscribe', id: 2, channel: 'chat:7' })).toEqual({ type: 'reply', id: 2 });
    await c.close();
  });
});
