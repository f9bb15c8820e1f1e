/**
 * The optional Redis-family servers some tests run on, and the message a test
 * shows when it skips because one is missing (missingTool's wording).
 */
import { findTool, missingTool } from './proxies.js';

/** The redis-sentinel executable (Debian package redis-sentinel), or undefined. */
export const SENTINEL_BIN: string | undefined = findTool('redis-sentinel');
export const NO_SENTINEL = missingTool('redis-sentinel', 'redis-sentinel');

/** The valkey-server executable (Valkey 8; on Debian bookworm from bookworm-backports), or undefined. */
export const VALKEY_BIN: string | undefined = findTool('valkey-server');
export const NO_VALKEY = `${missingTool('valkey-server', 'valkey-server')}; on Debian bookworm it comes from bookworm-backports: apt-get install -y -t bookworm-backports valkey-server`;
