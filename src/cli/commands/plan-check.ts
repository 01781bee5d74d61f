// `tidemark plan check <plan>`: validates a plan and says what it would do, touching no database.
import type { Command } from 'commander';
import { formatDuration } from '../../plan/durations';
import { loadPlan } from '../../plan/load';
import type { ResolvedPlan } from '../../plan/types';

export function describePlan(p: ResolvedPlan): string[] {
  const lines = [`plan ${p.name} is valid (sha256 ${p.source.sha256.slice(0, 12)})`];
  lines.push(`  database: $${p.database.urlEnv} on the worker`);
  lines.push(`  approvals: ${p.approvals.length ? p.approvals.join(', ') : 'none'} (timeout ${formatDuration(p.approvalTimeout)}, then ${p.onApprovalTimeout})`);
  lines.push(`  backup: ${p.backup.enabled ? `${p.backup.tables?.join(', ') ?? 'whole database'} into ${p.backup.dir}` : 'disabled'}`);
  lines.push(`  preflight: ${p.preflight.checks.length} plan check(s)`);
  for (const s of p.schema) lines.push(`  schema ${s.id}: ${s.up.path} (down ${s.down.path})${s.transactional ? '' : ', outside a transaction'}`);
  for (const j of p.copy) {
    lines.push(`  copy ${j.name}: ${j.from ?? 'query'} → ${j.to} by ${j.key}, sync ${j.sync}, batch ${j.batchSize} (target ${j.targetBatchMs}ms)${j.parallel > 1 ? `, ${j.parallel} ranges in parallel` : ''}`);
  }
  lines.push(`  validate: ${p.validate.length ? `${p.validate.length} check(s)` : 'row count + checksum of every copy job (default)'}`);
  if (p.traffic) {
    const stages = p.traffic.stages.map((s) => `${s.percent}% for ${formatDuration(s.soak)}${s.approval ? ' (approval)' : ''}`).join(' → ');
    lines.push(`  traffic: flag ${p.traffic.flag}: ${stages}; ${p.traffic.gates.length} gate(s)`);
  }
  if (p.cleanup) {
    lines.push(
      `  cleanup: after ${formatDuration(p.cleanup.after)}, archive ${p.cleanup.archive.join(', ') || 'nothing'}${p.cleanup.dropAfter !== undefined ? `, drop after ${formatDuration(p.cleanup.dropAfter)}` : ', keep archived tables'}`,
    );
  }
  return lines;
}

export function registerPlanCommands(program: Command): void {
  const plan = program.command('plan').description('work with plan files');
  plan
    .command('check <plan>')
    .description('validate a plan file and print what it would do (no database is touched)')
    .option('--json', 'print the resolved plan as JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const p = loadPlan(file);
      if (o.json) console.log(JSON.stringify(p, null, 2));
      else console.log(describePlan(p).join('\n'));
    });
}
