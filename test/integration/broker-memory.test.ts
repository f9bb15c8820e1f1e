import { createMemoryBroker } from '../../src/broker/memory-broker.js';
import { runBrokerContract } from '../helpers/broker-contract.js';
import { runPresenceContract } from '../helpers/presence-contract.js';

runBrokerContract({
  name: 'memory',
  newBroker: () => createMemoryBroker(),
  sharedBackend: false,
  newHistoryBroker: (history) => createMemoryBroker({ history }),
});

runPresenceContract({
  name: 'memory',
  newBroker: () => createMemoryBroker({ presence: true }),
  sharedBackend: false,
  newWebhookBroker: () => createMemoryBroker({ presence: true, webhooks: { maxEvents: 1_000_000 } }),
});
