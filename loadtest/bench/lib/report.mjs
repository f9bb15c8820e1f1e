// Tables: every run, then medians with min–max per target, ratios
// pubgate/baseline, the limiting side of each figure, and the issue's targets.
import { fmtNum, median, range } from './stats.mjs';

const pct = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a');
const SAT = 0.85;

/**
 * Which side limited a throughput figure. A side is saturated when its
 * process used ≥ 85% of its core(s), or its core(s) were ≥ 95% busy with
 * anything (kernel network work, or other processes on a shared machine).
 */
export function limitedBy(r, rateMode) {
  const sBusy = r.serverCores?.busy ?? r.serverCoreFrac;
  const cBusy = r.clientCores?.busy ?? r.clientCoreFrac;
  const sSat = r.serverCoreFrac >= SAT || sBusy >= 0.95;
  const cSat = r.clientCoreFrac >= SAT || cBusy >= 0.95;
  if (rateMode) return 'fixed publish rate';
  const others = [];
  if (sSat && r.serverCores?.other >= 0.1) others.push(`server core ${pct(r.serverCores.other)} other processes`);
  if (cSat && r.clientCores?.other >= 0.1) others.push(`client core ${pct(r.clientCores.other)} other processes`);
  const note = others.length ? ` (${others.join(', ')})` : '';
  if (sSat && cSat) return `both sides${note}`;
  if (sSat) return `server${note}`;
  if (cSat) return `client${note}`;
  return 'neither side CPU-bound';
}

/** "96% (own 70 irq 6 oth 20)": how busy a side's cores were, and with what. */
function coreCell(split, ownFrac) {
  if (!split) return pct(ownFrac);
  const n = (x) => Math.round(x * 100);
  return `${pct(split.busy)} (own ${n(split.own)} irq ${n(split.irq)} oth ${n(split.other)})`;
}

function table(header, rows) {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => cells.map((c, i) => (i < 2 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
  return [line(header), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}


/** "100%" of the deliveries arrived compressed, or "-" for none. */
const share = (part, whole) => (part > 0 && whole > 0 ? pct(part / whole) : '-');

function runRows(kind, runs, rateMode) {
  if (kind === 'compression' && !rateMode) {
    return {
      header: ['run', 'compression', 'deliveries/s', 'msgs published', 'lost', 'srv µs/delivery', 'frame B', 'wire B/delivery', 'compressed', 'inflate checks', 'client µs/delivery', 'server core', 'client core', 'limited by'],
      rows: runs.map((x) => (x.r.ok ? [
        x.run, x.target, fmtNum(x.r.perSec), fmtNum(x.r.published), `${fmtNum(x.r.lost)}${x.r.closed ? ` (${x.r.closed} closed)` : ''}`,
        fmtNum(x.r.usPerDelivery, 3), fmtNum(x.r.frameBytesPerMsg, 0), fmtNum(x.r.wireBytesPerDelivery, 1), share(x.r.compressed, x.r.deliveries),
        x.r.compressed > 0 ? `${fmtNum(x.r.inflated)} ok, ${fmtNum(x.r.inflateErrors)} bad` : '-',
        fmtNum(x.r.clientUsPerDelivery, 3), coreCell(x.r.serverCores, x.r.serverCoreFrac), coreCell(x.r.clientCores, x.r.clientCoreFrac), limitedBy(x.r, false),
      ] : [x.run, x.target, 'error', x.r.error.split('\n')[0], '', '', '', '', '', '', '', '', '', ''])),
    };
  }
  if (kind === 'connections') {
    return {
      header: ['run', 'target', 'conns', 'failed', 'handshakes/s', 'srv µs/hs', 'RSS before→after MiB', 'KiB/conn', 'KiB heap/conn', 'after GC', 'server core', 'client core', 'limited by'],
      rows: runs.map((x) => (x.r.ok ? [
        x.run, x.target, fmtNum(x.r.connections), fmtNum(x.r.failed), fmtNum(x.r.handshakesPerSec), fmtNum(x.r.usPerHandshake, 1),
        `${fmtNum(x.r.rss0Kb / 1024, 1)}→${fmtNum(x.r.rss1Kb / 1024, 1)}`, fmtNum(x.r.kbPerConn, 2), fmtNum(x.r.heapKbPerConn, 2), x.r.gc ? 'yes' : 'no',
        coreCell(x.r.serverCores, x.r.serverCoreFrac), coreCell(x.r.clientCores, x.r.clientCoreFrac), limitedBy(x.r, false),
      ] : [x.run, x.target, 'error', x.r.error.split('\n')[0], '', '', '', '', '', '', '', '', ''])),
    };
  }
  if (rateMode) {
    return {
      header: ['run', 'target', 'publishes', 'deliveries', 'lost', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'srv µs/delivery', 'server core', 'client core'],
      rows: runs.map((x) => (x.r.ok ? [
        x.run, x.target, fmtNum(x.r.published), fmtNum(x.r.deliveries), fmtNum(x.r.lost),
        fmtNum(x.r.latency.p50, 2), fmtNum(x.r.latency.p90, 2), fmtNum(x.r.latency.p99, 2), fmtNum(x.r.latency.p999, 2), fmtNum(x.r.latency.max, 2),
        fmtNum(x.r.usPerDelivery, 3), coreCell(x.r.serverCores, x.r.serverCoreFrac), coreCell(x.r.clientCores, x.r.clientCoreFrac),
      ] : [x.run, x.target, 'error', x.r.error.split('\n')[0], '', '', '', '', '', '', '', '', ''])),
    };
  }
  return {
    header: ['run', 'target', 'deliveries/s', 'msgs published', 'lost', 'srv µs/delivery', 'server core', 'client core', 'limited by'],
    rows: runs.map((x) => (x.r.ok ? [
      x.run, x.target, fmtNum(x.r.perSec), fmtNum(x.r.published), `${fmtNum(x.r.lost)}${x.r.closed ? ` (${x.r.closed} closed)` : ''}`,
      fmtNum(x.r.usPerDelivery, 3), coreCell(x.r.serverCores, x.r.serverCoreFrac), coreCell(x.r.clientCores, x.r.clientCoreFrac), limitedBy(x.r, false),
    ] : [x.run, x.target, 'error', x.r.error.split('\n')[0], '', '', '', '', ''])),
  };
}

/** The figures summarised per scenario kind: [label, getter, digits, higherIsBetter]. */
function figures(kind, rateMode) {
  if (kind === 'connections') {
    return [
      ['handshakes/s', (r) => r.handshakesPerSec, 0, true],
      ['server µs/handshake', (r) => r.usPerHandshake, 1, false],
      ['server KiB RSS/conn', (r) => r.kbPerConn, 2, false],
      ['server KiB heap/conn', (r) => r.heapKbPerConn, 2, false],
    ];
  }
  if (kind === 'compression' && !rateMode) {
    return [
      ['deliveries/s', (r) => r.perSec, 0, true],
      ['server µs/delivery', (r) => r.usPerDelivery, 3, false],
      ['wire bytes/delivery', (r) => r.wireBytesPerDelivery, 1, false],
      ['client µs/delivery', (r) => r.clientUsPerDelivery, 3, false],
      ['lost', (r) => r.lost, 0, false],
    ];
  }
  if (rateMode) {
    return [
      ['p50 ms', (r) => r.latency.p50, 2, false],
      ['p99 ms', (r) => r.latency.p99, 2, false],
      ['max ms', (r) => r.latency.max, 2, false],
      ['server µs/delivery', (r) => r.usPerDelivery, 3, false],
    ];
  }
  return [
    ['deliveries/s', (r) => r.perSec, 0, true],
    ['server µs/delivery', (r) => r.usPerDelivery, 3, false],
    ['lost', (r) => r.lost, 0, false],
  ];
}

/** A run during which other processes took less than 10% of the server's and of the client's core(s). */
export const isQuiet = (r) => r.ok && (r.serverCores?.other ?? 0) < 0.1 && (r.clientCores?.other ?? 0) < 0.1;

/** `pair` [a, b]: the ratio a ÷ b is given for each figure when both ran (default pubgate ÷ baseline). */
export function summarize(kind, runs, rateMode, pair = ['pubgate', 'baseline']) {
  const [pa, pb] = pair;
  const targets = [...new Set(runs.map((x) => x.target))];
  const ok = (t) => runs.filter((x) => x.target === t && x.r.ok).map((x) => x.r);
  // vs: with the default pair, pubgate ÷ every other target that ran (the peers beside the baseline).
  const out = { targets: {}, ratios: {}, vs: {} };
  const others = pa === 'pubgate' && pb === 'baseline' && targets.includes('pubgate') ? targets.filter((t) => t !== 'pubgate' && t !== 'before') : [];
  for (const [label, get] of figures(kind, rateMode)) {
    for (const t of targets) {
      const v = ok(t).map(get);
      const q = ok(t).filter(isQuiet).map(get);
      out.targets[t] ??= {};
      out.targets[t][label] = {
        median: median(v), min: range(v)[0], max: range(v)[1], n: v.length,
        quiet: { median: median(q), min: range(q)[0], max: range(q)[1], n: q.length },
      };
    }
    if (targets.includes(pa) && targets.includes(pb)) {
      const a = out.targets[pa][label].median;
      const b = out.targets[pb][label].median;
      const perRun = [];
      for (const x of runs.filter((y) => y.target === pa && y.r.ok)) {
        const y = runs.find((z) => z.target === pb && z.run === x.run && z.r.ok);
        if (y) perRun.push(get(x.r) / get(y.r));
      }
      out.ratios[label] = { ofMedians: a / b, perRun };
    }
    for (const t of others) {
      const perRun = [];
      for (const x of runs.filter((y) => y.target === 'pubgate' && y.r.ok)) {
        const y = runs.find((z) => z.target === t && z.run === x.run && z.r.ok);
        if (y) perRun.push(get(x.r) / get(y.r));
      }
      out.vs[t] ??= {};
      out.vs[t][label] = { ofMedians: out.targets.pubgate[label].median / out.targets[t][label].median, perRun };
    }
  }
  return out;
}

export function formatScenario(title, kind, runs, rateMode, pair = ['pubgate', 'baseline']) {
  const { header, rows } = runRows(kind, runs, rateMode);
  const sum = summarize(kind, runs, rateMode, pair);
  const lines = [`\n== ${title}`, table(header, rows), '', 'summary: median [min–max] over the successful runs; "quiet runs only": the runs where other processes used < 10% of each core'];
  for (const [label, , digits] of figures(kind, rateMode)) {
    for (const [t, f] of Object.entries(sum.targets)) {
      const m = f[label];
      if (m.n === 0) continue;
      // A CPU cost per unit also says what one fully used server core could sustain.
      const capacity = /^server µs\//.test(label) && m.median > 0 ? `  → ${fmtNum(1e6 / m.median)}/s per fully used server core` : '';
      lines.push(`  ${t.padEnd(9)} ${label.padEnd(22)} ${fmtNum(m.median, digits).padStart(12)}  [${fmtNum(m.min, digits)}–${fmtNum(m.max, digits)}]  (${m.n} runs)${capacity}`);
      if (m.quiet.n > 0 && m.quiet.n < m.n) {
        lines.push(`  ${''.padEnd(9)} ${'  quiet runs only'.padEnd(22)} ${fmtNum(m.quiet.median, digits).padStart(12)}  [${fmtNum(m.quiet.min, digits)}–${fmtNum(m.quiet.max, digits)}]  (${m.quiet.n} runs with other processes < 10% of each core)`);
      }
    }
    const ratio = sum.ratios[label];
    if (ratio && Number.isFinite(ratio.ofMedians)) {
      lines.push(`  ratio ${pair[0]}/${pair[1]} ${label}: ${fmtNum(ratio.ofMedians, 2)}×  (per run: ${ratio.perRun.map((x) => fmtNum(x, 2)).join(', ')})`);
    }
    for (const [t, byLabel] of Object.entries(sum.vs)) {
      const q = byLabel[label];
      if (t === pair[1] || !q || !Number.isFinite(q.ofMedians)) continue;
      lines.push(`  ratio pubgate/${t} ${label}: ${fmtNum(q.ofMedians, 3)}×  (per run: ${q.perRun.map((x) => fmtNum(x, 3)).join(', ')})`);
    }
  }
  const failures = runs.filter((x) => !x.r.ok);
  for (const f of failures) lines.push(`  run ${f.run} ${f.target} did not run: ${f.r.error.split('\n').join('\n    ')}`);
  for (const x of runs.filter((y) => y.r.ok && y.r.warmupMissing > 0)) {
    lines.push(`  run ${x.run} ${x.target}: ${x.r.warmupMissing} warm-up deliveries had not arrived when counting started (they may be counted as measured)`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.setupRetries)) {
    lines.push(`  run ${x.run} ${x.target}: ${x.r.setupRetries} subscriber connections failed while connecting and were retried: ${JSON.stringify(x.r.setupErrors)}`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.failed)) {
    lines.push(`  run ${x.run} ${x.target}: ${x.r.failed} connections failed: ${JSON.stringify(x.r.errors)}`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.open !== undefined && y.r.open < y.r.connections)) {
    lines.push(`  run ${x.run} ${x.target}: only ${x.r.open} of ${x.r.connections} connections were still open after the idle period`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.memPerConn)) {
    const m = x.r.memPerConn;
    lines.push(`  run ${x.run} ${x.target} memory per connection (KiB, from its metrics): RSS ${fmtNum(x.r.kbPerConn, 2)} = ` +
      `V8 heap committed ${fmtNum(m.heapTotal, 2)} (young generation ${fmtNum(m.newTotal, 2)}; used ${fmtNum(m.heapUsed, 2)}: old ${fmtNum(m.oldUsed, 2)}, new ${fmtNum(m.newUsed, 2)}) ` +
      `+ external ${fmtNum(m.external, 2)} + native/other ${fmtNum(x.r.kbPerConn - m.heapTotal - m.external, 2)}`);
  }
  // socketio: its node and its redis-server, both in the server CPU figures.
  for (const x of runs.filter((y) => y.r.ok && y.target === 'socketio' && y.r.serverProcs?.length > 1 && y.r.deliveries > 0)) {
    lines.push(`  run ${x.run} ${x.target} server CPU by process: ${x.r.serverProcs.map((q) => `${q.name} ${fmtNum((q.cpuSec * 1e6) / x.r.deliveries, 3)} µs/delivery`).join(', ')}`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.pubErrors && Object.keys(y.r.pubErrors).length)) {
    lines.push(`  run ${x.run} ${x.target} publish errors: ${JSON.stringify(x.r.pubErrors)}`);
  }
  const negotiated = [...new Set(runs.filter((y) => y.r.ok && y.r.extensions !== undefined).map((y) => `${y.target}: ${y.r.extensions ? `"${y.r.extensions}"` : 'none'}`))];
  if (kind === 'compression' && negotiated.length) lines.push(`  Sec-WebSocket-Extensions answered: ${negotiated.join('; ')}`);
  for (const x of runs.filter((y) => y.r.ok && y.r.inflated > 0)) {
    lines.push(`  run ${x.run} ${x.target}: ${fmtNum(x.r.inflated)} sampled frames inflated to valid message frames, ` +
      `${fmtNum(x.r.inflatedWire / x.r.inflated, 1)} → ${fmtNum(x.r.inflatedBytes / x.r.inflated, 1)} bytes on average`);
  }
  for (const x of runs.filter((y) => kind === 'compression' && y.r.ok && y.r.clientErrors && Object.keys(y.r.clientErrors).length)) {
    lines.push(`  run ${x.run} ${x.target} client errors: ${JSON.stringify(x.r.clientErrors)}`);
  }
  for (const x of runs.filter((y) => y.r.ok && y.r.closeCodes && Object.keys(y.r.closeCodes).length)) {
    lines.push(`  run ${x.run} ${x.target} close frames received: ${JSON.stringify(x.r.closeCodes)}`);
  }
  return { text: lines.join('\n'), summary: sum };
}

/**
 * The issue's targets, checked against the medians (only for scenarios run with
 * the targets' parameters). When some runs were quiet (other processes < 10% of
 * each core) their median decides, since contention is not the server's doing;
 * the all-runs median is shown beside it.
 */
export function targetChecks(results) {
  const lines = ["\n== targets (checked only for scenarios run with the targets' parameters)"];
  const get = (name) => results.find((r) => r.name === name);
  const check = (entry, ok, what, digits, unit = '') => {
    const useQuiet = entry.quiet.n > 0;
    const v = useQuiet ? entry.quiet.median : entry.median;
    const basis = useQuiet ? `quiet-run median ${fmtNum(v, digits)}${unit} (${entry.quiet.n} runs), all-run median ${fmtNum(entry.median, digits)}${unit}` : `median ${fmtNum(v, digits)}${unit} (no quiet run)`;
    lines.push(`  ${ok(v) ? 'MET   ' : 'MISSED'} ${what}: ${basis}`);
  };
  const f = get('fanout');
  if (f && f.params.subscribers === 2000 && f.summary.targets.pubgate) {
    check(f.summary.targets.pubgate['deliveries/s'], (v) => v >= 600_000, 'fan-out to 2000 subscribers ≥ 600 000 deliveries/s', 0);
    const ratio = f.summary.ratios['deliveries/s']?.ofMedians;
    if (Number.isFinite(ratio)) lines.push(`  ${ratio >= 4 ? 'MET   ' : 'MISSED'} fan-out ≥ 4× the ws baseline in the same run: ${fmtNum(ratio, 2)}× (ratio of medians; per run ${f.summary.ratios['deliveries/s'].perRun.map((x) => fmtNum(x, 1)).join(', ')})`);
    check(f.summary.targets.pubgate['server µs/delivery'], (v) => v <= 1.3, 'server CPU ≤ 1.3 µs per delivery', 3, ' µs');
  }
  const c = get('connections');
  if (c && c.summary.targets.pubgate) {
    check(c.summary.targets.pubgate['server KiB RSS/conn'], (v) => v <= 1.5, `≤ 1.5 KB server RSS per idle authenticated connection at ${c.params.connections}`, 2, ' KiB');
    check(c.summary.targets.pubgate['handshakes/s'], (v) => v >= 7000, '≥ 7 000 authenticated HS256 handshakes/s', 0);
  }
  const l = get('latency');
  if (l && l.params.rate === 50 && l.params.subscribers === 1000 && l.summary.targets.pubgate) {
    check(l.summary.targets.pubgate['p99 ms'], (v) => v <= 15, 'p99 ≤ 15 ms at 50 publishes/s to 1000 subscribers', 2, ' ms');
  }
  return lines.length > 1 ? lines.join('\n') : '';
}
