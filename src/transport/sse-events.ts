/**
 * Server-Sent Events framing (contract 1.1, "Server-Sent Events transport"):
 * event texts built from the WebSocket frame texts by slicing, never by
 * parsing and serializing again, and the `id:` positions of a stream.
 *
 * An `id:` names the position of every history channel of the stream:
 * `<prefix>.<epoch>:<offset>,<epoch>:<offset>...`, the channels in sorted
 * order, the prefix the 8 hex digits of a 32-bit FNV-1a hash of that sorted
 * list, so that an id for another channel set is recognised (and ignored).
 * Epochs are base64url (broker/history.ts newEpoch), so neither `:` nor `,`
 * occurs in one.
 */

/** Server frames start with `{"type":"`; the next character tells them apart. */
const TYPE_AT = 9;
export const KIND_MESSAGE = 109; // 'm'
export const KIND_JOIN = 106; // 'j'
export const KIND_LEAVE = 108; // 'l'

/** How a message frame starts (protocol/frames.ts encodeMessage). */
const MESSAGE_HEAD = '{"type":"message","channel":"';

/** A history channel's position. */
export interface Position {
  readonly offset: number;
  readonly epoch: string;
}

/** The history channels of a stream, sorted, with the id prefix that names the list. */
export interface IdShape {
  /** The sorted channels joined by a space (no channel name has one): equal keys, equal shapes. */
  readonly key: string;
  readonly prefix: string;
  readonly channels: readonly string[];
  readonly index: ReadonlyMap<string, number>;
}

/** 32-bit FNV-1a of a text's UTF-16 code units, as 8 hex digits. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/** The id shape of a stream with these history channels; undefined without any (its events carry no `id:`). */
export function idShape(historyChannels: readonly string[]): IdShape | undefined {
  if (historyChannels.length === 0) return undefined;
  const channels = [...new Set(historyChannels)].sort();
  const key = channels.join(' ');
  return { key, prefix: fnv1a(key), channels, index: new Map(channels.map((c, i) => [c, i])) };
}

/** The event kind of a server frame: message, join, leave, or 0 for the others (not sent over SSE). */
export function frameKind(frame: string): number {
  const k = frame.charCodeAt(TYPE_AT);
  return k === KIND_MESSAGE || k === KIND_JOIN || k === KIND_LEAVE ? k : 0;
}

/** The channel of a message frame. */
export function frameChannel(frame: string): string {
  return frame.slice(MESSAGE_HEAD.length, frame.indexOf('"', MESSAGE_HEAD.length));
}

/**
 * The position a message frame carries (history channels), read at its known
 * place right after the channel: a `data` that contains `"offset":` is never
 * mistaken for it.
 */
export function framePosition(frame: string): Position | undefined {
  const at = frame.indexOf('"', MESSAGE_HEAD.length) + 2; // past `",`
  if (!frame.startsWith('"offset":', at)) return undefined;
  const comma = frame.indexOf(',', at + 9);
  const offset = Number(frame.slice(at + 9, comma));
  const epochAt = comma + 10; // past `,"epoch":"`
  return { offset, epoch: frame.slice(epochAt, frame.indexOf('"', epochAt)) };
}

/**
 * `data:` lines for a JSON text. A published `data` may hold line breaks
 * (whitespace between JSON tokens; never inside strings): each line gets its
 * own `data:` field, and the client joins them with `\n`, which is the same
 * JSON (a lone `\r` comes back as `\n`, also whitespace).
 */
function dataLines(json: string): string {
  if (json.indexOf('\n') < 0 && json.indexOf('\r') < 0) return `data: ${json}\n`;
  return `data: ${json.split(/\r\n|\r|\n/).join('\ndata: ')}\n`;
}

/** The frame's JSON without its `"type":"…",` member. */
export function eventData(frame: string): string {
  return '{' + frame.slice(frame.indexOf(',', TYPE_AT) + 1);
}

const NAMES: Readonly<Record<number, string>> = { [KIND_MESSAGE]: 'message', [KIND_JOIN]: 'join', [KIND_LEAVE]: 'leave' };

/** The event text of a message, join or leave frame (`id` on messages of streams with history channels). */
export function eventText(kind: number, frame: string, id: string | undefined): string {
  return `event: ${NAMES[kind]}\n${id === undefined ? '' : `id: ${id}\n`}${dataLines(eventData(frame))}\n`;
}

/** An event of our own (welcome, close): `data` is JSON text without line breaks. */
export function namedEvent(name: string, data: string, id?: string): string {
  return `event: ${name}\n${id === undefined ? '' : `id: ${id}\n`}data: ${data}\n\n`;
}

export const PING_COMMENT = ': ping\n\n';

/** An id from positions given per channel of the shape. */
export function formatId(shape: IdShape, at: (channel: string, i: number) => Position): string {
  let parts = '';
  for (let i = 0; i < shape.channels.length; i++) {
    const p = at(shape.channels[i]!, i);
    parts += `${i === 0 ? '' : ','}${p.epoch}:${p.offset}`;
  }
  return `${shape.prefix}.${parts}`;
}

const EPOCH_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Channel subsets tried at most when an id covers fewer channels than the stream has (bounded work per request). */
export const MAX_ID_SUBSETS = 4096;

/**
 * The history channels of `shape` that an id with `parts` positions and hash
 * `prefix` names: all of them, or (an id made for fewer channels: a client
 * that added a channel and reopened its stream with the positions it had) the
 * first subset, in sorted order, whose hash is `prefix`; at most
 * MAX_ID_SUBSETS subsets are tried.
 */
function coveredChannels(shape: IdShape, prefix: string, parts: number): readonly string[] | undefined {
  const n = shape.channels.length;
  if (parts === n) return prefix === shape.prefix ? shape.channels : undefined;
  if (parts > n || parts === 0) return undefined;
  // Combinations of `parts` indexes out of n, in lexicographic order.
  const idx = Array.from({ length: parts }, (_, i) => i);
  for (let tried = 0; tried < MAX_ID_SUBSETS; tried++) {
    const names = idx.map((i) => shape.channels[i]!);
    if (fnv1a(names.join(' ')) === prefix) return names;
    let k = parts - 1;
    while (k >= 0 && idx[k] === n - parts + k) k--;
    if (k < 0) return undefined;
    idx[k]!++;
    for (let j = k + 1; j < parts; j++) idx[j] = idx[j - 1]! + 1;
  }
  return undefined;
}

/**
 * The positions a `Last-Event-ID` gives for a stream's history channels, or
 * undefined when it is not an id of this format or names channels the stream
 * does not have (damaged, another channel set): then no channel is covered.
 * An id for a subset of the stream's history channels covers that subset; the
 * others start live (contract: an id "is ignored for the channels it does not cover").
 */
export function parseLastEventId(text: string, shape: IdShape | undefined): Map<string, Position> | undefined {
  if (shape === undefined || text.length === 0 || text.length > 64 * 1024) return undefined;
  const dot = text.indexOf('.');
  if (dot < 0) return undefined;
  const parts = text.slice(dot + 1).split(',');
  const channels = coveredChannels(shape, text.slice(0, dot), parts.length);
  if (channels === undefined) return undefined;
  const out = new Map<string, Position>();
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    const colon = part.lastIndexOf(':');
    const epoch = part.slice(0, colon);
    const digits = part.slice(colon + 1);
    if (colon < 0 || !EPOCH_RE.test(epoch) || !/^[0-9]{1,15}$/.test(digits)) return undefined;
    out.set(channels[i]!, { offset: Number(digits), epoch });
  }
  return out;
}
