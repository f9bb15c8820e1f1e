/**
 * A real Redis Sentinel group for integration tests: a master and one replica
 * (redis-server, or another binary such as valkey-server) and three
 * `redis-sentinel` processes (quorum 2), all on free loopback ports, with the
 * failure detection shortened (down-after 1000 ms, failover-timeout 2000 ms)
 * so that a failover takes a few seconds. Everything announces 127.0.0.1.
 *
 * Waits are for events the Sentinels report (SENTINEL commands), never sleeps:
 * the group is returned once every Sentinel knows the master, the replica and
 * the two other Sentinels, and a failover returns once the Sentinels name the
 * new master and it says role:master.
 */
import { SENTINEL_BIN } from './server-tools.js';
import { freePort } from './ports.js';
import { pollUntil, startRedis, type RedisServer } from './redis.js';

export interface SentinelGroupOptions {
  /** Master group name; default 'pubgate-master'. */
  readonly name?: string;
  /** requirepass of the data nodes (also their masterauth and the Sentinels' auth-pass). */
  readonly password?: string;
  /** requirepass of the Sentinels. */
  readonly sentinelPassword?: string;
  /** The data node executable; default redis-server. */
  readonly binary?: string;
}

export interface SentinelGroup {
  readonly name: string;
  /** The data nodes: [0] starts as master, [1] as its replica. */
  readonly servers: readonly RedisServer[];
  readonly sentinels: readonly RedisServer[];
  /** `127.0.0.1:port` of each Sentinel (PUBGATE_REDIS_SENTINELS, createRedisBroker({ sentinel })). */
  readonly addrs: readonly string[];
  /** Port of the master as a running Sentinel names it (SENTINEL GET-MASTER-ADDR-BY-NAME). */
  masterPort(): Promise<number>;
  /** The data node that is master now. */
  master(): Promise<RedisServer>;
  /** Waits until the replicas acknowledged everything the master wrote so far (replication is asynchronous). */
  untilReplicated(): Promise<void>;
  /**
   * Waits until the Sentinels name a master other than `oldPort`, that node
   * says role:master, and every running Sentinel agrees. Returns its port.
   */
  untilNewMaster(oldPort: number): Promise<number>;
  /** Stops every process and removes their directories. Safe to call twice. */
  stop(): Promise<void>;
}

/** Fields of a SENTINEL MASTER / REPLICAS entry as a map (redis-cli --raw prints name and value on alternate lines). */
function fields(lines: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) m.set(lines[i] ?? '', lines[i + 1] ?? '');
  return m;
}

export async function startSentinelGroup(opts: SentinelGroupOptions = {}): Promise<SentinelGroup> {
  const sentinelBin = SENTINEL_BIN;
  if (!sentinelBin) throw new Error('redis-sentinel not found (see test/helpers/tools.ts)');
  const name = opts.name ?? 'pubgate-master';
  const servers: RedisServer[] = [];
  const sentinels: RedisServer[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all([...sentinels, ...servers].map((s) => s.stop()));
  };
  const dataArgs = [
    '--replica-announce-ip', '127.0.0.1',
    ...(opts.password !== undefined ? ['--masterauth', opts.password] : []),
  ];
  const common = { ...(opts.binary ? { binary: opts.binary } : {}), ...(opts.password !== undefined ? { password: opts.password } : {}) };
  try {
    const master = await startRedis({ ...common, args: dataArgs });
    servers.push(master);
    const replica = await startRedis({ ...common, args: [...dataArgs, '--replicaof', '127.0.0.1', String(master.port)] });
    servers.push(replica);
    await pollUntil(
      async () => (await replica.cli('INFO', 'replication')).join('\n').includes('master_link_status:up'),
      `replica ${replica.port} to sync with master ${master.port}`,
    );

    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      sentinels.push(
        await startRedis({
          port,
          binary: sentinelBin,
          ...(opts.sentinelPassword !== undefined ? { password: opts.sentinelPassword } : {}),
          config: [
            'sentinel resolve-hostnames no',
            'sentinel announce-ip 127.0.0.1',
            `sentinel announce-port ${port}`,
            `sentinel monitor ${name} 127.0.0.1 ${master.port} 2`,
            `sentinel down-after-milliseconds ${name} 1000`,
            `sentinel failover-timeout ${name} 2000`,
            `sentinel parallel-syncs ${name} 1`,
            ...(opts.password !== undefined ? [`sentinel auth-pass ${name} ${opts.password}`] : []),
          ],
        }),
      );
    }

    // Every Sentinel sees the master (not down), the replica, and the two other Sentinels.
    for (const s of sentinels) {
      await pollUntil(async () => {
        const m = fields(await s.cli('SENTINEL', 'MASTER', name));
        const flags = m.get('flags') ?? '';
        return flags === 'master' && m.get('num-slaves') === '1' && m.get('num-other-sentinels') === '2';
      }, `Sentinel ${s.port} to see the master, its replica and two other Sentinels`);
    }

    const running = (): RedisServer[] => sentinels.filter((s) => s.running);
    const masterPort = async (): Promise<number> => {
      const errors: string[] = [];
      for (const s of running()) {
        try {
          const [, port] = await s.cli('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name);
          return Number(port);
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
      throw new Error(`no Sentinel named the master: ${errors.join('; ')}`);
    };
    const group: SentinelGroup = {
      name,
      servers,
      sentinels,
      addrs: sentinels.map((s) => `127.0.0.1:${s.port}`),
      masterPort,
      async master() {
        const port = await masterPort();
        const s = servers.find((x) => x.port === port);
        if (!s) throw new Error(`the Sentinels name an unknown master on port ${port}`);
        return s;
      },
      async untilReplicated() {
        const m = await group.master();
        const info = (await m.cli('INFO', 'replication')).join('\n');
        const target = Number(/master_repl_offset:(\d+)/.exec(info)?.[1]);
        await pollUntil(async () => {
          const now = (await m.cli('INFO', 'replication')).join('\n');
          const acked = [...now.matchAll(/^slave\d+:.*,offset=(\d+),/gm)].map((x) => Number(x[1]));
          return acked.length > 0 && acked.every((o) => o >= target);
        }, `the replicas of ${m.port} to reach replication offset ${target}`);
      },
      async untilNewMaster(oldPort) {
        let promoted = 0;
        await pollUntil(async () => {
          const ports = await Promise.all(running().map(async (s) => Number((await s.cli('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name))[1])));
          const p = ports[0];
          if (p === undefined || p === oldPort || !ports.every((x) => x === p)) return false;
          const node = servers.find((x) => x.port === p);
          if (!node?.running) return false;
          if (!(await node.cli('INFO', 'replication')).join('\n').includes('role:master')) return false;
          promoted = p;
          return true;
        }, `the Sentinels to promote a new master in place of ${oldPort}`, 60_000);
        return promoted;
      },
      stop,
    };
    return group;
  } catch (e) {
    await stop();
    throw e;
  }
}
