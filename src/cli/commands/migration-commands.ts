// Commands that act on one migration: start, status, list, approve, pause, resume, throttle, promote, abort.
import type { Command } from 'commander';
import { userInfo } from 'node:os';
import { renderStatus, webUiUrl, when } from '../format';
import { follow, uiBase, withTidemark, type GlobalOptions } from '../context';
import { parseDuration } from '../../plan/durations';
import { F } from '../../migration/failures';
import { LIMITS, outOfBounds, type Bounds } from '../../migration/limits';
import { CliError, EXIT } from '../errors';
import { stateColor } from '../style';
import type { UpdateAck } from '../../migration/messages';

export const who = () => process.env.TIDEMARK_OPERATOR ?? userInfo().username;

/** Parses an integer option within the same bounds the workflow's validators enforce. */
function intOption(name: string, bounds: Bounds) {
  return (v: string) => {
    const n = Number(v);
    const bad = outOfBounds(name, n, bounds);
    if (bad) throw new CliError(`${bad}, got "${v}"`, F.Usage);
    return n;
  };
}

interface ThrottleOptions {
  batchSize?: number;
  adaptive?: boolean;
  delayMs?: number;
  maxLatencyIncrease?: number | 'unlimited' | 'plan';
  json?: boolean;
}

/**
 * `--max-latency-increase`: `50%` → 0.5, `unlimited`, or `plan` (the plan's budget again; sent as null, since
 * commander keeps a parser's null as an empty string).
 */
function budgetOption(v: string): number | 'unlimited' | 'plan' {
  if (v === 'plan' || v === 'unlimited') return v;
  const m = /^(\d+(?:\.\d+)?)%$/.exec(v);
  const f = m ? Number(m[1]) / 100 : NaN;
  if (!(f >= 0.01 && f <= 10))
    throw new CliError(
      `--max-latency-increase must be a percentage from 1% to 1000%, unlimited or plan, got "${v}"`,
      F.Usage,
    );
  return f;
}

/** `--progress-every`: how often `--watch` writes a progress line when its output is not a terminal. */
const progressEvery: [string, string, (v: string) => number] = [
  '--progress-every <duration>',
  'with --watch, when the output is not a terminal: a progress line this often (default 10s)',
  (v: string) => {
    const ms = parseDuration(v);
    if (ms === undefined || ms < 100)
      throw new CliError(`--progress-every must be a duration like 10s, got "${v}"`, F.Usage);
    return ms;
  },
];

/** How long `abort --no-wait` waits for a worker to take the abort before it signals it instead. */
const NO_WAIT_ANSWER_MS = 10_000;

function printAck(ack: UpdateAck, json?: boolean) {
  if (json) console.log(JSON.stringify(ack));
  else console.log(`${ack.message} (state: ${ack.state})`);
}

export function registerMigrationCommands(program: Command, globals: () => GlobalOptions): void {
  program
    .command('start <plan>')
    .description('validate a plan and start its migration')
    .option('--auto-approve', 'grant every approval automatically')
    .option('--watch', 'follow the migration until it ends')
    .option(...progressEvery)
    .option('--json', 'print JSON')
    .option('--by <name>', 'who starts it (shown in status)')
    .option('--rerun', 'start a plan whose last run completed (steps the ledger holds are not applied again)')
    .action(
      async (
        planFile: string,
        o: {
          autoApprove?: boolean;
          watch?: boolean;
          json?: boolean;
          by?: string;
          rerun?: boolean;
          progressEvery?: number;
        },
      ) => {
        const { loadCheckedPlan } = await import('../../plan/queries');
        const plan = await loadCheckedPlan(planFile);
        await withTidemark(globals(), async (c) => {
          if (!(await c.hasWorkers()) && !o.json) {
            console.error(
              `warning: no worker is polling task queue "${c.taskQueue}"; the migration waits until one starts (tidemark worker)`,
            );
          }
          const started = await c.start(plan, {
            autoApprove: !!o.autoApprove,
            startedBy: o.by ?? who(),
            ...(o.rerun ? { rerun: true } : {}),
          });
          if (!o.watch) {
            if (o.json) console.log(JSON.stringify(started));
            else
              console.log(
                `started ${started.workflowId} (run ${started.runId})\nWeb UI: ${webUiUrl(uiBase(c.address), c.namespace, started.workflowId)}`,
              );
            return;
          }
          if (!o.json)
            console.log(
              `started ${started.workflowId}; Web UI: ${webUiUrl(uiBase(c.address), c.namespace, started.workflowId)}`,
            );
          const final = await follow(c, started.workflowId, { json: o.json, progressEveryMs: o.progressEvery });
          if (final.state !== 'completed') process.exitCode = EXIT.failed;
        });
      },
    );

  program
    .command('status <id>')
    .description('phases, progress, flag, gates and pending approval of a migration (plan name or workflow id)')
    .option('--watch', 'follow until the migration ends')
    .option(...progressEvery)
    .option('--json', 'print JSON')
    .action(async (id: string, o: { watch?: boolean; json?: boolean; progressEvery?: number }) => {
      await withTidemark(globals(), async (c) => {
        if (o.watch) {
          // Like `start --watch`: the exit code says whether the migration completed.
          const final = await follow(c, id, { json: o.json, progressEveryMs: o.progressEvery });
          if (final.state !== 'completed') process.exitCode = EXIT.failed;
          return;
        }
        const s = await c.status(id);
        if (o.json) console.log(JSON.stringify(s, null, 2));
        else console.log(renderStatus(s, s.live, uiBase(c.address), c.namespace));
      });
    });

  program
    .command('list')
    .description('every migration the server knows, newest first')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      await withTidemark(globals(), async (c) => {
        const rows = await c.list();
        if (o.json) return void console.log(JSON.stringify(rows, null, 2));
        if (!rows.length) return void console.log('no migrations');
        // Reruns of a plan share its workflow id: the run id tells them apart, KIND a migration from its revert.
        console.log(
          `${'PLAN'.padEnd(24)} ${'KIND'.padEnd(9)} ${'STATE'.padEnd(17)} ${'PHASE'.padEnd(10)} ${'STARTED (UTC)'.padEnd(20)} RUN ID`,
        );
        for (const r of rows) {
          console.log(
            `${r.plan.padEnd(24)} ${r.kind.padEnd(9)} ${stateColor(r.state ?? r.status.toLowerCase(), (r.state ?? r.status.toLowerCase()).padEnd(17))} ${(r.phase ?? '').padEnd(10)} ${when(r.startTime).slice(0, 19).padEnd(20)} ${r.runId}`,
          );
        }
      });
    });

  program
    .command('approve <id>')
    .description('approve what the migration is waiting for')
    .option('--by <name>', 'who approves')
    .option('--comment <text>', 'why')
    .option('--gate <gate>', 'approve only if this is what waits (as status names it: schema, traffic:50%, cleanup, …)')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { by?: string; comment?: string; gate?: string; json?: boolean }) => {
      await withTidemark(globals(), async (c) =>
        printAck(await c.approve(id, { by: o.by ?? who(), comment: o.comment, gate: o.gate }), o.json),
      );
    });

  program
    .command('pause <id>')
    .description('hold at the next safe point (between batches or stages)')
    .option('--reason <text>', 'why')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { reason?: string; json?: boolean }) => {
      await withTidemark(globals(), async (c) => printAck(await c.pause(id, { by: who(), reason: o.reason }), o.json));
    });

  program
    .command('resume <id>')
    .description('continue a paused migration')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      await withTidemark(globals(), async (c) => printAck(await c.resume(id, { by: who() }), o.json));
    });

  program
    .command('throttle <id>')
    .description('change a running copy: fixed batch size and/or a delay between batches')
    .option(
      '--batch-size <n>',
      'rows per batch (fixed; replaces the adaptive size)',
      intOption('--batch-size', LIMITS.batchSize),
    )
    .option('--adaptive', 'go back to the adaptive batch size')
    .option('--delay-ms <n>', 'pause between batches', intOption('--delay-ms', LIMITS.delayMs))
    .option(
      '--max-latency-increase <budget>',
      "the copy's latency budget in place of the plan's: a percentage like 50%, unlimited, or plan (the plan's again)",
      budgetOption,
    )
    .option('--json', 'print JSON')
    .action(async (id: string, o: ThrottleOptions) => {
      if (o.adaptive && o.batchSize !== undefined)
        throw new CliError('give --batch-size or --adaptive, not both', F.Usage);
      if (o.batchSize === undefined && !o.adaptive && o.delayMs === undefined && o.maxLatencyIncrease === undefined)
        throw new CliError('give --batch-size, --adaptive, --delay-ms and/or --max-latency-increase', F.Usage);
      const batchSize = o.adaptive ? null : o.batchSize;
      const budget = o.maxLatencyIncrease === 'plan' ? null : o.maxLatencyIncrease;
      const req = { by: who(), batchSize, delayMs: o.delayMs, maxLatencyIncrease: budget };
      await withTidemark(globals(), async (c) => printAck(await c.throttle(id, req), o.json));
    });

  program
    .command('promote <id>')
    .description('end the current soak (or cleanup delay) early and move on')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      await withTidemark(globals(), async (c) => printAck(await c.promote(id, { by: who() }), o.json));
    });

  program
    .command('abort <id>')
    .description('roll the migration back (compensations newest first) and wait for the rollback')
    .option('--reason <text>', 'why')
    .option('--restore-backup', "after the compensations, restore the backed-up tables' contents")
    .option('--no-wait', 'return once the abort is accepted (or, with no worker answering in 10 s, signalled)')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { reason?: string; restoreBackup?: boolean; wait: boolean; json?: boolean }) => {
      await withTidemark(globals(), async (c) => {
        const req = { by: who(), reason: o.reason, restoreBackup: !!o.restoreBackup };
        if (!o.wait) {
          const ack = await c.abortOrSignal(id, req, NO_WAIT_ANSWER_MS);
          if (typeof ack !== 'string') return printAck(ack, o.json);
          const message = `${ack}: abort signalled; the rollback starts when a worker runs (tidemark status ${id})`;
          return console.log(o.json ? JSON.stringify({ accepted: true, signalled: true, message }) : message);
        }
        await c.abort(id, req);
        if (!o.json) console.log('abort accepted; rolling back…');
        // A rollback held on a failed undo waits for an operator (resume, or abort again): say so and return.
        const final = await follow(c, id, { json: o.json, until: (s) => !!s.paused?.rollbackHeld });
        if (final.state !== 'rolled-back') process.exitCode = EXIT.failed;
      });
    });
}
