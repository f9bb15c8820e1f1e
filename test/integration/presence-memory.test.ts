/**
 * Presence and join/leave (contract 1.1) on the memory broker (embedded, one node): the rules of
 * test/helpers/presence-rules.ts (tabs, info of the oldest connection, own
 * join, leave on unsubscribe/drop/disconnect, truncation, errors, info size,
 * HTTP API, metrics).
 */
import { runPresenceRules } from '../helpers/presence-rules.js';

runPresenceRules('memory');
