// Small statistics helpers: medians and ranges over runs, and a mergeable
// latency histogram (10 µs buckets up to 2 s, then an overflow bucket).

export function median(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function range(xs) {
  const v = xs.filter((x) => Number.isFinite(x));
  return v.length === 0 ? [NaN, NaN] : [Math.min(...v), Math.max(...v)];
}

export const HIST_BUCKET_MS = 0.01;
export const HIST_BUCKETS = 200_000; // 2 s

export class LatencyHistogram {
  constructor() {
    this.counts = new Uint32Array(HIST_BUCKETS + 1);
    this.n = 0;
    this.max = 0;
    this.sum = 0;
  }

  add(ms) {
    const v = ms < 0 ? 0 : ms;
    let i = Math.floor(v / HIST_BUCKET_MS);
    if (i > HIST_BUCKETS) i = HIST_BUCKETS;
    this.counts[i]++;
    this.n++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  /** Sparse form for IPC: [index, count, index, count, ...]. */
  toSparse() {
    const out = [];
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i] !== 0) out.push(i, this.counts[i]);
    return { pairs: out, n: this.n, max: this.max, sum: this.sum };
  }

  mergeSparse(s) {
    for (let k = 0; k < s.pairs.length; k += 2) this.counts[s.pairs[k]] += s.pairs[k + 1];
    this.n += s.n;
    this.sum += s.sum;
    if (s.max > this.max) this.max = s.max;
  }

  /** Upper edge of the bucket holding the q-quantile (0 < q ≤ 1), in ms. */
  quantile(q) {
    if (this.n === 0) return NaN;
    const target = Math.ceil(q * this.n);
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= target) return i === HIST_BUCKETS ? this.max : Math.min((i + 1) * HIST_BUCKET_MS, this.max);
    }
    return this.max;
  }

  mean() {
    return this.n === 0 ? NaN : this.sum / this.n;
  }
}

export function fmtNum(x, digits = 0) {
  if (!Number.isFinite(x)) return 'n/a';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
