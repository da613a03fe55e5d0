// The publisher's commands: publish, status, gc, verify. Each action imports what it runs (see cli.ts).
import type { Command } from 'commander';
import { UsageError } from '../shared/exit.js';

export function registerPublisherCommands(program: Command, setExit: (code: number) => void): void {
  program
    .command('publish')
    .description('sync repos from their sources into the store and publish them atomically')
    .argument('[repo...]', 'repos to publish (default: all in the config)')
    .option('-c, --config <file>', 'config file (default: $DERRICK_CONFIG or ./derrick.yaml)')
    .option('--no-fetch', 'publish from the store only, with no network')
    .option('--force-fetch', 're-fetch every manifest and re-verify every blob')
    .option('--dry-run', 'show what would change; fetch and write nothing')
    .option('--wait <duration>', 'wait this long for a busy repo instead of exiting 75')
    .option('--log-format <format>', 'text or json', 'text')
    .option('--catalog', 'also write the static catalog page (public repos) into <root>/published/ui')
    .option('--no-push', 'do not push to targets: afterwards')
    .action(async (repos: string[], o) => {
      const [{ loadConfigOrExit, parseWait }, { createLogger }, { exitCodeFor, runPublish }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('../shared/log.js'),
        import('./run-publish.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      if (o.fetch === false && o.forceFetch) throw new UsageError('--no-fetch and --force-fetch exclude each other');
      const unknown = repos.filter((r) => !config.repos.some((c) => c.name === r));
      if (unknown.length) throw new UsageError(`${config.file}: no repo named ${unknown.join(', ')} in repos:`);
      const json = o.logFormat === 'json';
      const log = createLogger({ json });
      const outcomes = await runPublish({
        config,
        repos,
        policy: o.fetch === false ? 'no-fetch' : o.forceFetch ? 'force-fetch' : 'default',
        dryRun: !!o.dryRun,
        waitMs: parseWait(o.wait),
        log,
        progress: !json && process.stderr.isTTY,
        print: json ? undefined : (line, isError) => (isError ? console.error(line) : console.log(line)),
      });
      // The catalog is written after the repos, from what is published now (even if a repo failed).
      const catalog = (o.catalog || config.catalog) && !o.dryRun ? await (await import('./catalog/cli-step.js')).catalogStep(config, log, parseWait(o.wait), json) : 0;
      let code = exitCodeFor(outcomes) || catalog;
      // The local publish is done whatever the edges do; a failed target only makes the exit 1.
      if (o.push !== false && !o.dryRun && config.targets.length) {
        const { pushExitCode, runPush } = await import('./push/run-push.js');
        const print = (line: string, isError: boolean) => (isError ? console.error(line) : console.log(line));
        const pushed = await runPush({ config, waitMs: parseWait(o.wait), log, print: json ? undefined : print });
        if (pushExitCode(pushed) && code === 0) code = 1;
      }
      setExit(code);
    });

  program
    .command('push')
    .description('send what this host serves to the edge hosts in targets: (all, or the ones named)')
    .argument('[target...]', 'targets to push to (default: all in the config)')
    .option('-c, --config <file>', 'config file')
    .option('--wait <duration>', 'wait this long for a push to the same target that is still running')
    .action(async (targets: string[], o) => {
      const [{ loadConfigOrExit, parseWait }, { createLogger }, { pushExitCode, runPush }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('../shared/log.js'),
        import('./push/run-push.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      const unknown = targets.filter((t) => !config.targets.some((c) => c.name === t));
      if (unknown.length) throw new UsageError(`${config.file}: no target named ${unknown.join(', ')} in targets:`);
      if (!config.targets.length) throw new UsageError(`${config.file}: no targets: to push to`);
      const results = await runPush({
        config, targets, waitMs: parseWait(o.wait), log: createLogger(),
        print: (line, isError) => (isError ? console.error(line) : console.log(line)),
      });
      setExit(pushExitCode(results));
    });

  program
    .command('status')
    .description('show each repo: tags, current publish, size, state')
    .option('-c, --config <file>', 'config file')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const [{ loadConfigOrExit }, { formatBytes }, { cacheUsage, formatStatusTable, formatTargetTable, repoStatus, targetStatus }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('../shared/units.js'),
        import('./status.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      const rows = await repoStatus(config);
      const cache = config.upstreams.length ? await cacheUsage(config, rows) : undefined;
      const targets = config.targets.length ? await targetStatus(config) : undefined;
      if (o.json) return console.log(JSON.stringify({ repos: rows, cache, targets }, null, 2));
      console.log(formatStatusTable(rows));
      if (targets) console.log(`\n${formatTargetTable(targets)}`);
      if (cache) {
        const max = cache.maxSize !== undefined ? ` of max ${formatBytes(cache.maxSize)}` : ' (no max-size)';
        console.log(`\npull-through cache: ${cache.images} images, ${formatBytes(cache.bytes)}${max}`);
      }
    });

  program
    .command('verify')
    .description('check that every served publish is complete (web/app links, files, tags/list); --repair republishes damaged repos')
    .argument('[repo...]', 'repos to check (default: every repo in the config and in the published tree)')
    .option('-c, --config <file>', 'config file')
    .option('--deep', 'also hash every manifest and blob')
    .option('--repair', 're-verify the store, fetch again what it lost, and republish each damaged repo')
    .option('--wait <duration>', 'wait this long for a busy repo instead of exiting 75')
    .action(async (repos: string[], o) => {
      const [{ loadConfigOrExit, parseWait }, { createLogger }, { runVerify }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('../shared/log.js'),
        import('./run-verify.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      const code = await runVerify({
        config,
        repos,
        deep: !!o.deep,
        repair: !!o.repair,
        waitMs: parseWait(o.wait),
        log: createLogger(),
        progress: process.stderr.isTTY,
        print: (line) => (line.startsWith('error:') ? console.error(line) : console.log(line)),
      });
      setExit(code);
    });

  program
    .command('gc')
    .description('delete expired masters and store objects nothing references')
    .option('-c, --config <file>', 'config file')
    .option('--dry-run', 'list what would be deleted')
    .option('--wait <duration>', 'wait this long for running publishes')
    .action(async (o) => {
      const [{ loadConfigOrExit, parseWait }, { formatBytes }, { runGc }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('../shared/units.js'),
        import('./gc.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      const r = await runGc(config, { dryRun: !!o.dryRun, waitMs: parseWait(o.wait) });
      const verb = o.dryRun ? 'would delete' : 'deleted';
      for (const m of r.masters) console.log(`${verb} master ${m}`);
      for (const b of r.blobs) console.log(`${verb} blob ${b.digest} (${formatBytes(b.size)})`);
      const bytes = r.blobs.reduce((a, b) => a + b.size, 0);
      const young = r.young ? `; ${r.young} unreferenced blobs younger than grace kept` : '';
      console.log(`gc: ${verb} ${r.masters.length} masters and ${r.blobs.length} blobs (${formatBytes(bytes)})${young}`);
    });
}
