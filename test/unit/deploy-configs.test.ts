/**
 * Structural checks of deploy/ that need no external tool: every YAML and JSON
 * file parses; the Kubernetes manifests, the compose stack, the Grafana
 * provisioning and the Dockerfile fit together and agree with pubgate's
 * settings (known PUBGATE_* names only, probes on the admin port, grace period
 * longer than the drain); the docs name every shipped file and every runbook
 * anchor the alerts point to exists.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SETTINGS, envName } from '../../src/config.js';
import {
  DEFAULT_DRAIN_SECONDS, DEFAULT_PING_INTERVAL_SEC, DEPLOY_DIR, arr, filesUnder, labelNames, loadYaml, loadYamlDocs, metricNames, obj,
  type Json,
} from '../helpers/deploy-files.js';
import { ROOT } from '../helpers/gateway.js';

const KNOWN_ENV = new Set([...SETTINGS.map((s) => envName(s.key)), 'PUBGATE_CONFIG']);
const yamlFiles = filesUnder(DEPLOY_DIR, ['.yml', '.yaml']);
const rel = (f: string): string => path.relative(ROOT, f);
const read = (f: string): string => readFileSync(path.join(ROOT, f), 'utf8');

type Doc = Record<string, Json>;
const get = (v: Json | undefined, ...keys: (string | number)[]): Json | undefined => {
  let cur: Json | undefined = v;
  for (const k of keys) {
    if (cur === null || cur === undefined || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, Json>)[k];
  }
  return cur;
};

/** GitHub's heading anchor: lower case, punctuation removed, spaces to dashes. */
function slug(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
}

function anchors(markdown: string): Set<string> {
  const out = new Set<string>();
  let inCode = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) inCode = !inCode;
    const m = !inCode && /^#{1,6} (.+)$/.exec(line);
    if (!m) continue;
    // A repeated heading gets -1, -2, ... as on GitHub.
    const base = slug(m[1]!);
    let a = base;
    for (let i = 1; out.has(a); i++) a = `${base}-${i}`;
    out.add(a);
  }
  return out;
}

describe('deploy/ YAML and JSON files', () => {
  it('finds the YAML files', () => {
    expect(yamlFiles.length).toBeGreaterThanOrEqual(15);
  });

  for (const f of yamlFiles) {
    it(`${rel(f)} parses`, () => {
      expect(loadYamlDocs(f).length).toBeGreaterThan(0);
    });
  }

  for (const f of filesUnder(DEPLOY_DIR, ['.json'])) {
    it(`${rel(f)} parses`, () => {
      expect(() => JSON.parse(readFileSync(f, 'utf8')) as unknown).not.toThrow();
    });
  }
});

describe('deploy/kubernetes', () => {
  const dir = path.join(DEPLOY_DIR, 'kubernetes');
  const byKind = new Map<string, Doc>();
  for (const f of filesUnder(dir, ['.yaml'])) {
    for (const d of loadYamlDocs(f)) {
      const doc = obj(d, rel(f));
      if (typeof doc.kind === 'string' && doc.kind !== 'Kustomization') byKind.set(doc.kind, doc);
    }
  }
  const deployment = byKind.get('Deployment')!;
  const podSpec = get(deployment, 'spec', 'template', 'spec') as Doc;
  const container = arr(get(podSpec, 'containers'), 'containers')[0] as Doc;
  const env = new Map(arr(container.env, 'env').map((e) => [(e as Doc).name as string, e as Doc]));
  const ports = new Map(arr(container.ports, 'ports').map((p) => [(p as Doc).name as string, (p as Doc).containerPort as number]));
  const podLabels = obj(get(deployment, 'spec', 'template', 'metadata', 'labels'), 'pod labels');
  const selects = (selector: Json | undefined): boolean =>
    Object.entries(obj(selector, 'selector')).every(([k, v]) => podLabels[k] === v);

  it('has the objects the issue asks for, each with apiVersion, kind and name', () => {
    for (const kind of ['Namespace', 'Deployment', 'Service', 'Ingress', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'ServiceMonitor', 'Secret']) {
      const d = byKind.get(kind);
      expect(d, kind).toBeDefined();
      expect(typeof d!.apiVersion, kind).toBe('string');
      expect(typeof get(d, 'metadata', 'name'), kind).toBe('string');
    }
  });

  it('kustomization lists existing files (and not the example Secret)', () => {
    const k = obj(loadYaml(path.join(dir, 'kustomization.yaml')), 'kustomization');
    const resources = arr(k.resources, 'resources') as string[];
    for (const r of resources) expect(existsSync(path.join(dir, r)), r).toBe(true);
    expect(resources).not.toContain('secret.example.yaml');
  });

  it('probes readiness on /readyz and liveness on /healthz on the admin port 9091', () => {
    expect(ports.get('admin')).toBe(9091);
    expect(ports.get('http')).toBe(8080);
    expect(get(container, 'readinessProbe', 'httpGet', 'path')).toBe('/readyz');
    expect(get(container, 'readinessProbe', 'httpGet', 'port')).toBe('admin');
    expect(get(container, 'livenessProbe', 'httpGet', 'path')).toBe('/healthz');
    expect(get(container, 'livenessProbe', 'httpGet', 'port')).toBe('admin');
  });

  it('gives the drain time to finish: grace period > preStop + PUBGATE_DRAIN_SECONDS + 4 s for in-flight publishes', () => {
    const drain = Number(get(env.get('PUBGATE_DRAIN_SECONDS'), 'value') ?? DEFAULT_DRAIN_SECONDS);
    const preStop = arr(get(container, 'lifecycle', 'preStop', 'exec', 'command'), 'preStop command');
    expect(preStop[0]).toBe('sleep');
    const sleep = Number(preStop[1]);
    const grace = podSpec.terminationGracePeriodSeconds as number;
    expect(grace).toBeGreaterThan(drain + 5);
    expect(grace).toBeGreaterThan(sleep + drain + 4);
    expect(get(deployment, 'spec', 'strategy', 'rollingUpdate', 'maxUnavailable')).toBe(0);
  });

  it('requests resources and runs as a non-root user with a read-only root filesystem', () => {
    expect(get(container, 'resources', 'requests', 'cpu')).toBeDefined();
    expect(get(container, 'resources', 'requests', 'memory')).toBeDefined();
    expect(get(podSpec, 'securityContext', 'runAsNonRoot')).toBe(true);
    expect(get(podSpec, 'securityContext', 'runAsUser')).toBe(1000);
    expect(get(container, 'securityContext', 'readOnlyRootFilesystem')).toBe(true);
  });

  it('sets only PUBGATE_* variables pubgate knows (an unknown one stops the process)', () => {
    for (const name of env.keys()) if (name.startsWith('PUBGATE_')) expect(KNOWN_ENV.has(name), name).toBe(true);
    expect(get(env.get('PUBGATE_NODE_ID'), 'valueFrom', 'fieldRef', 'fieldPath')).toBe('metadata.name');
    expect(get(env.get('PUBGATE_REDIS_URL'), 'value')).toMatch(/^redis:\/\/:\$\(REDIS_PASSWORD\)@pubgate-redis-master:6379$/);
  });

  it('wires Service, Ingress, HPA, PDB and ServiceMonitor to the Deployment', () => {
    const svc = byKind.get('Service')!;
    expect(selects(get(svc, 'spec', 'selector'))).toBe(true);
    const svcPorts = arr(get(svc, 'spec', 'ports'), 'service ports') as Doc[];
    for (const p of svcPorts) expect(ports.has(p.targetPort as string), String(p.targetPort)).toBe(true);
    const svcName = get(svc, 'metadata', 'name');

    const ing = byKind.get('Ingress')!;
    const paths = arr(get(ing, 'spec', 'rules', 0, 'http', 'paths'), 'ingress paths') as Doc[];
    expect(get(ing, 'spec', 'rules', 0, 'host')).toMatch(/^ws\./);
    // /app: Pusher clients' /app/{key} (a Prefix: the key is in the path). The
    // Pusher HTTP API /apps/ is for backends, like /v1/: not on this Ingress.
    expect(paths.map((p) => [p.path, p.pathType])).toEqual([['/ws', 'Exact'], ['/sse', 'Exact'], ['/app', 'Prefix']]);
    for (const p of paths) {
      expect(get(p, 'backend', 'service', 'name')).toBe(svcName);
      expect(get(p, 'backend', 'service', 'port', 'name')).toBe('http');
    }
    const ann = obj(get(ing, 'metadata', 'annotations'), 'annotations');
    // Server-Sent Events on /sse: passed on event by event.
    expect(ann['nginx.ingress.kubernetes.io/proxy-buffering']).toBe('off');
    expect(Number(ann['nginx.ingress.kubernetes.io/proxy-read-timeout'])).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
    expect(Number(ann['nginx.ingress.kubernetes.io/proxy-send-timeout'])).toBeGreaterThan(2 * DEFAULT_PING_INTERVAL_SEC);
    expect(get(ing, 'spec', 'tls', 0, 'hosts', 0)).toBe(get(ing, 'spec', 'rules', 0, 'host'));

    const hpa = byKind.get('HorizontalPodAutoscaler')!;
    expect(get(hpa, 'spec', 'scaleTargetRef', 'kind')).toBe('Deployment');
    expect(get(hpa, 'spec', 'scaleTargetRef', 'name')).toBe(get(deployment, 'metadata', 'name'));
    expect(get(hpa, 'spec', 'minReplicas')).toBeGreaterThanOrEqual(2);

    expect(selects(get(byKind.get('PodDisruptionBudget'), 'spec', 'selector', 'matchLabels'))).toBe(true);

    const sm = byKind.get('ServiceMonitor')!;
    const svcLabels = obj(get(svc, 'metadata', 'labels'), 'service labels');
    for (const [k, v] of Object.entries(obj(get(sm, 'spec', 'selector', 'matchLabels'), 'sm selector'))) expect(svcLabels[k]).toBe(v);
    expect(svcPorts.map((p) => p.name)).toContain(get(sm, 'spec', 'endpoints', 0, 'port'));
    expect(get(sm, 'spec', 'endpoints', 0, 'path')).toBe('/metrics');
  });

  it('documents Redis as a bitnami/redis release whose Service and Secret the Deployment uses', () => {
    const values = obj(loadYaml(path.join(dir, 'redis-values.yaml')), 'redis values');
    expect(values.architecture).toBe('standalone');
    const text = readFileSync(path.join(dir, 'redis-values.yaml'), 'utf8');
    expect(text).toMatch(/helm install pubgate-redis \S*bitnamicharts\/redis/);
    expect(get(env.get('REDIS_PASSWORD'), 'valueFrom', 'secretKeyRef', 'name')).toBe('pubgate-redis');
  });
});

describe('deploy/compose', () => {
  const dir = path.join(DEPLOY_DIR, 'compose');
  const compose = obj(loadYaml(path.join(dir, 'docker-compose.yml')), 'compose');
  const services = obj(compose.services, 'services');
  const gateways = ['gw1', 'gw2', 'gw3'];

  it('runs nginx, three gateways on Redis, Prometheus and Grafana', () => {
    for (const s of [...gateways, 'redis', 'nginx', 'prometheus', 'grafana']) expect(services[s], s).toBeDefined();
  });

  it('configures every gateway with Redis, its own node id and known PUBGATE_* variables only', () => {
    for (const g of gateways) {
      const env = obj(get(services[g], 'environment'), `${g} environment`);
      expect(env.PUBGATE_REDIS_URL).toBe('redis://redis:6379');
      expect(env.PUBGATE_NODE_ID).toBe(g);
      for (const k of Object.keys(env)) expect(KNOWN_ENV.has(k), k).toBe(true);
      const drain = Number(env.PUBGATE_DRAIN_SECONDS ?? DEFAULT_DRAIN_SECONDS);
      expect(Number(String(get(services[g], 'stop_grace_period')).replace(/s$/, ''))).toBeGreaterThan(drain + 4);
      expect(get(services[g], 'build', 'context')).toBe('../..');
    }
  });

  it('trusts exactly nginx\'s fixed address for X-Forwarded-For', () => {
    const ip = get(services.nginx, 'networks', 'pubgate', 'ipv4_address');
    for (const g of gateways) expect(get(services[g], 'environment', 'PUBGATE_TRUSTED_PROXIES')).toBe(`${String(ip)}/32`);
  });

  it('mounts files that exist, and routes nginx and Prometheus to the gateway services', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of (get(s, 'volumes') as string[] | undefined) ?? []) {
        const host = v.split(':')[0]!;
        expect(existsSync(path.join(dir, host)), `${name}: ${host}`).toBe(true);
      }
    }
    const nginx = readFileSync(path.join(dir, 'nginx-pubgate.conf'), 'utf8');
    expect([...nginx.matchAll(/server (gw\d):8080/g)].map((m) => m[1])).toEqual(gateways);
    expect(nginx).toMatch(/server_name ws\.localhost;/);
    expect(nginx).toMatch(/server_name api\.localhost;/);
    const prom = obj(loadYaml(path.join(DEPLOY_DIR, 'prometheus/prometheus.yml')), 'prometheus.yml');
    const job = (arr(prom.scrape_configs, 'scrape_configs') as Doc[]).find((j) => j.job_name === 'pubgate');
    expect(get(job, 'static_configs', 0, 'targets')).toEqual(gateways.map((g) => `${g}:9091`));
  });

  it('provisions Grafana with the Prometheus datasource and the dashboard directory it mounts', () => {
    const ds = obj(loadYaml(path.join(DEPLOY_DIR, 'grafana/provisioning/datasources/prometheus.yml')), 'datasources');
    expect(get(ds, 'datasources', 0, 'type')).toBe('prometheus');
    expect(get(ds, 'datasources', 0, 'url')).toBe('http://prometheus:9090');
    const dashboards = obj(loadYaml(path.join(DEPLOY_DIR, 'grafana/provisioning/dashboards/pubgate.yml')), 'dashboards');
    const mountPath = get(dashboards, 'providers', 0, 'options', 'path');
    const volumes = get(services.grafana, 'volumes') as string[];
    expect(volumes).toContain(`../grafana/dashboards:${String(mountPath)}:ro`);
    expect(volumes).toContain('../grafana/provisioning:/etc/grafana/provisioning:ro');
  });
});

describe('deploy/grafana dashboard', () => {
  const dash = obj(JSON.parse(readFileSync(path.join(DEPLOY_DIR, 'grafana/dashboards/pubgate.json'), 'utf8')), 'dashboard');
  const panels = arr(dash.panels, 'panels') as Doc[];
  const vars = (arr(get(dash, 'templating', 'list'), 'templating') as Doc[]).map((v) => v.name as string);

  it('has a stable uid, unique panel ids and non-overlapping panels 24 columns wide at most', () => {
    expect(dash.uid).toBe('pubgate');
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of panels) {
      const g = obj(p.gridPos, `gridPos of ${String(p.title)}`) as Record<string, number>;
      expect(g.x! + g.w!, String(p.title)).toBeLessThanOrEqual(24);
      for (let x = g.x!; x < g.x! + g.w!; x++) {
        for (let y = g.y!; y < g.y! + g.h!; y++) {
          expect(cells.has(`${x},${y}`), `${String(p.title)} overlaps at ${x},${y}`).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  it('queries through the datasource variable and uses only variables it defines', () => {
    expect(vars).toEqual(expect.arrayContaining(['datasource', 'job', 'node']));
    for (const p of panels.filter((x) => x.type !== 'row')) {
      expect(get(p, 'datasource', 'uid'), String(p.title)).toBe('${datasource}');
      const targets = arr(p.targets, `targets of ${String(p.title)}`) as Doc[];
      expect(targets.length).toBeGreaterThan(0);
      for (const t of targets) {
        for (const m of String(t.expr).matchAll(/\$(\w+)/g)) {
          if (m[1]!.startsWith('__')) continue;
          expect(vars, `${String(p.title)} uses $${m[1]}`).toContain(m[1]);
        }
      }
    }
  });

  it('has the views the issue asks for', () => {
    const exprs = panels.flatMap((p) => ((p.targets as Doc[] | undefined) ?? []).map((t) => String(t.expr))).join('\n');
    for (const needle of [
      'pubgate_connections', 'pubgate_handshakes_total{job="$job",node=~"$node",result="rejected"}', 'pubgate_messages_published_total',
      'pubgate_messages_delivered_total', 'pubgate_messages_dropped_total', 'pubgate_slow_consumer_closes_total',
      'histogram_quantile(0.99, sum by (le) (rate(pubgate_publish_duration_seconds_bucket', 'pubgate_broker_up',
      'pubgate_broker_probe_rtt_seconds_bucket', 'nodejs_eventloop_lag_p99_seconds',
    ]) {
      expect(exprs, needle).toContain(needle);
    }
  });

  /** The panels of the row titled `title`, each checked to sit between that row and the next one. */
  function rowPanels(title: string): Doc[] {
    const start = panels.findIndex((p) => p.type === 'row' && p.title === title);
    expect(start, `a row titled ${title}`).toBeGreaterThan(-1);
    const next = panels.findIndex((p, i) => i > start && p.type === 'row');
    const row = panels.slice(start + 1, next === -1 ? undefined : next);
    const top = (get(panels[start], 'gridPos', 'y') as number) + 1;
    const bottom = next === -1 ? Infinity : (get(panels[next], 'gridPos', 'y') as number);
    for (const p of row) {
      const g = obj(p.gridPos, String(p.title)) as Record<string, number>;
      expect(g.y!, `${String(p.title)} sits under the ${title} row`).toBeGreaterThanOrEqual(top);
      expect(g.y! + g.h!, `${String(p.title)} ends above the next row`).toBeLessThanOrEqual(bottom);
    }
    return row;
  }
  const exprsOf = (row: Doc[]): string => row.flatMap((p) => ((p.targets as Doc[] | undefined) ?? []).map((t) => String(t.expr))).join('\n');

  it('has a Presence row: entries per node, operations by op and result, latency by op, join/leave frames, expired leases', () => {
    const exprs = exprsOf(rowPanels('Presence'));
    for (const needle of [
      'sum by (node) (pubgate_presence_entries{job="$job",node=~"$node"})',
      'sum by (op, result) (rate(pubgate_presence_operations_total{job="$job",node=~"$node"}[$__rate_interval]))',
      'histogram_quantile(0.5, sum by (op, le) (rate(pubgate_presence_operation_seconds_bucket{job="$job",node=~"$node"}',
      'histogram_quantile(0.99, sum by (op, le) (rate(pubgate_presence_operation_seconds_bucket{job="$job",node=~"$node"}',
      'sum by (type) (rate(pubgate_presence_frames_total{job="$job",node=~"$node"}',
      'pubgate_presence_leases_expired_total{job="$job",node=~"$node"}',
      'pubgate_presence_entries_expired_total{job="$job",node=~"$node"}',
      'pubgate_api_requests_total{job="$job",node=~"$node",endpoint=~"presence|presence_stats"}',
    ]) {
      expect(exprs, needle).toContain(needle);
    }
  });

  it('has a Webhooks row: the queue, events by name and result, requests by result, delivery latency', () => {
    const exprs = exprsOf(rowPanels('Webhooks'));
    const sel = 'job="$job",node=~"$node"';
    for (const needle of [
      `max(pubgate_webhook_queue_events{${sel}})`,
      `sum by (name, result) (rate(pubgate_webhook_events_total{${sel}}[$__rate_interval]))`,
      `sum by (result) (rate(pubgate_webhook_requests_total{${sel}}[$__rate_interval]))`,
      `histogram_quantile(0.5, sum by (le) (rate(pubgate_webhook_delivery_seconds_bucket{${sel}}`,
      `histogram_quantile(0.99, sum by (le) (rate(pubgate_webhook_delivery_seconds_bucket{${sel}}`,
    ]) {
      expect(exprs, needle).toContain(needle);
    }
  });

  it('has a Backend access row: proxy calls, latency and in flight vs the bound; requests to every node, pending, cluster nodes; server-side subscriptions', () => {
    const row = rowPanels('Backend access');
    const exprs = exprsOf(row);
    const sel = 'job="$job",node=~"$node"';
    for (const needle of [
      `sum by (proxy, result) (rate(pubgate_proxy_requests_total{${sel}}[$__rate_interval]))`,
      `histogram_quantile(0.5, sum by (proxy, le) (rate(pubgate_proxy_duration_seconds_bucket{${sel}}`,
      `histogram_quantile(0.99, sum by (proxy, le) (rate(pubgate_proxy_duration_seconds_bucket{${sel}}`,
      `sum by (op, result) (rate(pubgate_control_requests_total{${sel}}[$__rate_interval]))`,
      `histogram_quantile(0.5, sum by (op, le) (rate(pubgate_control_request_duration_seconds_bucket{${sel}}`,
      `histogram_quantile(0.99, sum by (op, le) (rate(pubgate_control_request_duration_seconds_bucket{${sel}}`,
      `pubgate_control_requests_pending{${sel}}`,
      `pubgate_control_acks_total{${sel}}`,
      `pubgate_control_applied_total{${sel}}`,
      `sum by (node) (pubgate_cluster_nodes{${sel}})`,
      `sum by (source, result) (rate(pubgate_server_subscriptions_total{${sel}}[$__rate_interval]))`,
      `pubgate_api_requests_total{${sel},endpoint=~"subscribe|unsubscribe"}`,
    ]) {
      expect(exprs, needle).toContain(needle);
    }
    // The bound is shared by both proxies: the panel sums them per node and draws the bound beside.
    const inFlight = row.find((p) => exprsOf([p]).includes('pubgate_proxy_in_flight'));
    expect(exprsOf([inFlight!]).split('\n')).toEqual([`sum by (node) (pubgate_proxy_in_flight{${sel}})`, 'pubgate:proxy_concurrency_limit']);
  });
});

/** Rows of the metrics tables in docs/metrics.md: | `name` | type | labels | meaning | */
function documentedMetrics(): Map<string, { type: string; labels: string[] }> {
  const out = new Map<string, { type: string; labels: string[] }>();
  for (const line of read('docs/metrics.md').split('\n')) {
    const m = /^\| `([a-z0-9_]+)` \| (\w+) \|([^|]*)\|/.exec(line);
    if (m) out.set(m[1]!, { type: m[2]!, labels: [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((x) => x[1]!) });
  }
  return out;
}

describe('metrics the dashboard and the alert rules use vs docs/metrics.md', () => {
  // Checked here without a running node, so that labels of metrics a test node
  // never samples (presence operations, expired leases, ...) are checked too;
  // test/integration/observability.test.ts checks docs/metrics.md against a real scrape.
  const docs = documentedMetrics();
  /** Labels on every series: the node id, and what Prometheus adds at scrape time. */
  const everywhere = ['node', 'job', 'instance'];
  const dash = obj(JSON.parse(readFileSync(path.join(DEPLOY_DIR, 'grafana/dashboards/pubgate.json'), 'utf8')), 'dashboard');
  const rules = obj(loadYaml(path.join(DEPLOY_DIR, 'prometheus/rules/pubgate.yml')), 'rules');
  const queries: { where: string; expr: string }[] = [
    ...(arr(dash.panels, 'panels') as Doc[]).flatMap((p) =>
      ((p.targets as Doc[] | undefined) ?? []).map((t) => ({ where: `panel "${String(p.title)}"`, expr: String(t.expr) }))),
    ...(arr(rules.groups, 'groups') as Doc[]).flatMap((g) =>
      (arr(g.rules, 'rules') as Doc[]).map((r) => ({ where: `rule ${String(r.alert ?? r.record)}`, expr: String(r.expr) }))),
  ];

  /** The documented metric a sample name belongs to (histogram suffixes map to their base), and the labels it may carry. */
  function family(name: string): { name: string; labels: Set<string> } | undefined {
    const d = docs.get(name);
    if (d) return { name, labels: new Set([...d.labels, ...everywhere]) };
    const base = /^(.+)_(bucket|sum|count)$/.exec(name);
    const h = base && docs.get(base[1]!);
    if (!h || h.type !== 'histogram') return undefined;
    return { name: base[1]!, labels: new Set([...h.labels, ...everywhere, ...(base[2] === 'bucket' ? ['le'] : [])]) };
  }

  it('keeps the proxy bound recording rule equal to PUBGATE_PROXY_CONCURRENCY (the Deployment\'s, or the default)', () => {
    const rule = (arr(rules.groups, 'groups') as Doc[]).flatMap((g) => arr(g.rules, 'rules') as Doc[])
      .find((r) => r.record === 'pubgate:proxy_concurrency_limit');
    const bound = /^vector\((\d+)\)$/.exec(String(rule?.expr))?.[1];
    const deployment = readFileSync(path.join(DEPLOY_DIR, 'kubernetes/deployment.yaml'), 'utf8');
    const env = /name: PUBGATE_PROXY_CONCURRENCY\s+value: "(\d+)"/.exec(deployment)?.[1];
    expect(bound).toBe(env ?? String(SETTINGS.find((x) => x.key === 'proxyConcurrency')!.def));
  });

  it('reads the presence metrics from docs/metrics.md', () => {
    expect(docs.get('pubgate_presence_operations_total')?.labels.sort()).toEqual(['op', 'result']);
    expect(docs.get('pubgate_presence_operation_seconds')).toEqual({ type: 'histogram', labels: ['op'] });
  });

  it('uses only metrics docs/metrics.md lists, with only the labels it lists for them', () => {
    expect(queries.length).toBeGreaterThan(40);
    const problems: string[] = [];
    for (const q of queries) {
      const fams = metricNames(q.expr).map((n) => {
        const f = family(n);
        if (!f) problems.push(`${q.where}: ${n} is not in docs/metrics.md`);
        return f;
      });
      const { selectors, grouping } = labelNames(q.expr);
      for (const sel of selectors) {
        const f = family(sel.metric);
        if (f) for (const l of sel.labels) if (!f.labels.has(l)) problems.push(`${q.where}: ${sel.metric} has no label ${l} in docs/metrics.md`);
      }
      const known = new Set(fams.flatMap((f) => (f ? [...f.labels] : [])));
      if (fams.length > 0 && fams.every((f) => f)) {
        for (const l of grouping) if (!known.has(l)) problems.push(`${q.where}: groups by ${l}, which no metric in it has`);
      }
    }
    expect(problems).toEqual([]);
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  const lines = text.split('\n').filter((l) => !l.trim().startsWith('#'));
  const fromLines = lines.filter((l) => l.startsWith('FROM '));

  it('builds in a separate stage and runs in a slim Debian stage as a numeric non-root user', () => {
    expect(fromLines.length).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/ARG NODE_IMAGE=node:\d+-bookworm-slim/);
    const finalStage = text.slice(text.lastIndexOf('\nFROM '));
    const user = /^USER (\S+)$/m.exec(finalStage)?.[1];
    expect(user).toMatch(/^[1-9]\d*(:\d+)?$/);
    expect(finalStage).toMatch(/^EXPOSE 8080 9091$/m);
    expect(finalStage).toMatch(/^HEALTHCHECK .*\n.*\/healthz/m);
    expect(finalStage).toMatch(/^CMD \["node", "dist\/main\.js"\]$/m);
    expect(finalStage).not.toMatch(/--chown/);
  });

  it('keeps secrets and local build output out of the build context', () => {
    const ignore = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', 'dist', '.git', '.env', '*.pem', '*.key']) expect(ignore, p).toContain(p);
  });
});

describe('docs', () => {
  it('docs/deploy.md names every shipped deploy file', () => {
    const doc = read('docs/deploy.md');
    const shipped = filesUnder(DEPLOY_DIR, ['.conf', '.cfg', '.yml', '.yaml', '.json']).map((f) => path.relative(ROOT, f));
    for (const f of shipped) expect(doc.includes(f), `${f} is not mentioned in docs/deploy.md`).toBe(true);
  });

  it('every runbook link in the alert rules points to a heading of docs/troubleshooting.md or docs/metrics.md', () => {
    const rules = read('deploy/prometheus/rules/pubgate.yml');
    const links = [...rules.matchAll(/runbook: "(docs\/(?:troubleshooting|metrics)\.md)#([^"]+)"/g)].map((m) => ({ file: m[1]!, anchor: m[2]! }));
    expect(links.length, 'every alert has a runbook in one of them').toBe([...rules.matchAll(/- alert: /g)].length);
    expect(links.filter((l) => l.file === 'docs/troubleshooting.md').length).toBeGreaterThan(5);
    for (const l of links) {
      const headings = anchors(read(l.file));
      expect(headings.has(l.anchor), `${l.file}#${l.anchor} (have: ${[...headings].join(', ')})`).toBe(true);
    }
  });

  it('in-page links of the docs point to headings that exist', () => {
    for (const f of ['docs/deploy.md', 'docs/troubleshooting.md', 'docs/metrics.md', 'docs/webhooks.md', 'docs/pusher.md']) {
      const text = read(f);
      const headings = anchors(text);
      for (const m of text.matchAll(/\]\(#([^)]+)\)/g)) expect(headings.has(m[1]!), `${f}: #${m[1]}`).toBe(true);
    }
  });

  it('docs link to docs that exist', () => {
    for (const f of ['docs/deploy.md', 'docs/troubleshooting.md', 'docs/metrics.md', 'docs/webhooks.md', 'docs/pusher.md']) {
      for (const m of read(f).matchAll(/\]\(([^)#]+\.md)(?:#([^)]*))?\)/g)) {
        const target = path.join(path.dirname(path.join(ROOT, f)), m[1]!);
        expect(existsSync(target), `${f} links to ${m[1]}`).toBe(true);
        if (m[2]) expect(anchors(readFileSync(target, 'utf8')).has(m[2]), `${f} links to ${m[1]}#${m[2]}`).toBe(true);
      }
    }
  });
});
