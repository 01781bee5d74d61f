// What the ledger (tidemark.history, by plan and step id across runs) says about a plan's steps: applied, reverted,
// pending, or drifted — a step whose SQL changed after it was applied. Pure: the workflow, the CLI and the activities
// share it.
import { planSteps } from './scripts';
import type { ResolvedPlan, SchemaStep } from './types';

/** Where a step runs: the schema phase, or the cleanup phase after the archive (compatibility objects). */
export type StepPhase = 'schema' | 'cleanup';

/** One row of tidemark.history: one run's application (and perhaps rollback) of one step. */
export interface LedgerRow {
  migration: string;
  stepId: string;
  phase: StepPhase;
  /** sha256 of the up script that ran, and of the down script recorded with it. */
  checksum: string;
  downChecksum: string;
  transactional: boolean;
  status: 'applied' | 'rolled-back';
  appliedAt: string;
  rolledBackAt: string | null;
  /** The workflow that rolled it back: the migration's own rollback, or a revert. */
  rolledBackBy: string | null;
  workflowId: string;
  runId: string;
}

export type StepStateName = 'applied' | 'reverted' | 'pending' | 'drift';

export interface StepState {
  step: string;
  phase: StepPhase;
  state: StepStateName;
  /**
   * Whether the plan (as given) has this step; a step only the ledger knows was dropped from the plan since. Absent
   * when no plan was given to compare with (`tidemark history` of a whole database).
   */
  inPlan?: boolean;
  /** sha256 of the plan's up and down scripts. */
  planChecksum?: string;
  planDownChecksum?: string;
  /** sha256 of the scripts recorded when the step was applied. */
  checksum?: string;
  downChecksum?: string;
  appliedAt?: string;
  appliedBy?: { workflowId: string; runId: string };
  revertedAt?: string;
  revertedBy?: string;
  /** drift: which script changed, with both checksums. */
  drift?: string;
}

/**
 * Each step's state: the plan's steps in plan order, then steps only the ledger knows (in the order they were applied).
 * `rows` are one plan's ledger rows, oldest first. Without a plan (`planSteps` undefined) every recorded step is listed.
 */
export function stepStates(rows: LedgerRow[], planSteps?: (SchemaStep & { phase: StepPhase })[]): StepState[] {
  const byStep = new Map<string, LedgerRow[]>();
  for (const r of rows) byStep.set(r.stepId, [...(byStep.get(r.stepId) ?? []), r]);
  const out: StepState[] = [];
  const seen = new Set<string>();
  for (const s of planSteps ?? []) {
    seen.add(s.id);
    out.push(stateOf(s.id, s.phase, byStep.get(s.id) ?? [], s));
  }
  for (const [id, list] of byStep) {
    if (seen.has(id)) continue;
    const state = stateOf(id, list[0].phase, list, undefined);
    if (!planSteps) delete state.inPlan;
    out.push(state);
  }
  return out;
}

function stateOf(id: string, phase: StepPhase, rows: LedgerRow[], step: SchemaStep | undefined): StepState {
  const base: StepState = {
    step: id,
    phase,
    state: 'pending',
    inPlan: !!step,
    planChecksum: step?.up.sha256,
    planDownChecksum: step?.down.sha256,
  };
  // At most one row per plan and step is applied (a unique index says so); otherwise the newest tells.
  const applied = rows.find((r) => r.status === 'applied');
  const last = applied ?? rows.at(-1);
  if (!last) return base;
  const recorded: StepState = {
    ...base,
    phase: last.phase,
    checksum: last.checksum,
    downChecksum: last.downChecksum,
    appliedAt: last.appliedAt,
    appliedBy: { workflowId: last.workflowId, runId: last.runId },
  };
  if (!applied) {
    return {
      ...recorded,
      state: 'reverted',
      revertedAt: last.rolledBackAt ?? undefined,
      revertedBy: last.rolledBackBy ?? undefined,
    };
  }
  const drift = step ? driftOf(step, applied) : undefined;
  return drift ? { ...recorded, state: 'drift', drift } : { ...recorded, state: 'applied' };
}

/** Which of a step's scripts differ from what was applied, with both checksums; undefined when none does. */
export function driftOf(step: SchemaStep, applied: Pick<LedgerRow, 'checksum' | 'downChecksum'>): string | undefined {
  const parts: string[] = [];
  if (step.up.sha256 !== applied.checksum)
    parts.push(`up ${step.up.path} is sha256 ${step.up.sha256}, applied as sha256 ${applied.checksum}`);
  if (step.down.sha256 !== applied.downChecksum)
    parts.push(`down ${step.down.path} is sha256 ${step.down.sha256}, recorded as sha256 ${applied.downChecksum}`);
  return parts.length ? parts.join('; ') : undefined;
}

/** A step applied by a run other than `runKey` (an earlier run of the same plan): not applied again, not undone. */
export function appliedElsewhere(
  states: StepState[] | undefined,
  stepId: string,
  runKey: string,
): StepState | undefined {
  const s = states?.find((x) => x.step === stepId);
  return s && (s.state === 'applied' || s.state === 'drift') && s.appliedBy?.runId !== runKey ? s : undefined;
}

/** Every plan's steps in `rows` (grouped by plan); with `plan`, that plan first and its pending steps too. */
export function plansHistory(rows: LedgerRow[], plan?: ResolvedPlan): { plan: string; steps: StepState[] }[] {
  const byPlan = new Map<string, LedgerRow[]>();
  if (plan) byPlan.set(plan.name, []);
  for (const row of rows) byPlan.set(row.migration, [...(byPlan.get(row.migration) ?? []), row]);
  return [...byPlan].map(([name, list]) => ({
    plan: name,
    steps: stepStates(list, plan && name === plan.name ? planSteps(plan) : undefined),
  }));
}
