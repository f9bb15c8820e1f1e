#!/usr/bin/env node
// Summarises a V8 .cpuprofile (node --cpu-prof): the functions with the most
// self time, and the total (inclusive) time of every function from the
// project's own code. Used with `run.mjs --profile`.
//
//   node loadtest/bench/profile-summary.mjs loadtest/bench/profiles/CPU.*.cpuprofile [--top 25]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
if (positionals.length === 0) {
  process.stderr.write('usage: node loadtest/bench/profile-summary.mjs <file.cpuprofile> [--top N]\n');
  process.exit(2);
}

for (const file of positionals) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Sample counts per node, weighted by the time each sample stands for.
  const dt = new Map();
  for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  // Percentages are of the busy time: samples in (idle) are left out.
  let total = 0;
  for (const [id, t] of dt) if (byId.get(id).callFrame.functionName !== '(idle)') total += t;
  const label = (n) => {
    const f = n.callFrame;
    const url = f.url.replace(/^file:\/\/.*?\/(dist|node_modules|loadtest)\//, '$1/');
    return `${f.functionName || '(anonymous)'} ${url ? `${url}:${f.lineNumber + 1}` : ''}`.trim();
  };
  const self = new Map();
  const incl = new Map();
  for (const [id, t] of dt) {
    const n = byId.get(id);
    if (n.callFrame.functionName === '(idle)') continue;
    const key = label(n);
    self.set(key, (self.get(key) ?? 0) + t);
    // Inclusive: once per distinct function on the stack.
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const k = label(byId.get(cur));
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + t);
    }
  }
  const pct = (t) => `${((100 * t) / total).toFixed(1).padStart(5)}%`;
  const top = Number(values.top);
  process.stdout.write(`\n${file}: ${(total / 1e6).toFixed(2)} s busy (idle left out; percentages are of busy time)\n\nself time:\n`);
  for (const [k, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(t)}  ${k}\n`);
  process.stdout.write('\ntotal time (self + callees), project code and its libraries:\n');
  for (const [k, t] of [...incl].filter(([k]) => /dist\/|node_modules\//.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`  ${pct(t)}  ${k}\n`);
  }
}
