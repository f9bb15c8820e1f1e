/**
 * What the dashboard, the alert rules and docs/metrics.md say about metrics is
 * checked against a real scrape: a node on a real redis-server is put through
 * a little of everything (connections, subscriptions, publishes over HTTP and
 * over the socket, a refused handshake, a forbidden frame, a token refresh,
 * API errors, closes), then /metrics is read once.
 *
 * - every pubgate_*, nodejs_* and process_* name the dashboard and the rules
 *   use is exported (histogram _bucket/_sum/_count map to their base), and
 *   every label they select or group by exists on those metrics;
 * - docs/metrics.md lists every pubgate_* metric exported, with its type and
 *   labels, and nothing that is not exported;
 * - no label value carries a channel or user name;
 * - the expressions parse as PromQL (promtool), and the Dockerfile's
 *   HEALTHCHECK command works against a live node.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, refused, token } from '../helpers/client.js';
import { metric, publish, ROOT, startGateway, TEST_API_KEY, type GatewayProcess } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { DEPLOY_DIR, labelNames, loadYaml, metricNames, parseScrape, type Scrape } from '../helpers/deploy-files.js';
import { removeDir, run, shortOutput, tempDir } from '../helpers/proxies.js';
import { pollUntil, startRedis, type RedisServer } from '../helpers/redis.js';
import { findTool, needs } from '../helpers/tools.js';

const CHANNEL = 'chan-observability-7f3a';
const USER = 'user-observability-9c1e';
/** Labels Prometheus adds at scrape time (job, instance) and the histogram bucket label. */
const SCRAPE_LABELS = new Set(['job', 'instance', 'le']);
const PROMTOOL = findTool('promtool');

interface Query {
  readonly where: string;
  readonly expr: string;
}

function dashboardQueries(): Query[] {
  const dash = JSON.parse(readFileSync(path.join(DEPLOY_DIR, 'grafana/dashboards/pubgate.json'), 'utf8')) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; definition?: string }[] };
  };
  const out: Query[] = [];
  for (const p of dash.panels) for (const t of p.targets ?? []) out.push({ where: `dashboard panel "${p.title}"`, expr: t.expr });
  for (const v of dash.templating.list) if (v.definition) out.push({ where: `dashboard variable $${v.name}`, expr: v.definition });
  return out;
}

function ruleQueries(): Query[] {
  const doc = loadYaml(path.join(DEPLOY_DIR, 'prometheus/rules/pubgate.yml')) as { groups: { rules: { alert?: string; record?: string; expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: r.expr })));
}

/** Rows of the metrics tables in docs/metrics.md: | `name` | type | labels | meaning | */
function documented(): Map<string, { type: string; labels: string[] }> {
  const out = new Map<string, { type: string; labels: string[] }>();
  for (const line of readFileSync(path.join(ROOT, 'docs/metrics.md'), 'utf8').split('\n')) {
    const m = /^\| `([a-z0-9_]+)` \| (\w+) \|([^|]*)\|/.exec(line);
    if (!m) continue;
    const labels = [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((x) => x[1]!);
    out.set(m[1]!, { type: m[2]!, labels });
  }
  return out;
}

describe('metrics used by the dashboard, the alert rules and docs/metrics.md', () => {
  let redis: RedisServer;
  let gw: GatewayProcess;
  let text: string;
  let scrape: Scrape;
  /** Families that had at least one sample (so their label names are known). */
  let sampled: Set<string>;

  beforeAll(async () => {
    redis = await startRedis();
    gw = await startGateway({ PUBGATE_REDIS_URL: redis.url, PUBGATE_NODE_ID: 'obs-1' });
    await pollUntil(async () => (await fetch(`${gw.admin}/readyz`)).status === 200, '/readyz 200');

    const jwt = await token({ sub: USER, channels: [CHANNEL], publish: [CHANNEL] });
    const c = await connect(gw.url, { token: jwt });
    expect(await c.request({ type: 'subscribe', id: 1, channel: CHANNEL })).toEqual({ type: 'reply', id: 1 });
    expect((await publish(gw, { channel: CHANNEL, data: 1 })).status).toBe(200);
    await c.next((f) => f.type === 'message');
    expect(await c.request({ type: 'publish', id: 2, channel: CHANNEL, data: 2 })).toEqual({ type: 'reply', id: 2 });
    expect((await c.request({ type: 'subscribe', id: 3, channel: 'not-allowed' })).error).toMatchObject({ code: 'forbidden' });
    expect(await c.request({ type: 'refresh', id: 4, token: await token({ sub: USER, channels: [CHANNEL] }) })).toEqual({ type: 'reply', id: 4 });
    const batch = await fetch(`${gw.http}/v1/publish/batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ channel: CHANNEL, data: 3 }] }),
    });
    expect(batch.status).toBe(200);
    expect((await publish(gw, { channel: CHANNEL, data: 4 }, 'wrong-key')).status).toBe(401);
    expect((await refused(gw.url)).status).toBe(401);
    await c.close();
    // The self-probe round trip is observed once a second.
    await pollUntil(async () => (await metric(gw.admin, 'pubgate_broker_probe_rtt_seconds_count')) > 0, 'a broker probe sample');
    await pollUntil(async () => (await metric(gw.admin, 'pubgate_disconnects_total', { code: '1000' })) === 1, 'the close to be counted');

    text = await (await fetch(`${gw.admin}/metrics`)).text();
    scrape = parseScrape(text);
    sampled = new Set();
    for (const line of text.split('\n')) {
      const name = /^([a-z_:]+)[{ ]/.exec(line)?.[1];
      const fam = name && scrape.samples.get(name);
      if (fam) sampled.add(fam);
    }
  });

  afterAll(async () => {
    await gw?.stop();
    await redis?.stop();
  });

  function check(queries: Query[]): string[] {
    const problems: string[] = [];
    for (const q of queries) {
      const names = metricNames(q.expr);
      const families = new Set<string>();
      for (const n of names) {
        const fam = scrape.samples.get(n);
        if (fam === undefined) problems.push(`${q.where}: ${n} is not exported`);
        else families.add(fam);
      }
      const { selectors, grouping } = labelNames(q.expr);
      const known = new Set(SCRAPE_LABELS);
      for (const f of families) for (const l of scrape.families.get(f)!.labels) known.add(l);
      for (const s of selectors) {
        const fam = scrape.samples.get(s.metric);
        if (fam === undefined || !sampled.has(fam)) continue;
        const labels = new Set([...scrape.families.get(fam)!.labels, ...SCRAPE_LABELS]);
        for (const l of s.labels) if (!labels.has(l)) problems.push(`${q.where}: ${s.metric} has no label ${l}`);
      }
      const allSampled = [...families].every((f) => sampled.has(f));
      if (allSampled) for (const l of grouping) if (!known.has(l)) problems.push(`${q.where}: no metric in it has the label ${l}`);
    }
    return problems;
  }

  it('exports every metric and label the Grafana dashboard queries', () => {
    const queries = dashboardQueries();
    expect(queries.length).toBeGreaterThan(30);
    expect(check(queries)).toEqual([]);
  });

  it('exports every metric and label the alert and recording rules use', () => {
    const queries = ruleQueries();
    expect(queries.length).toBeGreaterThan(10);
    expect(check(queries)).toEqual([]);
  });

  it('documents every pubgate_* metric it exports in docs/metrics.md, with type and labels, and nothing else', () => {
    const docs = documented();
    const exported = [...scrape.families.keys()].filter((n) => n.startsWith('pubgate_')).sort();
    const listed = [...docs.keys()].filter((n) => n.startsWith('pubgate_')).sort();
    expect(listed, 'docs/metrics.md vs the scrape (add a row for a new metric, remove one for a removed metric)').toEqual(exported);
    for (const [name, d] of docs) {
      const fam = scrape.families.get(name);
      expect(fam, `${name} is documented but not exported`).toBeDefined();
      expect(d.type, `${name} type`).toBe(fam!.type);
      if (name.startsWith('pubgate_') && sampled.has(name)) {
        const labels = [...fam!.labels].filter((l) => l !== 'node' && l !== 'le').sort();
        expect(d.labels.filter((l) => l !== 'node').sort(), `${name} labels`).toEqual(labels);
      }
    }
  });

  it('documents the default process and Node.js metrics the dashboard and rules rely on', () => {
    const docs = documented();
    const used = new Set([...dashboardQueries(), ...ruleQueries()].flatMap((q) => metricNames(q.expr)).map((n) => scrape.samples.get(n) ?? n));
    for (const n of used) if (!n.startsWith('pubgate_')) expect(docs.has(n), `${n} is used but not in docs/metrics.md`).toBe(true);
  });

  it('puts no channel or user name in any label value', () => {
    expect(text).not.toContain(CHANNEL);
    expect(text).not.toContain(USER);
    expect(text).not.toContain('not-allowed');
  });

  it('labels every pubgate series with the node id', () => {
    for (const line of text.split('\n')) {
      if (line.startsWith('pubgate_')) expect(line, line).toContain('node="obs-1"');
    }
  });

  it('has dashboard queries that parse as PromQL (promtool)', needs('promtool'), () => {
    const dir = tempDir('pubgate-promql-');
    try {
      const rules = dashboardQueries()
        .filter((q) => !q.expr.startsWith('label_values('))
        .map((q, i) => ({
          record: `dashboard:query_${i}`,
          expr: q.expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', 'pubgate').replaceAll('$node', '.*'),
        }));
      const file = path.join(dir, 'dashboard.yml');
      writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      const out = run(PROMTOOL!, ['check', 'rules', file]);
      expect(out.code, shortOutput(out)).toBe(0);
    } finally {
      removeDir(dir);
    }
  });

  it('runs the Dockerfile HEALTHCHECK command: healthy against the node, unhealthy without one', async () => {
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const cmd = JSON.parse(/HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])/.exec(dockerfile)![1]!) as string[];
    expect(cmd[0]).toBe('node');
    const runCheck = (adminPort: number): number | null =>
      spawnSync(process.execPath, cmd.slice(1), { env: { ...process.env, PUBGATE_ADMIN_PORT: String(adminPort) }, timeout: 10_000 }).status;
    expect(runCheck(gw.adminPort)).toBe(0);
    expect(runCheck(await freePort())).toBe(1);
  });
});
