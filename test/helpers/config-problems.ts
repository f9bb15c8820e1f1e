import { ConfigError, loadConfig } from '../../src/config.js';

/** The problems loadConfig reports for `env` (all at once), or [] when it loads. */
export function configProblems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  return [];
}
