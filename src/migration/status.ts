// The migration's status as operators see it (the `status` query, `tidemark status`, the Web UI's search attributes
// and current details, the worker's metrics, notifications): one object, changed only through this board so events
// are numbered and every surface follows.
import { setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import type { NotifyEvent, PhaseName } from '../plan/types';
import { LIMITS } from './limits';
import type { MigrationState, MigrationStatus, PhaseRecord } from './messages';
import { count as num, readable, utc as hhmm } from './readable';
import { TidemarkPhase, TidemarkPlan, TidemarkState } from './search-attributes';
import { reportStatus } from './telemetry';

const nowIso = () => new Date().toISOString();

/** Sends a notice to the plan's notify targets (notify.ts); the board only says when. */
export type Announcer = (event: NotifyEvent, message: string) => void;

export class StatusBoard {
  private lastSearchAttributes = '';
  private lastDetails = '';
  announcer: Announcer | undefined;

  constructor(readonly status: MigrationStatus) {}

  now(): string {
    return nowIso();
  }

  event(message: string): void {
    const events = this.status.events;
    events.push({ seq: (events.at(-1)?.seq ?? 0) + 1, at: nowIso(), message });
    if (events.length > LIMITS.statusEvents) events.splice(0, events.length - LIMITS.statusEvents);
    this.status.updatedAt = nowIso();
  }

  /** An event the plan's notify targets may want to hear about as well. */
  announce(kind: NotifyEvent, message: string): void {
    this.event(message);
    this.announcer?.(kind, message);
  }

  setState(state: MigrationState): void {
    this.status.state = state;
  }

  phase(name: PhaseName): PhaseRecord {
    return this.status.phases.find((p) => p.name === name)!;
  }

  /**
   * Mirrors the status where people look: search attributes (plan, phase, state) and the Web UI's current details,
   * each only when it changes (an upsert is a history event), and the worker's metrics.
   */
  publish(): void {
    const key = `${this.status.phase}|${this.status.state}`;
    if (key !== this.lastSearchAttributes) {
      this.lastSearchAttributes = key;
      upsertSearchAttributes([
        { key: TidemarkPlan, value: this.status.plan },
        { key: TidemarkPhase, value: this.status.phase ?? 'pending' },
        { key: TidemarkState, value: this.status.state },
      ]);
    }
    const details = currentDetails(this.status);
    if (details !== this.lastDetails) {
      this.lastDetails = details;
      setCurrentDetails(details);
    }
    reportStatus(this.status);
  }
}

/** The Web UI's "current details": where the migration is and what it waits for, in Temporal's markdown. */
export function currentDetails(s: MigrationStatus): string {
  const lines = [`**${s.state}**${s.phase ? ` · phase **${s.phase}**` : ''}`];
  for (const c of s.copy) {
    lines.push(
      c.done
        ? `copy ${c.job}: ${num(c.rowsCopied)} rows, done`
        : `copy ${c.job}: ${c.rangesDone}/${c.ranges} range(s) done, ~${num(c.estimatedTotal)} rows to copy`,
    );
  }
  if (s.traffic) {
    const t = s.traffic;
    lines.push(`flag \`${t.flag}\` at ${t.percent}%${t.soakEndsAt ? `, soaking until ${hhmm(t.soakEndsAt)}` : ''}`);
    for (const g of t.gates) {
      const verdict = g.ok === null ? `unreadable (${g.error})` : g.ok ? 'ok' : `BREACH ${g.consecutiveBreaches}`;
      lines.push(`gate ${g.gate}: ${g.value === null ? '—' : readable(g.value)} ${verdict}`);
    }
  }
  if (s.pendingApproval) {
    lines.push(
      `waiting for approval of **${s.pendingApproval.gate}** (\`tidemark approve ${cliId(s)}\`, or signal \`approve\`) until ${hhmm(s.pendingApproval.timeoutAt)}`,
    );
  }
  if (s.paused) {
    lines.push(
      `paused${s.paused.by ? ` by ${s.paused.by}` : ''}${s.paused.reason ? `: ${s.paused.reason}` : ''} (\`tidemark resume ${cliId(s)}\`)`,
    );
  }
  if (s.waitingUntil) lines.push(`waiting for ${s.waitingUntil.what} until ${hhmm(s.waitingUntil.until)}`);
  if (s.error) lines.push(`reason: ${s.error}`);
  return lines.join('\n');
}

/** How the CLI names the workflow behind `s`: its plan for a migration, `revert-<plan>` for a revert. */
export function cliId(s: Pick<MigrationStatus, 'plan' | 'kind'>): string {
  return s.kind === 'revert' ? `revert-${s.plan}` : s.plan;
}
