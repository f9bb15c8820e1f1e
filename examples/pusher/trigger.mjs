#!/usr/bin/env node
/**
 * Triggers one event with the `pusher` server library, as a backend does
 * (the same PUSHER_* environment as server.mjs):
 *
 *   node examples/pusher/trigger.mjs [channel] [text]     # example-feed, "hello from trigger.mjs"
 *
 * The page of server.mjs shows it under "Events".
 */
import Pusher from 'pusher';

const env = process.env;
const pusher = new Pusher({
  appId: env.PUSHER_APP_ID ?? 'app-id',
  key: env.PUSHER_APP_KEY ?? 'app-key',
  secret: env.PUSHER_APP_SECRET ?? 'app-secret',
  host: env.PUSHER_HOST ?? '127.0.0.1',
  port: env.PUSHER_PORT ?? '8080',
  useTLS: (env.PUSHER_SCHEME ?? 'http') === 'https',
  timeout: 10_000,
});

const channel = process.argv[2] ?? 'example-feed';
const text = process.argv[3] ?? 'hello from trigger.mjs';
try {
  const res = await pusher.trigger(channel, 'example-event', { text, at: new Date().toISOString() });
  process.stdout.write(`${res.status} ${await res.text()}\n`);
} catch (e) {
  // RequestError: the gateway's status and plain-text body (docs/errors.md, "Pusher HTTP API rejection reasons").
  process.stderr.write(`trigger failed: ${e?.status ?? ''} ${e?.body ?? e?.message ?? e}\n`);
  process.exit(1);
}
