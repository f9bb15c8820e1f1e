// The proxy scenario's backend: an HTTP server on 127.0.0.1 that answers the
// connect proxy and the subscribe proxy at once (no I/O, no wait), run as a
// child process of the runner (forked, so on the client CPUs) so that its CPU
// is its own. It counts what it received: requests per path and TCP
// connections accepted (the node's fetch should keep its connections alive:
// a few connections, many requests each), and reports them over IPC.
//
//   POST /connect   {"cookie","ip","origin"} → 200 {"user":<the cookie's bench_session>,"expiresIn":3600,"channels":["bench*"]}
//   POST /subscribe {"user","conn","channel"} → 200 {"allow":true}
// A request without `Authorization: Bearer <BENCH_PROXY_KEY>` is 401, and
// counted; so is an answer the backend could not make (bad JSON, no cookie).
import http from 'node:http';
import { fileURLToPath } from 'node:url';

/** The cookie the bench clients send: `bench_session=<user>`. */
export const SESSION_COOKIE = 'bench_session';

/** The value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue(header, name) {
  for (const part of String(header).split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * The backend's answer to one proxy request (pure): `path` and the request's
 * body text and Authorization header, against the expected `key`. Answers
 * { status, body, counted } where `counted` names the request's kind for the
 * tally ('connect', 'subscribe', 'unauthorized', 'bad_request', 'not_found').
 */
export function backendAnswer(path, body, authorization, key) {
  if (path !== '/connect' && path !== '/subscribe') return { status: 404, body: '{}', counted: 'not_found' };
  if (authorization !== `Bearer ${key}`) return { status: 401, body: '{}', counted: 'unauthorized' };
  let req;
  try {
    req = JSON.parse(body);
  } catch {
    return { status: 400, body: '{}', counted: 'bad_request' };
  }
  if (path === '/subscribe') {
    if (typeof req?.user !== 'string' || typeof req.channel !== 'string') return { status: 400, body: '{}', counted: 'bad_request' };
    return { status: 200, body: '{"allow":true}', counted: 'subscribe' };
  }
  const user = cookieValue(req?.cookie ?? '', SESSION_COOKIE);
  if (!user) return { status: 400, body: '{}', counted: 'bad_request' };
  return { status: 200, body: JSON.stringify({ user, expiresIn: 3600, channels: ['bench*'] }), counted: 'connect' };
}

/** Runs the server (the forked child): `{port}` once listening; answers `stats` with the counts so far. */
function main() {
  const key = process.env.BENCH_PROXY_KEY ?? '';
  const counts = { connect: 0, subscribe: 0, unauthorized: 0, bad_request: 0, not_found: 0 };
  let connections = 0;
  let open = 0;
  let maxOpen = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (d) => {
      size += d.length;
      // Bounded: a proxy request is well under 1 KiB.
      if (size <= 64 * 1024) chunks.push(d);
    });
    req.on('end', () => {
      const a = size > 64 * 1024
        ? { status: 413, body: '{}', counted: 'bad_request' }
        : backendAnswer(req.url, Buffer.concat(chunks).toString('utf8'), req.headers.authorization, key);
      counts[a.counted]++;
      res.writeHead(a.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(a.body) });
      res.end(a.body);
    });
  });
  server.on('connection', (sock) => {
    connections++;
    open++;
    if (open > maxOpen) maxOpen = open;
    sock.on('close', () => open--);
  });
  server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
  process.on('message', (m) => {
    if (m.cmd === 'stats') process.send({ seq: m.seq, stats: { ...counts, connections, open, maxOpen } });
  });
  // The runner going away ends this process too.
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
