#!/usr/bin/env -S node --v8-pool-size=1
// derrick's single entry point. Publisher and redirector register their own commands and never import each other.
// Only the command definitions load here; each command imports what it runs once it is chosen,
// so `--help` or `serve` never pays for the publisher's modules, nor `publish` for the server's.
// The shebang passes shared/node-flags.ts's flags (a test keeps the two equal): `node dist/cli.js` runs without them.
import { Command, CommanderError } from 'commander';
import { LockBusyError } from './shared/publish/lock.js';
import { registerPublisherCommands } from './publisher/cli.js';
import { registerRedirectorCommands } from './redirector/cli.js';
import { EXIT, FatalError, UsageError } from './shared/exit.js';

let exitCode: number = EXIT.ok;
const program = new Command('derrick')
  .description('a static atomic container image publisher with a thin Registry v2 redirect server')
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });
registerPublisherCommands(program, (c) => (exitCode = c));
registerRedirectorCommands(program);

try {
  await program.parseAsync(process.argv);
  process.exitCode = exitCode;
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : EXIT.usage;
  } else if (err instanceof UsageError) {
    console.error(`error: ${err.message}`);
    process.exitCode = EXIT.usage;
  } else if (err instanceof FatalError) {
    console.error(`error: ${err.message}`);
    process.exitCode = err.code;
  } else if (err instanceof LockBusyError) {
    console.error(`error: ${err.message}`);
    process.exitCode = EXIT.busy;
  } else {
    console.error(`error: ${(err as Error).stack ?? err}`);
    process.exitCode = EXIT.failed;
  }
}
