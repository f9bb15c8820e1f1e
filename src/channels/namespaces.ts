/**
 * Namespaces: options per channel pattern (contract 1.1, "Namespaces").
 *
 * `PUBGATE_NAMESPACES` is an ordered list; the first entry whose pattern
 * matches a channel gives it its options, and a channel no entry matches has
 * every option off. `historyChannels` (with `historySize`/`historyTtl`) acts as
 * namespaces after the configured ones.
 *
 * The list is compiled once into a ChannelResolver: exact patterns in a map,
 * prefixes checked in order. The hub resolves a channel when the node first
 * subscribes to it and keeps the result with the channel (never per message);
 * the publish path resolves once per publish. Options objects are frozen and
 * shared by every channel of a namespace.
 */

/** `history` as written in a namespace: size and ttl each optional (defaults: historySize, historyTtl). */
export interface HistorySpec {
  readonly size?: number;
  readonly ttl?: number;
}

/** One namespace as configured (validated by parseNamespaces). */
export interface Namespace {
  readonly pattern: string;
  readonly history?: HistorySpec;
  readonly rewind?: boolean;
  readonly presence?: boolean;
  readonly joinLeave?: boolean;
  readonly subscribeProxy?: boolean;
  readonly clientPublish?: boolean;
}

/** A channel's resolved options. */
export interface ChannelOptions {
  /** The pattern of the namespace that matched, or '' when none did. */
  readonly namespace: string;
  /** History size (messages) and ttl (seconds), or undefined when the channel keeps none. */
  readonly history: { readonly size: number; readonly ttl: number } | undefined;
  readonly rewind: boolean;
  readonly presence: boolean;
  readonly joinLeave: boolean;
  readonly subscribeProxy: boolean;
  readonly clientPublish: boolean;
}

/** The options of a channel no namespace matches: everything off. */
export const NO_OPTIONS: ChannelOptions = Object.freeze({
  namespace: '',
  history: undefined,
  rewind: false,
  presence: false,
  joinLeave: false,
  subscribeProxy: false,
  clientPublish: false,
});

export interface ChannelResolver {
  /** The options of `channel` (first matching namespace). */
  resolve(channel: string): ChannelOptions;
  /** Whether any namespace keeps history (the broker then needs its history store). */
  readonly anyHistory: boolean;
  /** Whether any namespace has presence. */
  readonly anyPresence: boolean;
}

export interface LegacyHistory {
  readonly historyChannels: readonly string[];
  readonly historySize: number;
  readonly historyTtl: number;
}

/** Namespace keys, in the contract's order. */
export const NAMESPACE_KEYS = ['pattern', 'history', 'rewind', 'presence', 'joinLeave', 'subscribeProxy', 'clientPublish'] as const;

/**
 * Options whose feature this release does not have yet: a namespace that turns
 * one on is refused at start (rather than accepted and silently ignored).
 */
export const NOT_YET_AVAILABLE: Readonly<Partial<Record<(typeof NAMESPACE_KEYS)[number], string>>> = {};

const PATTERN_RE = /^[A-Za-z0-9_:.@/=-]{0,200}\*?$/;

/**
 * Validates the raw `namespaces` value (a JSON array, or its JSON text from the
 * environment). Returns the namespaces, or throws NamespaceProblems listing
 * every problem, each naming its entry (`entry 2 ("feed:*"): ...`).
 */
export function parseNamespaces(raw: unknown): Namespace[] {
  let v = raw;
  if (typeof raw === 'string') {
    if (raw.trim() === '') return [];
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw new NamespaceProblems([`is not valid JSON: ${(e as Error).message}`]);
    }
  }
  if (!Array.isArray(v)) throw new NamespaceProblems(['must be a JSON array of namespaces ({"pattern": ..., options})']);
  const problems: string[] = [];
  const out: Namespace[] = [];
  const seen = new Map<string, number>();
  v.forEach((entry: unknown, i) => {
    const name = (): string => {
      const p = entry !== null && typeof entry === 'object' ? (entry as Record<string, unknown>).pattern : undefined;
      return `entry ${i + 1}${typeof p === 'string' ? ` (${JSON.stringify(p.slice(0, 60))})` : ''}`;
    };
    const bad = (msg: string): void => {
      problems.push(`${name()}: ${msg}`);
    };
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) return bad('must be an object with a "pattern"');
    const o = entry as Record<string, unknown>;
    const before = problems.length;
    for (const k of Object.keys(o)) {
      if (!(NAMESPACE_KEYS as readonly string[]).includes(k)) bad(`unknown key ${JSON.stringify(k)} (known: ${NAMESPACE_KEYS.join(', ')})`);
    }
    const pattern = o.pattern;
    if (typeof pattern !== 'string' || pattern === '') bad('"pattern" is required: a channel name, or a prefix ending in *');
    else if (pattern.includes('{sub}')) bad('"pattern" cannot contain {sub} (namespaces are the same for every user)');
    else if (!PATTERN_RE.test(pattern)) bad(`"pattern" ${JSON.stringify(pattern.slice(0, 60))} is not a channel pattern (a channel name, or a prefix ending in *)`);
    else {
      const first = seen.get(pattern);
      if (first !== undefined) bad(`"pattern" repeats entry ${first + 1}, which always matches first`);
      else seen.set(pattern, i);
    }
    for (const k of ['rewind', 'presence', 'joinLeave', 'subscribeProxy', 'clientPublish'] as const) {
      if (o[k] !== undefined && typeof o[k] !== 'boolean') bad(`"${k}" must be true or false`);
    }
    let history: HistorySpec | undefined;
    if (o.history !== undefined && o.history !== false) {
      const h = o.history;
      if (h === null || typeof h !== 'object' || Array.isArray(h)) bad('"history" must be an object {"size": messages, "ttl": seconds} (each optional)');
      else {
        const hh = h as Record<string, unknown>;
        for (const k of Object.keys(hh)) if (k !== 'size' && k !== 'ttl') bad(`"history" has an unknown key ${JSON.stringify(k)} (known: size, ttl)`);
        if (hh.size !== undefined && !(Number.isInteger(hh.size) && (hh.size as number) >= 1 && (hh.size as number) <= 1_000_000)) {
          bad('"history.size" must be a whole number between 1 and 1000000');
        }
        if (hh.ttl !== undefined && !(Number.isInteger(hh.ttl) && (hh.ttl as number) >= 1 && (hh.ttl as number) <= 30 * 24 * 3600)) {
          bad('"history.ttl" must be a whole number of seconds between 1 and 2592000');
        }
        history = {
          ...(typeof hh.size === 'number' ? { size: hh.size } : {}),
          ...(typeof hh.ttl === 'number' ? { ttl: hh.ttl } : {}),
        };
      }
    }
    if (o.joinLeave === true && o.presence !== true) bad('"joinLeave" needs "presence": true');
    if (o.rewind === true && history === undefined) bad('"rewind" needs "history"');
    for (const [k, why] of Object.entries(NOT_YET_AVAILABLE)) {
      if (o[k] === true) bad(`"${k}": ${why}; remove it`);
    }
    if (problems.length > before) return;
    out.push(Object.freeze({
      pattern: pattern as string,
      ...(history ? { history: Object.freeze(history) } : {}),
      ...(o.rewind === true ? { rewind: true } : {}),
      ...(o.presence === true ? { presence: true } : {}),
      ...(o.joinLeave === true ? { joinLeave: true } : {}),
      ...(o.subscribeProxy === true ? { subscribeProxy: true } : {}),
      ...(o.clientPublish === true ? { clientPublish: true } : {}),
    }));
  });
  if (problems.length > 0) throw new NamespaceProblems(problems);
  return out;
}

export class NamespaceProblems extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('; '));
    this.name = 'NamespaceProblems';
  }
}

/** Compiles the configured namespaces, then `historyChannels` as trailing history-only namespaces. */
export function compileNamespaces(namespaces: readonly Namespace[], legacy: LegacyHistory): ChannelResolver {
  const all: Array<{ pattern: string; options: ChannelOptions }> = [];
  for (const ns of namespaces) {
    all.push({
      pattern: ns.pattern,
      options: Object.freeze({
        namespace: ns.pattern,
        history: ns.history ? Object.freeze({ size: ns.history.size ?? legacy.historySize, ttl: ns.history.ttl ?? legacy.historyTtl }) : undefined,
        rewind: ns.rewind === true,
        presence: ns.presence === true,
        joinLeave: ns.joinLeave === true,
        subscribeProxy: ns.subscribeProxy === true,
        clientPublish: ns.clientPublish === true,
      }),
    });
  }
  for (const p of legacy.historyChannels) {
    all.push({ pattern: p, options: Object.freeze({ ...NO_OPTIONS, namespace: p, history: Object.freeze({ size: legacy.historySize, ttl: legacy.historyTtl }) }) });
  }
  // Exact patterns go into a map, keeping the first entry's options and its
  // position; a channel's answer is the earlier of its exact entry and the
  // first prefix that matches it.
  const exact = new Map<string, { at: number; options: ChannelOptions }>();
  const prefixes: Array<{ at: number; prefix: string; options: ChannelOptions }> = [];
  all.forEach(({ pattern, options }, at) => {
    if (pattern.endsWith('*')) prefixes.push({ at, prefix: pattern.slice(0, -1), options });
    else if (!exact.has(pattern)) exact.set(pattern, { at, options });
  });
  const resolve = (channel: string): ChannelOptions => {
    const e = exact.get(channel);
    for (const p of prefixes) {
      if (e !== undefined && p.at > e.at) break;
      if (channel.startsWith(p.prefix)) return p.options;
    }
    return e?.options ?? NO_OPTIONS;
  };
  return {
    resolve: all.length === 0 ? () => NO_OPTIONS : resolve,
    anyHistory: all.some((n) => n.options.history !== undefined),
    anyPresence: all.some((n) => n.options.presence),
  };
}
