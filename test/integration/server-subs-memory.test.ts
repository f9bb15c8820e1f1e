/**
 * Server-side subscriptions (contract 1.1) on the memory broker (embedded,
 * one node): the rules of test/helpers/server-subs-rules.ts (subs at connect
 * with positions, welcome first, the limit, /v1/subscribe and /v1/unsubscribe
 * with a publish right after the 200, already subscribed, limit_exceeded,
 * presence, bad input, metrics).
 */
import { runServerSubsRules } from '../helpers/server-subs-rules.js';

runServerSubsRules('memory');
