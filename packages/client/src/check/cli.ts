#!/usr/bin/env node
/**
 * pubgate-check <ws-url> [--token T] [--origin O] [--idle 90] [--timeout 10] [--channel C] [--skip-sse]
 *
 * Exit status: 0 when the connection works (warnings allowed), 1 when a step
 * fails, 2 on a usage error.
 */
import { parseArgs } from 'node:util';
import { formatStep, formatVerdict, runCheck } from './check.js';

const USAGE = `usage: pubgate-check <ws-url> [--token T] [--origin O] [--idle SECONDS] [--timeout SECONDS] [--channel C] [--skip-sse]

Walks one connection to a pubgate gateway step by step (DNS, TCP, TLS, HTTP
upgrade, subprotocol, welcome, ping, idle) and says where it breaks; then opens
the Server-Sent Events stream (/sse, the client's fallback) and reports which
transports work.

  <ws-url>        ws://host:port/ws or wss://ws.example.com/ws
  --token T       a JWT, sent as the bearer.<jwt> subprotocol like the client does
                  (default: $PUBGATE_TOKEN; none: anonymous)
  --origin O      the Origin header a browser page would send (https://app.example.com)
  --idle N        keep the connection idle N seconds to catch proxy idle timeouts (default 90; 0 skips)
  --timeout N     seconds each network step may take (default 10)
  --channel C     the channel the SSE stream names (default: the first the token's
                  channels claim allows)
  --skip-sse      do not check the SSE stream
`;

async function main(): Promise<number> {
  let values: { token?: string; origin?: string; idle?: string; timeout?: string; channel?: string; 'skip-sse'?: boolean; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      allowPositionals: true,
      options: {
        token: { type: 'string' },
        origin: { type: 'string' },
        idle: { type: 'string', default: '90' },
        timeout: { type: 'string', default: '10' },
        channel: { type: 'string' },
        'skip-sse': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const url = positionals[0];
  const idle = Number(values.idle);
  const timeout = Number(values.timeout);
  if (!url || positionals.length > 1 || !Number.isFinite(idle) || idle < 0 || !Number.isFinite(timeout) || timeout <= 0) {
    process.stderr.write(USAGE);
    return 2;
  }
  const token = values.token ?? (process.env.PUBGATE_TOKEN || undefined);
  process.stdout.write(`pubgate-check ${url}${values.origin ? ` (Origin ${values.origin})` : ''}\n`);
  const report = await runCheck({
    url,
    ...(token !== undefined ? { token } : {}),
    ...(values.origin !== undefined ? { origin: values.origin } : {}),
    idleSec: idle,
    timeoutMs: timeout * 1000,
    sse: values['skip-sse'] !== true,
    ...(values.channel !== undefined ? { channel: values.channel } : {}),
    onStep: (r) => process.stdout.write(`${formatStep(r)}\n`),
  });
  process.stdout.write(`${formatVerdict(report)}\n`);
  return report.ok ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`pubgate-check: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
