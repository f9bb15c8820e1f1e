/**
 * The optional Redis-family servers some tests run on (listed, with their
 * Debian packages, in test/helpers/tools.ts). Tests skip through
 * needs('redis-sentinel') / needs('valkey-server'), which the skip reporter lists.
 */
import { findTool } from './tools.js';

/** The redis-sentinel executable (Debian package redis-sentinel), or undefined. */
export const SENTINEL_BIN: string | undefined = findTool('redis-sentinel');

/** The valkey-server executable (Valkey 8; on Debian bookworm from bookworm-backports), or undefined. */
export const VALKEY_BIN: string | undefined = findTool('valkey-server');
