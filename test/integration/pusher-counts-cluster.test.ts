/**
 * The Pusher HTTP API's channel counts cluster-wide: real pusher-js clients
 * subscribed on some gateway nodes, the real `pusher` server library asking
 * another node, all on one real redis-server. The asking node sends a count
 * query to every node and sums their answers: a public channel whose
 * subscribers are all on another node is occupied with their count; the
 * channel list with filter_by_prefix sums across nodes and keeps apps apart;
 * a node killed drops out once its registry lease runs out. And on the
 * embedded broker a node answers its own query.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type GatewayProcess } from '../helpers/gateway.js';
import { NodeGroup } from '../helpers/multinode.js';
import { uid } from '../helpers/presence.js';
import { PusherClients, connected, pusherEnv, pusherServer, subscribed, type PusherApp } from '../helpers/pusher.js';

const APP = { id: '501', key: 'key-501', secret: 'secret-501-0123456789' };
const OTHER = { id: 'other', key: 'key-other', secret: 'secret-other-0123456789' };

const group = new NodeGroup();
const clients = new PusherClients();
let a: GatewayProcess;
let b: GatewayProcess;
let c: GatewayProcess;

/** A pusher-js client of `gw` subscribed to `channels` (subscription_succeeded for each). */
async function subscriber(gw: GatewayProcess, app: PusherApp, ...channels: string[]): Promise<void> {
  const p = clients.connect(gw, app);
  await connected(p);
  for (const ch of channels) await subscribed(p, ch);
}

async function getJson(gw: GatewayProcess, path: string, params: Record<string, string> = {}, app: PusherApp = APP): Promise<unknown> {
  return (await pusherServer(gw, app).get({ path, params })).json();
}

beforeAll(async () => {
  await group.startOnRedis(['counts-a', 'counts-b', 'counts-c'], { ...pusherEnv([APP, OTHER]), PUBGATE_LOG_LEVEL: 'info' });
  [a, b, c] = [group.node(0), group.node(1), group.node(2)];
});

afterAll(async () => {
  clients.closeAll();
  await group.stop();
});

describe('channel counts across nodes', () => {
  it('answers a public channel whose subscribers are all on another node as occupied, with their count', async () => {
    const ch = `only-on-b-${uid()}`;
    await subscriber(b, APP, ch);
    await subscriber(b, APP, ch);
    expect(await getJson(a, `/channels/${ch}`, { info: 'subscription_count' })).toEqual({ occupied: true, subscription_count: 2 });
    expect(await getJson(a, `/channels/${ch}`)).toEqual({ occupied: true });
    // A trigger's info counts the whole cluster too.
    const res = await pusherServer(a, APP).trigger(ch, 'ev', { x: 1 }, { info: 'subscription_count' });
    expect(await res.json()).toEqual({ channels: { [ch]: { subscription_count: 2 } } });
  });

  it('lists the channels of every node by prefix, summing their subscriptions, and keeps other apps apart', async () => {
    const tag = uid();
    const [onA, onB, onBoth, elsewhere] = [`list-${tag}-a`, `list-${tag}-b`, `list-${tag}-both`, `else-${tag}`];
    await subscriber(a, APP, onA, onBoth);
    await subscriber(b, APP, onB, onBoth, elsewhere);
    await subscriber(b, APP, onB);
    await subscriber(c, OTHER, `list-${tag}-other`); // another app's channel of the same prefix
    expect(await getJson(a, '/channels', { filter_by_prefix: `list-${tag}`, info: 'subscription_count' })).toEqual({
      channels: { [onA]: { subscription_count: 1 }, [onB]: { subscription_count: 2 }, [onBoth]: { subscription_count: 2 } },
    });
    expect(await getJson(c, '/channels', { filter_by_prefix: `list-${tag}` })).toEqual({ channels: { [onA]: {}, [onB]: {}, [onBoth]: {} } });
    expect(await getJson(a, '/channels', { filter_by_prefix: `list-${tag}` }, OTHER)).toEqual({ channels: { [`list-${tag}-other`]: {} } });
  });
});

describe('a node killed', () => {
  it('drops out of the counts once its registry lease runs out', async () => {
    const ch = `on-c-${uid()}`;
    await subscriber(c, APP, ch);
    await subscriber(a, APP, ch);
    expect(await getJson(a, `/channels/${ch}`, { info: 'subscription_count' })).toEqual({ occupied: true, subscription_count: 2 });
    await c.stop('SIGKILL');
    // The query waits for the killed node until its lease runs out (about 3 s), then sums without it.
    expect(await getJson(a, `/channels/${ch}`, { info: 'subscription_count' })).toEqual({ occupied: true, subscription_count: 1 });
    expect(await getJson(b, '/channels', { filter_by_prefix: 'on-c-', info: 'subscription_count' })).toEqual({ channels: { [ch]: { subscription_count: 1 } } });
  });
});

describe('on the embedded broker', () => {
  let solo: GatewayProcess | undefined;
  afterAll(async () => {
    await solo?.stop();
  });

  it('answers its own query', async () => {
    solo = await startGateway({ ...pusherEnv([APP]), PUBGATE_LOG_LEVEL: 'info' });
    const ch = `solo-${uid()}`;
    await subscriber(solo, APP, ch);
    expect(await getJson(solo, `/channels/${ch}`, { info: 'subscription_count' })).toEqual({ occupied: true, subscription_count: 1 });
    expect(await getJson(solo, '/channels', { filter_by_prefix: 'solo-' })).toEqual({ channels: { [ch]: {} } });
  });
});
