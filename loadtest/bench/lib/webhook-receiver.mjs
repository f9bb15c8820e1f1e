// The webhook scenarios' receiver: an HTTP server on 127.0.0.1 that answers
// every POST 200 at once, run as a child process of the runner (forked, so on
// the client CPUs) so that its CPU is its own. It reads every body (JSON),
// verifies the signature of one request in VERIFY_EVERY with the Standard
// Webhooks reference implementation (`standardwebhooks`: real work, and a
// check that what is measured is what a receiver accepts), and tallies, since
// the last `mark`:
//
//   requests, events (by name), duplicates (an event id seen twice), events
//   per request (a histogram 1…100), the lag of each event (its receipt,
//   Date.now(), minus its time_ms: both on this machine's clock; a histogram
//   of 1 ms buckets up to 120 s), the first and last receipt (ms, this
//   process's Date.now()), signatures checked and refused, requests it could
//   not read.
//
// It answers `stats` (since the last mark; `reset` starts a new tally) over IPC.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { Webhook } from 'standardwebhooks';

/** The bench signing secret (Standard Webhooks form: whsec_ + base64 of 32 bytes). */
export const BENCH_WEBHOOK_SECRET = `whsec_${Buffer.from('pubgate-bench-webhook-key-0123456789').toString('base64')}`;
/** One request in this many has its signature verified. */
export const VERIFY_EVERY = 10;
const LAG_BUCKETS = 120_000;
const MAX_BODY = 1024 * 1024;

/** A fresh tally (pure). */
export function newTally() {
  return {
    requests: 0,
    events: 0,
    byName: {},
    duplicates: 0,
    sizes: new Uint32Array(101),
    lag: new Uint32Array(LAG_BUCKETS + 1),
    lagMax: 0,
    first: NaN,
    last: NaN,
    verified: 0,
    refused: 0,
    unreadable: 0,
    ids: new Set(),
  };
}

/**
 * Adds one request's body to the tally (pure but for the tally): `nowMs` is
 * its receipt (Date.now()). Answers false when the body is not a batch of
 * events (counted as unreadable).
 */
export function tallyBody(t, body, nowMs) {
  let events;
  try {
    events = JSON.parse(body).events;
  } catch {
    events = undefined;
  }
  if (!Array.isArray(events)) {
    t.unreadable++;
    return false;
  }
  t.requests++;
  t.sizes[Math.min(100, events.length)]++;
  if (Number.isNaN(t.first)) t.first = nowMs;
  t.last = nowMs;
  for (const e of events) {
    t.events++;
    t.byName[e.name] = (t.byName[e.name] ?? 0) + 1;
    // Bounded by the events of one block (the runner resets between blocks).
    if (t.ids.has(e.id)) t.duplicates++;
    else t.ids.add(e.id);
    const lag = Math.max(0, nowMs - e.time_ms);
    t.lag[Math.min(LAG_BUCKETS, Math.floor(lag))]++;
    if (lag > t.lagMax) t.lagMax = lag;
  }
  return true;
}

/** Nearest-rank quantile of a histogram of unit buckets (pure); NaN when empty. */
export function histQuantile(h, q) {
  let n = 0;
  for (const c of h) n += c;
  if (n === 0) return NaN;
  const rank = Math.min(n, Math.max(1, Math.ceil(q * n)));
  let seen = 0;
  for (let i = 0; i < h.length; i++) {
    seen += h[i];
    if (seen >= rank) return i;
  }
  return h.length - 1;
}

/** The tally as plain figures for IPC (pure). */
export function tallyStats(t) {
  let sizeSum = 0;
  let sizeMin = NaN;
  let sizeMax = NaN;
  let full = 0;
  for (let i = 1; i < t.sizes.length; i++) {
    if (t.sizes[i] === 0) continue;
    sizeSum += i * t.sizes[i];
    if (Number.isNaN(sizeMin)) sizeMin = i;
    sizeMax = i;
    if (i === 100) full = t.sizes[i];
  }
  return {
    requests: t.requests,
    events: t.events,
    byName: { ...t.byName },
    duplicates: t.duplicates,
    batch: { mean: t.requests ? sizeSum / t.requests : NaN, p50: histQuantile(t.sizes, 0.5), min: sizeMin, max: sizeMax, full },
    lag: { p50: histQuantile(t.lag, 0.5), p99: histQuantile(t.lag, 0.99), max: t.lagMax },
    first: t.first,
    last: t.last,
    verified: t.verified,
    refused: t.refused,
    unreadable: t.unreadable,
  };
}

/** Runs the server (the forked child): `{port}` once listening. */
function main() {
  const hook = new Webhook(BENCH_WEBHOOK_SECRET);
  let t = newTally();
  let seen = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (d) => {
      size += d.length;
      if (size <= MAX_BODY) chunks.push(d);
    });
    req.on('end', () => {
      const now = Date.now();
      if (size > MAX_BODY || req.method !== 'POST') {
        t.unreadable++;
        res.writeHead(400).end();
        return;
      }
      const body = Buffer.concat(chunks).toString('utf8');
      if (seen++ % VERIFY_EVERY === 0) {
        try {
          hook.verify(body, {
            'webhook-id': req.headers['webhook-id'],
            'webhook-timestamp': req.headers['webhook-timestamp'],
            'webhook-signature': req.headers['webhook-signature'],
          });
          t.verified++;
        } catch {
          // Counted, and still answered 200: the runner fails the run on any refusal.
          t.refused++;
        }
      }
      tallyBody(t, body, now);
      res.writeHead(200, { 'content-length': '0' }).end();
    });
  });
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
  process.on('message', (m) => {
    if (m.cmd === 'stats') process.send({ seq: m.seq, stats: tallyStats(t) });
    if (m.cmd === 'reset') {
      t = newTally();
      process.send({ seq: m.seq, stats: {} });
    }
  });
  // The runner going away ends this process too.
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
