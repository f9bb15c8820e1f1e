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
            authorization: `Bearer ${apiKey}`,
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
