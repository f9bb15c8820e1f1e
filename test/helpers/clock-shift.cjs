/**
 * Preloaded into a gateway process by tests (NODE_OPTIONS=--require <this file>)
 * to move its wall clock without waiting: each SIGUSR2 moves Date.now()
 * forward by 61 s and prints a JSON log line, `test clock advanced`, with the
 * total offset. Only Date.now() moves (jose's JWKS cache and cooldown read
 * it); `new Date()` and performance.now() are untouched.
 */
'use strict';
const realNow = Date.now;
let offsetMs = 0;
Date.now = () => realNow() + offsetMs;
process.on('SIGUSR2', () => {
  offsetMs += 61_000;
  process.stdout.write(`${JSON.stringify({ level: 'info', msg: 'test clock advanced', offsetMs })}\n`);
});
