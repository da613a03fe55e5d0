// The redirector's commands: serve and nginx-conf. Each action imports what it runs (see cli.ts).
import type { Command } from 'commander';
import { setFlagsFromString } from 'node:v8';
import { FatalError, UsageError } from '../shared/exit.js';

export function registerRedirectorCommands(program: Command): void {
  program
    .command('serve')
    .description('answer the Registry v2 pull API for the published tree')
    .option('-c, --config <file>', 'config file (default: $DERRICK_CONFIG or ./derrick.yaml)')
    .option('--listen <host:port>', 'override serve.listen')
    .option('--log-level <level>', 'pino level (info shows access logs)', undefined)
    .option('--no-fetch', 'pull-through: serve the cache only (policy Never on every route)')
    .option('--force-fetch', 'pull-through: resolve every tag upstream (policy Always on every route)')
    .option('--workers <n|auto>', 'override serve.workers: processes answering on the port (auto: one per CPU)')
    .action(async (o) => {
      // A long-running server bounded by its memory goals (issue 10): V8 then keeps its heap
      // close to what is live instead of letting evicted repos pile up as garbage (RSS after
      // 2,000 GETs over 10k repos: ~158 -> ~88 MB; warm req/s unchanged in the bench). It is a
      // runtime flag, set before anything else is loaded; an explicit one (node --no-optimize-for-size,
      // NODE_OPTIONS) wins.
      const explicit = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => a.includes('optimize-for-size'));
      if (!explicit) setFlagsFromString('--optimize-for-size');
      // serve.js is light (it binds before loading the rest), so these load in parallel.
      const [{ loadConfigOrExit }, { createLogger }, { startServer, ListenError }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('../shared/log.js'),
        import('./serve.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      if (o.listen && !/^.*:\d{1,5}$/.test(o.listen)) throw new UsageError(`--listen: "${o.listen}" is not HOST:PORT`);
      const log = createLogger({ level: o.logLevel ?? process.env.DERRICK_LOG_LEVEL ?? 'warn', json: true });
      if (o.fetch === false && o.forceFetch) throw new UsageError('--no-fetch and --force-fetch exclude each other');
      const policy = o.fetch === false ? 'Never' : o.forceFetch ? 'Always' : undefined;
      if (o.workers !== undefined && !/^(auto|[1-9]\d{0,2})$/.test(o.workers)) throw new UsageError(`--workers: "${o.workers}" is not a number from 1 to 999 or auto`);
      const cluster = (await import('node:cluster')).default;
      if (cluster.isPrimary) {
        const { resolveWorkers, runPrimary } = await import('./cluster.js');
        const workers = resolveWorkers(o.workers === undefined ? config.serve.workers : o.workers === 'auto' ? 'auto' : Number(o.workers));
        if (workers > 1) {
          const onListening = (url: string, repos: number) => console.log(`derrick serve: listening on ${url} (${repos} repos, ${workers} workers)`);
          const code = await runPrimary({ workers, log, forwardHup: !!config.serve.tls, onListening });
          if (code !== 0) throw new FatalError(`serve: a worker exited with code ${code} before the cluster was up (its error is above)`, code);
          return;
        }
      }
      const { TlsPairError } = await import('./listener.js');
      let server;
      try {
        server = await startServer(config, { listen: o.listen, log, policy });
      } catch (err) {
        // One line that says what to change, not a stack trace.
        if (err instanceof ListenError) {
          const from = o.listen ? 'set by --listen' : `serve.listen in ${config.file}, or --listen`;
          throw new FatalError(`cannot listen on ${err.address} (${from}): ${err.reason}`);
        }
        throw err instanceof TlsPairError ? new UsageError(err.message) : err;
      } finally {
        // Listening goes through the IPC channel; after that it must not keep a failed or drained worker alive.
        if (cluster.isWorker) process.channel?.unref();
      }
      if (cluster.isWorker) process.send?.({ derrick: 'listening', url: server.url, repos: server.index.size() });
      else console.log(`derrick serve: listening on ${server.url} (${server.index.size()} repos)`);
      // Certificate rotation: the new pair serves new connections; open ones are left alone.
      // A worker always handles SIGHUP: a process-group hangup (or `kill -HUP -PGID`) must not kill
      // every worker and the connections they hold when there is nothing to reload.
      const onHup = () => void server.reloadTls();
      if (config.serve.tls) process.on('SIGHUP', onHup);
      else if (cluster.isWorker) process.on('SIGHUP', () => log.debug('SIGHUP: nothing to reload (serve.tls is not set)'));
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (sig: string) => {
          // A worker may get the signal twice (from the primary and from its process group).
          if (stopping) return;
          stopping = true;
          log.info({ sig }, 'shutting down');
          const force = setTimeout(() => process.exit(0), 10_000);
          force.unref();
          void server.close().then(resolve);
        };
        process.on('SIGTERM', () => stop('SIGTERM'));
        process.on('SIGINT', () => stop('SIGINT'));
      });
    });

  program
    .command('nginx-conf')
    .description('print an nginx server block that serves the published tree')
    .option('-c, --config <file>', 'config file')
    .option('--listen <port-or-host:port>', 'nginx listen directive')
    .option('--proxy <host:port>', 'also proxy /v2/ to derrick serve at this address')
    .option('--tls', 'serve HTTPS with the certificate and key of serve.tls (listen default 443)')
    .option('--upstream-servers <list>', 'print a load balancer for these derrick serve replicas instead (HOST:PORT,HOST:PORT)')
    .action(async (o) => {
      if (o.upstreamServers !== undefined) {
        const [{ loadConfigOrExit }, { nginxLbConf, parseUpstreamServers }] = await Promise.all([import('../shared/cli-util.js'), import('./nginx-lb-conf.js')]);
        let servers: string[];
        try {
          servers = parseUpstreamServers(o.upstreamServers);
        } catch (err) {
          throw new UsageError((err as Error).message);
        }
        const config = loadConfigOrExit(o.config);
        return void process.stdout.write(nginxLbConf(servers, { listen: o.listen, upstreamTls: !!config.serve.tls }));
      }
      const [{ loadConfigOrExit }, { nginxConf }, { guardedUnderOpenPrefixes }] = await Promise.all([
        import('../shared/cli-util.js'),
        import('./nginx-conf.js'),
        import('./nginx-guards.js'),
      ]);
      const config = loadConfigOrExit(o.config);
      if (o.tls && !config.serve.tls) throw new UsageError(`--tls: ${config.file} has no serve.tls (cert and key)`);
      const guardedNames = await guardedUnderOpenPrefixes(config);
      process.stdout.write(nginxConf(config, { listen: o.listen, proxy: o.proxy, tls: o.tls === true, guardedNames }));
    });
}
