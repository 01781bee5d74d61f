// Renders for people: a migration's (or a revert's) status — phases, progress, flag, gates, pending approval,
// compensations — and the ledger's history of a plan's steps.
import type { LiveProgress } from '../client';
import { formatDuration } from '../plan/durations';
import { budgetFraction, budgetText } from '../phases/copy/budget';
import type { MigrationStatus } from '../migration/messages';
import { readable } from '../migration/readable';
import { c, stateColor } from './style';
import type { StepState } from '../plan/ledger';

const n = (x: number) => Math.round(x).toLocaleString('en-US');
/** Bytes as kB or MB (1024-based, like PostgreSQL's pg_size_pretty). */
const bytes = (x: number) => (x < 1048576 ? `${n(x / 1024)} kB` : `${(x / 1048576).toFixed(1)} MB`);

function elapsed(a?: string, b?: string): string {
  if (!a) return '';
  const ms = (b ? Date.parse(b) : Date.now()) - Date.parse(a);
  return formatDuration(Math.max(0, ms));
}

import { utc as when } from '../migration/readable';

export { when };

export function webUiUrl(uiBase: string, namespace: string, workflowId: string): string {
  return `${uiBase.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}

function phaseDetail(s: MigrationStatus, name: string, live: LiveProgress[]): string {
  if (name === 'copy') {
    return s.copy
      .map((c) => {
        // Never 100 % before the end: an estimate can be short (a table never analysed).
        const pct =
          c.estimatedTotal > 0 ? ` (${Math.min(99, Math.round((100 * c.rowsCopied) / c.estimatedTotal))}%)` : '';
        const rate = c.done
          ? ''
          : `, ${n(c.rowsPerSecond)} rows/s${c.etaSeconds !== null ? `, ETA ${formatDuration(c.etaSeconds * 1000)}` : ''}, batch ${n(c.batchSize)}`;
        const why =
          (c.throttleReason ? `, throttled: ${c.throttleReason}` : '') + (c.waitingFor ? `, ${c.waitingFor}` : '');
        return `${c.job}: ${n(c.rowsCopied)}${c.done ? '' : ` / ~${n(Math.max(c.estimatedTotal, c.rowsCopied))}`} rows${c.done ? '' : pct}${rate}${why}`;
      })
      .join('; ');
  }
  if (name === 'validate') {
    const running = live.find((l) => l.activity === 'runValidationCheck')?.details as
      { rowsChecked?: number; chunks?: number } | undefined;
    const done = s.validation
      ? `${s.validation.checks.filter((c) => c.ok).length}/${s.validation.checks.length} checks passed`
      : '';
    return [done, running?.rowsChecked !== undefined ? `checksum: ${n(running.rowsChecked)} rows checked` : '']
      .filter(Boolean)
      .join(', ');
  }
  if (name === 'traffic' && s.traffic) {
    const t = s.traffic;
    // Paused, the soak's clock keeps running but the next stage waits for resume.
    const held =
      s.paused && s.phase === 'traffic' && s.state !== 'rolled-back' && s.state !== 'completed'
        ? ' (paused: the next stage waits for resume)'
        : '';
    return `flag ${t.flag} at ${t.percent}%${t.soakEndsAt ? `, soaking until ${when(t.soakEndsAt)}` : ''}${held}`;
  }
  if (name === 'backup' && s.backup) {
    const b = s.backup as { file: string; sizeBytes: number };
    return `${b.file} (${(b.sizeBytes / 1024).toFixed(0)} KB)`;
  }
  return '';
}

export function renderStatus(
  s: MigrationStatus,
  live: LiveProgress[] = [],
  uiBase?: string,
  namespace = 'default',
): string {
  const lines: string[] = [];
  const revert = s.kind === 'revert';
  lines.push(
    `${revert ? 'revert of' : 'migration'} ${c.bold(s.plan)} (${s.workflowId}): ${stateColor(s.state, s.state.toUpperCase())}${s.phase ? `, phase ${s.phase}` : ''}  [${elapsed(s.startedAt, s.endedAt)}]`,
  );
  for (const p of s.phases) {
    const detail = p.status === 'failed' || p.status === 'cancelled' ? (p.error ?? '') : phaseDetail(s, p.name, live);
    const time = p.startedAt ? elapsed(p.startedAt, p.endedAt) : '';
    lines.push(
      `  ${p.name.padEnd(9)} ${stateColor(p.status, p.status.padEnd(9))} ${time.padEnd(8)} ${detail}`.trimEnd(),
    );
  }
  if (s.pendingApproval) {
    lines.push(
      c.warn(
        `  waiting for approval of ${s.pendingApproval.gate} (times out ${when(s.pendingApproval.timeoutAt)}): tidemark approve ${s.plan}`,
      ),
    );
  }
  if (s.paused)
    lines.push(
      `  paused${s.paused.by ? ` by ${s.paused.by}` : ''}${s.paused.reason ? `: ${s.paused.reason}` : ''} — tidemark resume ${s.plan}`,
    );
  if (s.waitingUntil) lines.push(`  waiting for ${s.waitingUntil.what} until ${when(s.waitingUntil.until)}`);
  // A step retried (a lock held by the application, a lost connection) says so, and why, while it is tried again.
  for (const l of live.filter((x) => x.attempt > 1 && x.lastFailure))
    lines.push(c.warn(`  retrying ${l.activity} (attempt ${l.attempt}): ${l.lastFailure}`));
  if (s.traffic?.gates.length) {
    for (const g of s.traffic.gates) {
      lines.push(
        `  gate ${g.gate}: ${g.value === null ? 'unreadable' : readable(g.value)} ${g.ok === null ? c.warn(`(${g.error})`) : g.ok ? c.ok('ok') : c.bad(`BREACH ${g.consecutiveBreaches}`)}, read ${when(g.at)}`,
      );
    }
  }
  for (const r of s.replication ?? []) {
    const way = r.direction === 'forward' ? 'source → target' : 'target → source';
    const lag =
      r.state === 'applying' && r.lagRows !== undefined
        ? `, lag ${n(r.lagRows)} change(s) / ${(r.lagSeconds ?? 0).toFixed(1)}s` +
          (r.slotBytes !== undefined ? `, slot holds ${bytes(r.slotBytes)} of WAL` : '') +
          (r.waiting ? `, waiting for ${r.waiting}` : '')
        : '';
    lines.push(
      `  replication ${r.job} ${way}: ${r.state}${r.applied !== undefined ? `, ${n(r.applied)} applied` : ''}${lag}` +
        (r.error ? `: ${c.bad(r.error)}; its changes wait in the log` : ''),
    );
  }
  const t = s.throttle;
  if (t.batchSize !== undefined || t.delayMs !== undefined || t.maxLatencyIncrease !== undefined) {
    const budget =
      t.maxLatencyIncrease === undefined
        ? ''
        : `, latency budget ${budgetText(budgetFraction(t.maxLatencyIncrease))} (the operator's)`;
    lines.push(`  throttle: batch size ${t.batchSize ?? 'adaptive'}, delay ${t.delayMs ?? 0}ms${budget}`);
  }
  if (s.validation && !s.validation.ok) {
    for (const c of s.validation.checks.filter((x) => !x.ok))
      lines.push(`  validation FAILED ${c.check}: ${c.message}`);
  }
  if (s.error) lines.push(`  reason: ${s.error}`);
  const undelivered = (s.notifications ?? []).filter((x) => x.state === 'failed');
  if (undelivered.length) {
    lines.push(
      c.warn(
        `  ${undelivered.length} notice(s) not delivered, last: ${undelivered.at(-1)!.event} to ${undelivered.at(-1)!.target} (${undelivered.at(-1)!.error})`,
      ),
    );
  }
  // Steps applied before this run started were applied by an earlier run of the plan.
  const before = revert ? [] : (s.steps ?? []).filter((x) => x.state === 'applied' && x.appliedAt! < s.startedAt);
  if (before.length) {
    lines.push(
      `  ${before.length} step(s) applied by an earlier run, not applied again: ${before.map((x) => x.step).join(', ')}`,
    );
  }
  const comp = s.compensations;
  if (comp.length && revert) {
    lines.push('  undos (newest first):');
    for (const c of [...comp].reverse())
      lines.push(`    ${c.status.padEnd(10)} ${c.description}${c.error ? ` — ${c.error}` : ''}`);
  } else if (comp.length && ['rolling-back', 'rolled-back', 'failed'].includes(s.state)) {
    lines.push('  compensations (newest first):');
    for (const c of [...comp].reverse())
      lines.push(`    ${c.status.padEnd(10)} ${c.description}${c.error ? ` — ${c.error}` : ''}`);
  } else if (comp.length && s.state !== 'completed') {
    lines.push(`  ${comp.length} compensation(s) registered (run on abort)`);
  }
  if (uiBase) lines.push(`  Web UI: ${webUiUrl(uiBase, namespace, s.workflowId)}`);
  return lines.join('\n');
}

export interface PlanHistory {
  plan: string;
  steps: StepState[];
}

export interface HistoryReport {
  /** The environment variable naming the database that was read. */
  database: string;
  /** How it was read: directly (the variable is set here) or through a worker. */
  via: 'direct' | 'worker';
  plans: PlanHistory[];
}

const short = (sha?: string) => (sha ? sha.slice(0, 12) : '');
const at = (iso?: string) => (iso ? when(iso) : '');

export function renderHistory(r: HistoryReport): string {
  const lines: string[] = [];
  if (!r.plans.length) lines.push(`no steps recorded in $${r.database}`);
  for (const p of r.plans) {
    const count = (s: StepState['state']) => p.steps.filter((x) => x.state === s).length;
    const counts = ['applied', 'reverted', 'pending', 'drift'].map((s) => `${count(s as StepState['state'])} ${s}`);
    lines.push(`plan ${p.plan} ($${r.database}): ${counts.join(', ')}`);
    const width = Math.max(4, ...p.steps.map((s) => s.step.length));
    lines.push(`  ${'STATE'.padEnd(9)} ${'STEP'.padEnd(width)} ${'PHASE'.padEnd(8)} ${'SHA256'.padEnd(12)} WHEN / BY`);
    for (const s of p.steps) {
      const sha = short(s.checksum ?? s.planChecksum);
      const detail =
        s.state === 'pending'
          ? 'not applied'
          : s.state === 'reverted'
            ? `reverted ${at(s.revertedAt)} by ${s.revertedBy ?? 'a rollback'} (applied ${at(s.appliedAt)} by ${s.appliedBy?.workflowId})`
            : `${at(s.appliedAt)} by ${s.appliedBy?.workflowId}${s.inPlan === false ? ', no longer in the plan' : ''}`;
      lines.push(`  ${s.state.padEnd(9)} ${s.step.padEnd(width)} ${s.phase.padEnd(8)} ${sha.padEnd(12)} ${detail}`);
      if (s.drift) lines.push(`  ${''.padEnd(9)} drift: ${s.drift}`);
    }
  }
  return lines.join('\n');
}
