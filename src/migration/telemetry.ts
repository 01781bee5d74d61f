// What the workflow tells the worker process about a migration, for its Prometheus metrics: a sink (a call into the
// worker outside history, skipped on replay). The workflow sends a small snapshot whenever it publishes its status;
// the worker (metrics/) turns snapshots into gauges and counters.
import { proxySinks, type Sinks } from '@temporalio/workflow';
import type { MigrationState, MigrationStatus, PhaseStatus } from './messages';

export interface StatusSnapshot {
  migration: string;
  workflowId: string;
  state: MigrationState;
  phase: string | null;
  phases: { name: string; status: PhaseStatus; startedAt?: string; endedAt?: string }[];
  traffic: {
    flag: string;
    percent: number;
    gates: { gate: string; value: number | null; ok: boolean | null; at: string }[];
  } | null;
  compensations: { id: string; phase: string; status: string }[];
}

export interface MigrationSinks extends Sinks {
  metrics: {
    observe(snapshot: StatusSnapshot): void;
  };
}

const { metrics } = proxySinks<MigrationSinks>();

export function snapshotOf(s: MigrationStatus): StatusSnapshot {
  return {
    migration: s.plan,
    workflowId: s.workflowId,
    state: s.state,
    phase: s.phase,
    phases: s.phases.map(({ name, status, startedAt, endedAt }) => ({ name, status, startedAt, endedAt })),
    traffic: s.traffic && {
      flag: s.traffic.flag,
      percent: s.traffic.percent,
      gates: s.traffic.gates.map(({ gate, value, ok, at }) => ({ gate, value, ok, at })),
    },
    compensations: s.compensations.map(({ id, phase, status }) => ({ id, phase, status })),
  };
}

export function reportStatus(s: MigrationStatus): void {
  metrics.observe(snapshotOf(s));
}
