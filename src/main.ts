/**
 * Process entry: configuration, logger, gateway, signals, exit codes. The only
 * module that reads process.env, installs process handlers or exits.
 */
import { ConfigError, loadConfig } from './config.js';
import { createGateway } from './gateway.js';
import { createLogger } from './observability/logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const p of e.problems) process.stderr.write(`pubgate: invalid configuration: ${p}\n`);
      process.exit(1);
    }
    throw e;
  }
  const log = createLogger({ level: config.logLevel, nodeId: config.nodeId });
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

  let gateway;
  try {
    gateway = await createGateway(config, log);
    await gateway.start();
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    process.stderr.write(`pubgate: cannot start: ${(err as Error).message}\n`);
    process.exit(1);
  }

  let signalled = false;
  const onSignal = (signal: string): void => {
    if (signalled) {
      log.warn({ signal }, 'second signal: exiting at once');
      process.exit(1);
    }
    signalled = true;
    log.info({ signal }, 'shutting down');
    gateway.drain().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'drain failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

void main();
