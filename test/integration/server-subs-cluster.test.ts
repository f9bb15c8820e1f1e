/**
 * Server-side subscriptions (contract 1.1) on a real 3-master / 3-replica
 * Redis Cluster with two gateway nodes: the rules of
 * test/helpers/server-subs-rules.ts. The control channel and the node
 * registry each live in one slot; channels spread over the three masters.
 */
import { runServerSubsRules } from '../helpers/server-subs-rules.js';

runServerSubsRules('redis-cluster');
