// What every derrick command shares: exit codes and config loading that turns errors into exit 2.
import { ConfigError, loadConfig, type Config } from './config.js';
import { UsageError } from './exit.js';
import { parseDuration } from './units.js';

export { EXIT, FatalError, UsageError } from './exit.js';

export function loadConfigOrExit(file: string | undefined): Config {
  try {
    return loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
}

export function parseWait(text: string | undefined): number {
  if (text === undefined) return 0;
  const ms = parseDuration(text);
  if (ms === null) throw new UsageError(`--wait: "${text}" is not a duration (e.g. 30s, 5m)`);
  return ms;
}
