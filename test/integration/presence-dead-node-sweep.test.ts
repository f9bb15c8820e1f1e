/**
 * The dead-node sweep (occupancy/occupancy.ts) without webhooks, on one
 * redis-server: a node that is killed (kill -9) while it holds the only
 * subscriber of a presence channel has its presence removed by another node
 * that never held the channel. That node learns of the death from the
 * liveness entries, claims the dead node's channel list and evicts its
 * presence there (before, nobody worked on such a channel, and its entries
 * stayed until a read or the keys' expiry).
 *
 * The waits are hang guards far above PUBGATE_PRESENCE_TTL + 5 s, not timing
 * assertions: the machine is shared and slow.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { metric, type GatewayProcess } from '../helpers/gateway.js';
import { PresenceNodes, expectedView, httpView, presenceEnv, uid } from '../helpers/presence.js';
import { pollUntil } from '../helpers/redis.js';

const TTL = 3;
const GUARD_MS = 60_000;

describe('dead-node sweep without webhooks (redis)', () => {
  const n = new PresenceNodes('redis');
  const a = (): GatewayProcess => n.node(0);
  const b = (): GatewayProcess => n.node(1);

  beforeAll(() => n.start(['sweep-a', 'sweep-b'], presenceEnv({ ttl: TTL })), n.setupMs);
  afterEach(() => n.closeClients());
  afterAll(() => n.stop());

  it(
    'kill -9 of the only node holding a presence channel: another node that never held it sweeps it, and presence shows the user gone',
    async () => {
      const t = uid();
      const ch = `room:${t}`;
      const redis = n.group.redis();
      const x = await n.open(b(), { user: `${t}-x`, info: { on: 'b' } });
      await x.subscribe(ch);
      // The channel is in B's list (written before B takes it): the sweep finds it there.
      await pollUntil(async () => {
        for (const key of await redis.cli('KEYS', 'pubgate:lv:held:*')) if ((await redis.cli('SISMEMBER', key, ch))[0] === '1') return true;
        return false;
      }, `${ch} in a node's channel list`, GUARD_MS);
      // A sees the presence (cluster-wide) without holding the channel.
      expect(await httpView(a(), ch)).toEqual(expectedView([x]));
      const swept0 = await metric(a().admin, 'pubgate_dead_nodes_swept_total');
      const channels0 = await metric(a().admin, 'pubgate_dead_node_channels_swept_total');

      expect(await b().stop('SIGKILL')).toBeNull();
      await x.closed;

      // A claims B's expired liveness entry and sweeps its list; no presence read is made before.
      await pollUntil(async () => (await metric(a().admin, 'pubgate_dead_nodes_swept_total')) > swept0, 'A to sweep the dead node', GUARD_MS);
      expect(await metric(a().admin, 'pubgate_dead_node_channels_swept_total')).toBeGreaterThan(channels0);
      // The sweep itself removed B's entries and lease (no read swept them; the keys live 2 TTL + 10 s).
      expect(await redis.cli('HLEN', `pubgate:pe:{pubgate:ch:${ch}}`)).toEqual(['0']);
      expect(await redis.cli('ZCARD', `pubgate:pn:{pubgate:ch:${ch}}`)).toEqual(['0']);
      expect(await httpView(a(), ch)).toEqual(expectedView([]));
      // B's list and claim are gone (the sweep is complete).
      for (const key of await redis.cli('KEYS', 'pubgate:lv:held:*')) expect(await redis.cli('SISMEMBER', key, ch), key).toEqual(['0']);
    },
    240_000,
  );
});
