// The `tidemark` command: parses arguments, runs one command, maps errors to SPEC §3's exit codes and one-line messages.
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { Command, CommanderError } from 'commander';
import { registerDemoCommand } from './commands/demo';
import { registerLedgerCommands } from './commands/ledger-commands';
import { registerMigrationCommands } from './commands/migration-commands';
import { registerPlanCommands } from './commands/plan-check';
import { registerServerCommands } from './commands/servers';
import { createLogger, sdkLogFunction } from '../logger';
import { registerSecretsIn } from '../secrets';
import type { GlobalOptions } from './context';
import { CliError, errorLines, EXIT, exitCodeFor } from './errors';

export function buildProgram(): Command {
  const program = new Command('tidemark')
    .description('zero-downtime PostgreSQL migrations as durable Temporal workflows')
    .option('--verbose', 'print stack traces')
    .option('--address <host:port>', 'Temporal server (default $TEMPORAL_ADDRESS or localhost:7233)')
    .option('--namespace <ns>', 'Temporal namespace (default $TEMPORAL_NAMESPACE or default)')
    .option('--task-queue <name>', 'task queue (default $TIDEMARK_TASK_QUEUE or tidemark)')
    .showHelpAfterError()
    .exitOverride();
  const globals = () => program.opts<GlobalOptions>();
  registerServerCommands(program, globals);
  registerDemoCommand(program);
  registerPlanCommands(program);
  registerMigrationCommands(program, globals);
  registerLedgerCommands(program, globals);
  for (const c of program.commands) c.exitOverride();
  return program;
}

export async function main(argv: string[]): Promise<void> {
  // The SDK's own log goes through pino too; its chatter (worker state changes) only at warn level unless asked for.
  const sdkLevel = (process.env.TEMPORAL_LOG_LEVEL?.toUpperCase() as 'WARN' | undefined) ?? 'WARN';
  // No shutdown signals for the SDK: its default turns SIGINT/SIGTERM into "shut the workers down", which leaves
  // `status --watch` (no worker) deaf to them. The commands that run workers handle signals themselves.
  Runtime.install({
    logger: new DefaultLogger(sdkLevel, sdkLogFunction(createLogger({ name: 'temporal-sdk' }))),
    shutdownSignals: [],
  });
  // Connection strings in this process's environment: never printed (secrets.ts).
  registerSecretsIn(process.env);
  const program = buildProgram();
  let code: number;
  try {
    await program.parseAsync(argv);
    code = typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      code = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    } else {
      for (const line of errorLines(e)) console.error(line);
      if (program.opts<GlobalOptions>().verbose && e instanceof Error && e.stack) console.error(e.stack);
      code = exitCodeFor(e);
    }
  }
  // Pools, gRPC channels and the native runtime can keep the event loop alive; a finished command should not.
  process.exit(code);
}

export { CliError };
