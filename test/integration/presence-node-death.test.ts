/**
 * Presence when a gateway node dies (kill -9: no close frames, no cleanup),
 * on one redis-server and on a 3-master Redis Cluster: within
 * PUBGATE_PRESENCE_TTL (+5 s) every presence entry of the dead node's
 * connections is gone, and the subscribers on the surviving node receive a
 * `leave` for each user that had no other connection, and none for a user
 * whose other tab is on the survivor. A node restarted at once under the same
 * id does not keep its previous process's connections alive.
 *
 * The waits are hang guards far above TTL+5, not timing assertions: the
 * machine is shared and slow.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { metric, type GatewayProcess } from '../helpers/gateway.js';
import { startNodes, untilReadyz } from '../helpers/multinode.js';
import { PresenceNodes, expectedView, presenceEnv, uid, untilHttpView, type PresenceBackend } from '../helpers/presence.js';

const TTL = 4;
/** Hang guard for what must happen within TTL + 5 s. */
const GUARD_MS = 60_000;

describe.each<{ kind: PresenceBackend }>([{ kind: 'redis' }, { kind: 'redis-cluster' }])('presence when a node is killed ($kind)', ({ kind }) => {
  const n = new PresenceNodes(kind);
  const env = presenceEnv({ ttl: TTL });
  const survivor = (): GatewayProcess => n.node(0);

  beforeAll(() => n.start([`pd-${kind}-survivor`], env), n.setupMs);
  afterEach(() => n.closeClients());
  afterAll(() => n.stop());

  /** Starts one more node on the same broker, ready. */
  async function startVictim(id: string): Promise<GatewayProcess> {
    const [v] = await startNodes([id], { ...env, ...n.brokerEnv() }, n.group.nodes);
    if (!v) throw new Error(`node ${id} did not start`);
    await untilReadyz(v, 200, 60_000);
    return v;
  }

  it(
    'kill -9 of a node: its connections leave presence, and the survivor delivers a leave for each user with no other connection, none for a user whose other tab survives',
    async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const room = `room:${t}`;
      const victim = await startVictim(`pd-${kind}-victim-${t}`);

      const obs = await n.open(survivor(), { user: `${t}-obs` });
      await obs.subscribe(ch, room);
      // x: one tab, on the victim. z: two tabs, both on the victim. y: oldest tab on the victim, another on the survivor.
      const x = await n.open(victim, { user: `${t}-x`, info: { x: 1 } });
      const z1 = await n.open(victim, { user: `${t}-z`, info: { z: 1 } });
      const z2 = await n.open(victim, { user: `${t}-z`, info: { z: 2 } });
      const yDead = await n.open(victim, { user: `${t}-y`, info: { y: 'victim' } });
      const yLive = await n.open(survivor(), { user: `${t}-y`, info: { y: 'survivor' } });
      for (const c of [x, z1, z2, yDead, yLive]) await c.subscribe(ch, room);
      for (const u of [x, z1, yDead]) await obs.untilEvent('join', ch, u.user);
      expect(await obs.view(ch)).toEqual(expectedView([obs, x, z1, z2, yDead, yLive]));
      expect(obs.events(ch)).toHaveLength(3);
      const swept0 = await metric(survivor().admin, 'pubgate_presence_leases_expired_total');

      expect(await victim.stop('SIGKILL')).toBeNull();
      await Promise.all([x, z1, z2, yDead].map((c) => c.closed));

      await obs.untilEvent('leave', ch, x.user, GUARD_MS);
      await obs.untilEvent('leave', ch, z1.user, GUARD_MS);
      // Presence of both channels is the survivor's connections only, on the survivor's own answer.
      await untilHttpView(survivor(), ch, expectedView([obs, yLive]), GUARD_MS);
      await untilHttpView(survivor(), room, expectedView([obs, yLive]), GUARD_MS);
      expect(await obs.view(ch)).toEqual({
        members: [
          { user: `${t}-obs`, conns: 1 },
          { user: `${t}-y`, info: { y: 'survivor' }, conns: 1 },
        ],
        users: 2,
        connections: 2,
      });

      // Sentinel: a new user joins on the survivor; a leave of y would have come before.
      const w = await n.open(survivor(), { user: `${t}-w` });
      await w.subscribe(ch);
      await obs.untilEvent('join', ch, w.user);
      const after = obs.events(ch).slice(3);
      expect(after.slice(0, 2).sort((a, b) => (a.user < b.user ? -1 : 1))).toEqual([
        { type: 'leave', channel: ch, user: x.user },
        { type: 'leave', channel: ch, user: z1.user },
      ]);
      expect(after.slice(2)).toEqual([{ type: 'join', channel: ch, user: w.user }]);
      expect(yLive.events(ch).filter((e) => e.user === yLive.user)).toEqual([]);
      // room:* keeps presence without join/leave frames.
      expect(obs.events(room)).toEqual([]);
      expect(yLive.isOpen && obs.isOpen).toBe(true);
      // The survivor swept the dead node's lease.
      expect(await metric(survivor().admin, 'pubgate_presence_leases_expired_total')).toBeGreaterThan(swept0);
    },
    240_000,
  );

  it(
    'a node killed and started again at once under the same id does not keep its previous connections in presence: they leave within the TTL',
    async () => {
      const t = uid();
      const ch = `chat:${t}`;
      const id = `pd-${kind}-again-${t}`;
      const first = await startVictim(id);
      const obs = await n.open(survivor(), { user: `${t}-obs` });
      await obs.subscribe(ch);
      const x = await n.open(first, { user: `${t}-x` });
      await x.subscribe(ch);
      await obs.untilEvent('join', ch, x.user);

      expect(await first.stop('SIGKILL')).toBeNull();
      const second = await startVictim(id);
      // The new process has a connection of its own in the channel (so it works on that channel's presence).
      const q = await n.open(second, { user: `${t}-q` });
      await q.subscribe(ch);
      await obs.untilEvent('join', ch, q.user);

      await obs.untilEvent('leave', ch, x.user, GUARD_MS);
      await untilHttpView(survivor(), ch, expectedView([obs, q]), GUARD_MS);
      await untilHttpView(second, ch, expectedView([obs, q]), GUARD_MS);
      expect(q.isOpen).toBe(true);
    },
    240_000,
  );
});
