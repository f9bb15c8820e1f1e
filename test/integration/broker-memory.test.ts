import { createMemoryBroker } from '../../src/broker/memory-broker.js';
import { runBrokerContract } from '../helpers/broker-contract.js';

runBrokerContract({
  name: 'memory',
  newBroker: () => createMemoryBroker(),
  sharedBackend: false,
  newHistoryBroker: (history) => createMemoryBroker({ history }),
});
