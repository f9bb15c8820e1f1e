// The benchmark's Server-Sent Events client (the sse-fanout scenario): many
// `GET /sse?channel=…` streams from one client process, each on its own
// node:http connection (agent: false), with a minimal event-stream parser
// that counts `message` events and looks at nothing else but the welcome and
// close events: no JSON parse per event, so the client stays cheap beside the
// server it measures.
import http from 'node:http';

/**
 * A minimal text/event-stream parser (pure; the unit test drives it): fed
 * the body's chunks, it splits lines (LF, CRLF or CR; a line may span chunks),
 * keeps each event's `event:` name and first `data:` line, and at the blank
 * line ending an event calls `onEvent(name, data)` for every event other than
 * `message`, which it only counts (`messages`). Comments (`: ping`) and `id:`
 * lines are skipped. The partial line kept between chunks is bounded
 * (`maxLine` characters): past it the stream is not one this bench reads.
 */
export class EventStreamParser {
  constructor(onEvent = () => undefined, maxLine = 1 << 20) {
    this.onEvent = onEvent;
    this.maxLine = maxLine;
    this.messages = 0; // `message` events seen
    this.events = 0; // every dispatched event
    this.tail = ''; // a line not yet ended by the last chunk
    this.name = '';
    this.data = undefined; // the event's first data line (non-message events)
    this.skipLf = false; // the last chunk ended with CR: a LF starting the next one ends nothing
  }

  /** Feeds a chunk (a string: the response's encoding is utf8). */
  feed(text) {
    let s = this.tail.length > 0 ? this.tail + text : text;
    let i = 0;
    if (this.skipLf) {
      this.skipLf = false;
      if (s.charCodeAt(0) === 10) i = 1;
    }
    for (;;) {
      let nl = s.indexOf('\n', i);
      const cr = s.indexOf('\r', i);
      let width = 1;
      if (cr >= 0 && (nl < 0 || cr < nl)) {
        if (cr + 1 === s.length) {
          // A CR at the chunk's end: the line ends here; a LF right after it is part of the same break.
          this.line(s, i, cr);
          this.skipLf = true;
          i = cr + 1;
          break;
        }
        nl = cr;
        width = s.charCodeAt(cr + 1) === 10 ? 2 : 1;
      }
      if (nl < 0) break;
      this.line(s, i, nl);
      i = nl + width;
    }
    this.tail = i < s.length ? s.slice(i) : '';
    if (this.tail.length > this.maxLine) throw new Error(`event-stream line over ${this.maxLine} characters`);
  }

  /** One line, s[from, to). */
  line(s, from, to) {
    if (to === from) {
      this.dispatch();
      return;
    }
    const c = s.charCodeAt(from);
    if (c === 58) return; // ':' a comment
    if (c === 101 && s.startsWith('event:', from)) {
      this.name = s.slice(s.charCodeAt(from + 6) === 32 ? from + 7 : from + 6, to);
    } else if (c === 100 && this.data === undefined && this.name !== 'message' && s.startsWith('data:', from)) {
      this.data = s.slice(s.charCodeAt(from + 5) === 32 ? from + 6 : from + 5, to);
    }
  }

  dispatch() {
    const name = this.name;
    const data = this.data;
    this.name = '';
    this.data = undefined;
    // A blank line with no field before it dispatches nothing.
    if (name === '' && data === undefined) return;
    this.events++;
    if (name === 'message') this.messages++;
    else this.onEvent(name || 'message', data);
  }
}

/** SSE streams to one server, counted together. */
export class SsePool {
  /** @param {{host: string, port: number}} o */
  constructor(o) {
    this.host = o.host;
    this.port = o.port;
    this.streams = new Set();
    this.messages = 0; // message events on every stream (since the last reset)
    this.closeEvents = {}; // close events received: code → count
    this.endedOpen = 0; // open streams whose response ended or failed
    this.errors = {};
  }

  /**
   * Opens one stream on `channels` with `token` in Authorization; resolves
   * once its welcome event arrived, rejects on a non-200 answer, an error,
   * an end before the welcome or `timeoutMs`.
   */
  open(token, channels, timeoutMs = 10_000) {
    const path = `/sse?${channels.map((c) => `channel=${encodeURIComponent(c)}`).join('&')}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      let welcomed = false;
      const st = { req: undefined, res: undefined, parser: undefined, closing: false };
      const timer = setTimeout(() => fail('timeout'), timeoutMs);
      const fail = (why) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        st.req?.destroy();
        reject(new Error(why));
      };
      const req = http.request({
        host: this.host, port: this.port, path, method: 'GET', agent: false,
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
      }, (res) => {
        st.res = res;
        if (res.statusCode !== 200) {
          res.resume();
          fail(`status ${res.statusCode}`);
          return;
        }
        res.setEncoding('utf8');
        let counted = 0;
        st.parser = new EventStreamParser((name, data) => {
          if (name === 'welcome' && !welcomed) {
            welcomed = true;
            this.streams.add(st);
            if (!settled) {
              settled = true;
              clearTimeout(timer);
              resolve(st);
            }
          } else if (name === 'close') {
            const code = /"code":(\d+)/.exec(data ?? '')?.[1] ?? '?';
            this.closeEvents[code] = (this.closeEvents[code] ?? 0) + 1;
          }
        });
        res.on('data', (chunk) => {
          const p = st.parser;
          p.feed(chunk);
          if (p.messages !== counted) {
            this.messages += p.messages - counted;
            counted = p.messages;
          }
        });
        res.on('end', () => ended());
        res.on('error', (e) => ended(e));
      });
      const ended = (e) => {
        if (st.closing) return;
        if (e) this.errors[e.code ?? 'error'] = (this.errors[e.code ?? 'error'] ?? 0) + 1;
        if (this.streams.delete(st)) this.endedOpen++;
        fail(welcomed ? 'ended' : 'ended before welcome');
      };
      st.req = req;
      req.on('error', (e) => {
        if (st.closing) return;
        this.errors[e.code ?? 'error'] = (this.errors[e.code ?? 'error'] ?? 0) + 1;
        ended();
      });
      req.on('close', () => {
        if (this.streams.delete(st)) this.endedOpen++;
      });
      req.end();
    });
  }

  /** Closes every stream at once (its socket destroyed; not counted as ended). */
  closeAll() {
    const all = [...this.streams];
    this.streams.clear();
    for (const st of all) {
      st.closing = true;
      st.req.destroy();
    }
  }
}
