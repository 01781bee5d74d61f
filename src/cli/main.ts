// The `tidemark` command: parses arguments, runs one command, maps errors to SPEC §3's exit codes and one-line messages
// (JSON ones under --json). Command modules load their heavy dependencies (the Temporal client and worker, pg, the
// plan parser) inside their actions, so `--help`, `--version` and `completion` answer at once.
import { Command, CommanderError, Option } from 'commander';
import { registerCompletionCommand } from './commands/completion';
import { registerDemoCommand } from './commands/demo';
import { registerLedgerCommands } from './commands/ledger-commands';
import { registerMigrationCommands } from './commands/migration-commands';
import { registerPlanCommands } from './commands/plan-check';
import { registerServerCommands } from './commands/servers';
import { registerSecretsIn } from '../secrets';
import type { GlobalOptions } from './context';
import { CliError, errorJson, errorLines, EXIT, exitCodeFor } from './errors';
import { setColor } from './style';

export function version(): string {
  return (require('../../package.json') as { version: string }).version;
}

/** `json`: the command asked for JSON, so commander's own error text (and help) stays off stderr: main prints JSON. */
export function buildProgram({ json = false }: { json?: boolean } = {}): Command {
  const program = new Command('tidemark')
    .description('zero-downtime PostgreSQL migrations as durable Temporal workflows')
    .version(version(), '-V, --version', 'print the version')
    .option('--verbose', 'print stack traces')
    .option('--address <host:port>', 'Temporal server (default $TEMPORAL_ADDRESS or localhost:7233)')
    .option('--namespace <ns>', 'Temporal namespace (default $TEMPORAL_NAMESPACE or default)')
    .option('--task-queue <name>', 'task queue (default $TIDEMARK_TASK_QUEUE or tidemark)')
    .addOption(new Option('--no-color', 'no colour (also: NO_COLOR=1); colour is only ever used on a terminal'))
    .exitOverride();
  const globals = () => program.opts<GlobalOptions>();
  registerServerCommands(program, globals);
  registerDemoCommand(program, globals);
  registerPlanCommands(program);
  registerMigrationCommands(program, globals);
  registerCompletionCommand(program);
  registerLedgerCommands(program, globals);
  // A usage error is one line naming the command's help (SPEC: errors print one clear line), not the help itself.
  const oneLine = (c: Command, path: string) => {
    c.exitOverride().configureOutput({
      outputError: (text, write) =>
        json ? undefined : write(`${text.trim().replace(/\s*\n\s*/g, ' ')} (see ${path} --help)\n`),
    });
    for (const sub of c.commands) oneLine(sub, `${path} ${sub.name()}`);
  };
  oneLine(program, 'tidemark');
  // Colour is settled before any command prints.
  program.hook('preAction', () => setColor(program.opts<GlobalOptions>().color !== false));
  return program;
}

/** Whether the command being run asked for JSON (its errors are then JSON too). */
function wantsJson(argv: string[]): boolean {
  return argv.slice(2).includes('--json');
}

export async function main(argv: string[]): Promise<void> {
  // Connection strings in this process's environment: never printed (secrets.ts).
  registerSecretsIn(process.env);
  const json = wantsJson(argv);
  const program = buildProgram({ json });
  let code: number;
  try {
    await program.parseAsync(argv);
    code = typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      code = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
      if (code !== EXIT.ok && json)
        console.error(JSON.stringify({ error: e.message.replace(/^error: /, ''), code, type: 'Usage' }));
    } else {
      code = exitCodeFor(e);
      if (json) console.error(JSON.stringify(errorJson(e, code)));
      else for (const line of errorLines(e)) console.error(line);
      if (program.opts<GlobalOptions>().verbose && e instanceof Error && e.stack) console.error(e.stack);
    }
  }
  // Pools, gRPC channels and the native runtime can keep the event loop alive; a finished command should not.
  process.exit(code);
}

export { CliError };
