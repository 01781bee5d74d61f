// The migration's status as operators see it (the `status` query, `tidemark status`, the Web UI's search attributes):
// one object, changed only through this board so events are numbered and the Web UI columns follow.
import { upsertSearchAttributes } from '@temporalio/workflow';
import type { PhaseName } from '../plan/types';
import { LIMITS } from './limits';
import type { MigrationState, MigrationStatus, PhaseRecord } from './messages';
import { TidemarkPhase, TidemarkPlan, TidemarkState } from './search-attributes';

const nowIso = () => new Date().toISOString();

export class StatusBoard {
  private lastSearchAttributes = '';

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

  setState(state: MigrationState): void {
    this.status.state = state;
  }

  phase(name: PhaseName): PhaseRecord {
    return this.status.phases.find((p) => p.name === name)!;
  }

  /** Mirrors plan, phase and state into search attributes (only when they change: each upsert is a history event). */
  publish(): void {
    const key = `${this.status.phase}|${this.status.state}`;
    if (key === this.lastSearchAttributes) return;
    this.lastSearchAttributes = key;
    upsertSearchAttributes([
      { key: TidemarkPlan, value: this.status.plan },
      { key: TidemarkPhase, value: this.status.phase ?? 'pending' },
      { key: TidemarkState, value: this.status.state },
    ]);
  }
}
