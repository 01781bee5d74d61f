// `tidemark plan check <plan> [--rehearse]`: validates a plan, reviews its SQL, and optionally rehearses it.
import { budgetText, maxLatencyIncreaseOf } from '../../phases/copy/budget';
import type { Command } from 'commander';
import type { LintFinding, LintSeverity } from '../../plan/lint';
import type { RehearsalReport } from '../../rehearsal';
import { F } from '../../migration/failures';
import { CliError, EXIT } from '../errors';
import { formatDuration } from '../../plan/durations';
import { redact } from '../../secrets';
import type { ResolvedPlan } from '../../plan/types';
import { describeKey } from '../../plan/keys';

export function describePlan(p: ResolvedPlan): string[] {
  const lines = [`plan ${p.name} is valid (sha256 ${p.source.sha256.slice(0, 12)})`];
  lines.push(`  database: $${p.database.urlEnv} on the worker`);
  lines.push(
    `  approvals: ${p.approvals.length ? p.approvals.join(', ') : 'none'} (timeout ${formatDuration(p.approvalTimeout)}, then ${p.onApprovalTimeout})`,
  );
  lines.push(
    `  backup: ${p.backup.enabled ? `${p.backup.tables?.join(', ') ?? 'whole database'} into ${p.backup.dir}` : 'disabled'}`,
  );
  lines.push(`  preflight: ${p.preflight.checks.length} plan check(s)`);
  for (const s of p.schema)
    lines.push(
      `  schema ${s.id}: ${s.up.path} (down ${s.down.path})${s.transactional ? '' : ', outside a transaction'}`,
    );
  for (const j of p.copy) {
    const budget = maxLatencyIncreaseOf(j);
    lines.push(
      `  copy ${j.name}: ${j.from ?? 'query'} → ${j.to} by ${describeKey(j)}, sync ${j.sync}, batch ${j.batchSize} (target ${j.targetBatchMs}ms)${j.parallel > 1 ? `, ${j.parallel} ranges in parallel` : ''}, ${Number.isFinite(budget) ? `on a shared server at most ${budgetText(budget)} commit latency` : 'no latency budget: holds back only for lock waits and a struggling server'}`,
    );
  }
  lines.push(
    `  validate: ${p.validate.length ? `${p.validate.length} check(s)` : 'row count + checksum of every copy job (default)'}`,
  );
  if (p.traffic) {
    const stages = p.traffic.stages
      .map((s) => `${s.percent}% for ${formatDuration(s.soak)}${s.approval ? ' (approval)' : ''}`)
      .join(' → ');
    lines.push(`  traffic: flag ${p.traffic.flag}: ${stages}; ${p.traffic.gates.length} gate(s)`);
  }
  if (p.cleanup) {
    lines.push(
      `  cleanup: after ${formatDuration(p.cleanup.after)}, archive ${p.cleanup.archive.join(', ') || 'nothing'}${p.cleanup.dropAfter !== undefined ? `, drop after ${formatDuration(p.cleanup.dropAfter)}` : ', keep archived tables'}`,
    );
    for (const s of p.cleanup.steps ?? [])
      lines.push(`  cleanup step ${s.id}: ${s.up.path} (down ${s.down.path}), after the archive`);
  }
  return lines;
}

const MARK: Record<LintSeverity, string> = { error: 'ERROR  ', danger: 'DANGER ', warning: 'warning' };

export function describeLint(findings: LintFinding[]): string[] {
  if (!findings.length) {
    return [
      'SQL review: no destructive or locking changes found (changes to tables a step creates, and a down dropping them, are not flagged)',
    ];
  }
  const lines = [`SQL review: ${findings.length} finding(s)`];
  for (const f of findings) {
    lines.push(`  ${MARK[f.severity]} ${f.at} (${f.file}:${f.line}, statement ${f.statement}): ${f.message}`);
    lines.push(`           why:     ${f.why}`);
    lines.push(`           instead: ${f.instead}`);
  }
  return lines;
}

export function describeRehearsal(r: RehearsalReport): string[] {
  const lines = ['rehearsal against the database (inside a transaction that is rolled back):'];
  const counts = (s: string) => r.preflight.findings.filter((f) => f.status === s).length;
  lines.push(
    `  preflight: ${r.preflight.ok ? 'ok' : 'FAILED'} (${counts('ok')} ok, ${counts('warn')} warning(s), ${counts('fail')} failure(s))`,
  );
  for (const f of r.preflight.findings) lines.push(`    ${f.status.padEnd(4)} ${f.check}: ${f.message}`);
  for (const s of r.steps) {
    const outcome =
      s.outcome === 'ok' ? 'ok' : s.outcome === 'applied-earlier' ? 'applied earlier' : s.outcome.toUpperCase();
    lines.push(`  step ${s.id}: ${outcome} — ${s.message}`);
    for (const g of s.difference?.gone ?? []) lines.push(`      missing afterwards: ${g}`);
    for (const a of s.difference?.added ?? []) lines.push(`      left behind:        ${a}`);
  }
  if (!r.steps.length) lines.push('  no schema steps to rehearse');
  for (const q of r.queries) {
    const mark = q.outcome === 'ok' ? 'ok' : q.outcome === 'unreadable' ? 'WARNING, cannot be read now' : 'not tried';
    lines.push(`  ${q.kind} "${q.name}": ${mark} — ${q.message}`);
  }
  if (r.queries.some((q) => q.kind === 'gate' && q.outcome === 'unreadable')) {
    lines.push(
      '    (a gate that cannot be read during a soak pauses the rollout; fine if the application creates what it reads)',
    );
  }
  for (const s of r.syncs) {
    lines.push(`  sync of copy job ${s.job}: ${s.ok ? 'ok' : 'FAILED'} — ${s.message}`);
    if (s.warning) lines.push(`    WARNING: ${s.warning}`);
  }
  lines.push(`  database unchanged by the rehearsal: ${r.unchanged ? 'yes' : 'NO'}`);
  return lines;
}

export function registerPlanCommands(program: Command): void {
  const plan = program.command('plan').description('work with plan files');
  plan
    .command('check <plan>')
    .description(
      'validate a plan, review its SQL for destructive or locking changes; --rehearse also tries it against the database',
    )
    .option(
      '--rehearse',
      "run preflight and each step's up → down → up against the database in a transaction that is rolled back",
    )
    .option('--strict', 'fail (exit 1) on any finding, not only on errors')
    .option('--json', 'print JSON')
    .action(async (file: string, o: { rehearse?: boolean; strict?: boolean; json?: boolean }) => {
      // Loaded here, not at start-up: the parser, pg and libpg-query are only needed by this command.
      const { loadCheckedPlan } = await import('../../plan/queries');
      const { lintPlan } = await import('../../plan/lint');
      const p = await loadCheckedPlan(file);
      let ok: boolean;
      let report: unknown;
      const lines = describePlan(p);
      if (o.rehearse) {
        const url = process.env[p.database.urlEnv];
        if (!url)
          throw new CliError(
            `set ${p.database.urlEnv} (the plan's database.urlEnv) to the database to rehearse against`,
            F.Usage,
          );
        const { Pool } = await import('pg');
        const { poolConfig } = await import('../../db/pool');
        const { rehearsePlan } = await import('../../rehearsal');
        // A blue-green plan is rehearsed on both databases: its steps run on the target by default.
        const targetUrl = p.target ? process.env[p.target.urlEnv] : undefined;
        if (p.target && !targetUrl)
          throw new CliError(
            `set ${p.target.urlEnv} (the plan's target.urlEnv) to the target database to rehearse against`,
            F.Usage,
          );
        const pool = new Pool(poolConfig(url, 2));
        const target = targetUrl ? new Pool(poolConfig(targetUrl, 2)) : undefined;
        try {
          const r = await rehearsePlan(pool, p, target);
          report = { plan: p.name, ...r };
          ok = r.ok && r.unchanged && !(o.strict && (r.lint.length || r.syncs.some((s) => s.warning)));
          lines.push('', ...describeLint(r.lint), '', ...describeRehearsal(r));
        } finally {
          await pool.end();
          await target?.end();
        }
      } else {
        const lint = await lintPlan(p);
        report = { plan: p.name, lint };
        ok = !lint.some((f) => f.severity === 'error') && !(o.strict && lint.length);
        lines.push('', ...describeLint(lint));
      }
      console.log(redact(o.json ? JSON.stringify(report, null, 2) : lines.join('\n')));
      if (!ok) process.exitCode = EXIT.failed;
    });
}
