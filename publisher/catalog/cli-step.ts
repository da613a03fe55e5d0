// The catalog step of `derrick publish`: one summary line, or an error line and exit status 1
// (75 when another run is writing it and --wait ran out).
import type { Config } from '../../shared/config.js';
import type { Logger } from '../../shared/log.js';
import { LockBusyError } from '../../shared/publish/lock.js';
import { writeStaticCatalog } from './write.js';

export async function catalogStep(config: Config, log: Logger, waitMs: number, json: boolean): Promise<number> {
  try {
    const r = await writeStaticCatalog(config, log, waitMs);
    if (json) log.info({ dir: r.dir, repos: r.repos }, 'static catalog written');
    else console.log(`catalog: ${r.repos} public repos written to ${r.dir}`);
    return 0;
  } catch (err) {
    const busy = err instanceof LockBusyError;
    console.error(`error: static catalog: ${(err as Error).message}`);
    return busy ? 75 : 1;
  }
}
