// The publish side: HTTP keep-alive requests to /v1/publish or
// /v1/publish/batch with a bounded number in flight, and the `data` values
// that carry the send time (ms on the machine-wide monotonic clock).
import http from 'node:http';

export function createPublisher({ port, apiKey, concurrency }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  let inflight = 0;
  function post(path, body, retry = true) {
    inflight++;
    return new Promise((resolve) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          path,
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/json',
            // No API key: the Pusher HTTP API, whose requests carry their signature in the query.
            ...(apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` }),
            'content-length': Buffer.byteLength(body),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d) => (text += d));
          res.on('end', () => {
            inflight--;
            resolve({ status: res.statusCode, text });
          });
        },
      );
      req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
      req.on('error', (e) => {
        inflight--;
        // The server closed an idle keep-alive socket just as this request was
        // sent on it: the request was never read, so sending it again is safe.
        if (retry && req.reusedSocket && e.code === 'ECONNRESET') resolve(post(path, body, false));
        else resolve({ status: 0, text: e.message });
      });
      req.end(body);
    });
  }
  return {
    post,
    get inflight() {
      return inflight;
    },
    close: () => agent.destroy(),
  };
}

/**
 * `data` for one message: {"t":<send time>,"p":"<padding>"}, padded so that
 * the delivered frame {"type":"message","channel":..,"data":..} is about
 * `frameBytes` long.
 */
export function makeData(frameBytes) {
  const pads = new Map();
  return (t, channel) => {
    const ts = t.toFixed(3);
    const key = channel.length * 100 + ts.length;
    let pad = pads.get(key);
    if (pad === undefined) {
      const fixed = `{"type":"message","channel":"${channel}","data":{"t":${ts},"p":""}}`.length;
      pad = 'x'.repeat(Math.max(0, frameBytes - fixed));
      pads.set(key, pad);
    }
    return `{"t":${ts},"p":"${pad}"}`;
  };
}

/** A small deterministic PRNG (mulberry32): the same payloads on every run. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ['ok', 'see', 'you', 'at', 'the', 'meeting', 'deploy', 'is', 'done', 'thanks', 'lunch', 'in', 'ten', 'minutes', 'build', 'green', 'merged', 'review', 'please', 'on', 'my', 'way'];
const SYMBOLS = ['BTC-USD', 'ETH-USD', 'SOL-USD', 'ETH-BTC', 'DOGE-USD'];
const VARIANTS = 64;

/**
 * `data` for one message as an application would publish it, sized so that the
 * delivered frame is about `frameBytes` long: under 300 bytes a chat message
 * ({"t":..,"user":..,"text":"words ..."}), otherwise a batch
 * of trades ({"t":..,"market":..,"seq":..,"trades":[{"id":..,"px":..,"qty":..,
 * "side":..,"ts":..}, ...]}) whose keys repeat and whose numbers vary: the
 * kind of JSON permessage-deflate is meant for. 64 variants per channel,
 * taken in turn; `t` is the send time as with makeData.
 */
export function makeJsonData(frameBytes) {
  const byChannel = new Map();
  let n = 0;
  const build = (channel, rnd, i) => {
    // The frame around the body: {"type":"message","channel":"..","data":{"t":<13 chars>,<body>}}
    const fixed = `{"type":"message","channel":"${channel}","data":{"t":1234567890.123,}}`.length;
    const room = frameBytes - fixed;
    let body;
    if (frameBytes < 300) {
      body = `"user":"u${Math.floor(rnd() * 9000) + 1000}","text":""`;
      const words = [];
      while (body.length + words.join(' ').length < room) words.push(WORDS[Math.floor(rnd() * WORDS.length)]);
      const text = words.join(' ').slice(0, Math.max(0, room - body.length));
      body = body.replace('"text":""', `"text":"${text}"`);
    } else {
      const sym = SYMBOLS[i % SYMBOLS.length];
      const head = `"market":"${sym}","seq":${100000 + i},"trades":[`;
      const trades = [];
      let px = 20000 + rnd() * 40000;
      let len = head.length + 1;
      for (;;) {
        px += (rnd() - 0.5) * 20;
        const t = `{"id":${Math.floor(rnd() * 1e9)},"px":${px.toFixed(2)},"qty":${(rnd() * 3).toFixed(4)},"side":"${rnd() < 0.5 ? 'buy' : 'sell'}","ts":${1700000000000 + Math.floor(rnd() * 1e6)}}`;
        if (len + t.length + 1 > room) break;
        trades.push(t);
        len += t.length + 1;
      }
      body = `${head}${trades.join(',')}]`;
    }
    return body;
  };
  return (t, channel) => {
    let bodies = byChannel.get(channel);
    if (bodies === undefined) {
      const rnd = prng(0x5eed + channel.length);
      bodies = Array.from({ length: VARIANTS }, (_, i) => build(channel, rnd, i));
      byChannel.set(channel, bodies);
    }
    return `{"t":${t.toFixed(3)},${bodies[n++ % VARIANTS]}}`;
  };
}
