// Schema, workflow side: each step's `up`, its undo (`down`) registered before it runs. Steps an earlier run of the
// same plan applied (the ledger says so) are not applied again and not undone. Cleanup steps go through here too. In
// a blue-green plan a step runs on the target database unless it says `on: source`.
import type { RunRef } from '../../migration/messages';
import { schemaSteps, undos } from '../../migration/profiles';
import { stepUrlEnv } from '../../plan/databases';
import { appliedElsewhere, type StepPhase } from '../../plan/ledger';
import type { ResolvedPlan, SchemaStep } from '../../plan/types';
import type { Phase, PhaseContext } from '../phase';

export interface SchemaUndo {
  kind: 'revertSchemaStep';
  step: SchemaStep;
}

/**
 * Applies one step (schema or cleanup) with its undo registered first; false when it was not applied because an
 * earlier run of the plan had applied it. A transactional step's ledger row commits with it, so its undo runs `down`
 * only if the step committed; a non-transactional one can stop half-way (CREATE INDEX CONCURRENTLY leaves an invalid
 * index), so its `down` always runs.
 */
export async function applyStep<U extends { kind: string; step: SchemaStep }>(
  ctx: PhaseContext,
  step: SchemaStep,
  phase: StepPhase,
  undo: U,
): Promise<boolean> {
  const { plan, run, board } = ctx;
  const earlier = appliedElsewhere(board.status.steps, step.id, run.runKey);
  if (earlier) {
    board.event(`${phase} step ${step.id} already applied by ${earlier.appliedBy!.workflowId}: not applied again`);
    return false;
  }
  const { value, undoId } = await ctx.changeWithUndo(`run ${step.down.path} (undo ${step.id})`, undo, () =>
    schemaSteps.applySchemaStep.executeWithOptions({ summary: `${phase} step ${step.id}: ${step.up.path}` }, [
      {
        urlEnv: stepUrlEnv(plan, step),
        run,
        step,
        lockTimeoutMs: plan.lockTimeout,
        ...(phase === 'schema' ? {} : { phase }),
      },
    ]),
  );
  if (value.appliedEarlier) {
    // Applied by another run since preflight read the ledger: not ours to apply, nor to undo.
    ctx.retire(undoId);
    board.event(`${phase} step ${step.id} already applied by ${value.appliedEarlier.workflowId}: not applied again`);
    return false;
  }
  recordApplied(board.status.steps, step, phase, run, board.now());
  board.event(`${phase} step ${step.id} applied`);
  return true;
}

/** Keeps the status's ledger view in step with what this run applied. */
function recordApplied(
  steps: PhaseContext['board']['status']['steps'],
  step: SchemaStep,
  phase: StepPhase,
  run: RunRef,
  at: string,
): void {
  const s = steps?.find((x) => x.step === step.id);
  if (!s) return;
  Object.assign(s, {
    phase,
    state: 'applied',
    checksum: step.up.sha256,
    downChecksum: step.down.sha256,
    appliedAt: at,
    appliedBy: { workflowId: run.workflowId, runId: run.runKey },
  });
}

/** The undo of a step (schema or cleanup): its `down`, marked in the ledger as rolled back by this workflow. */
export function revertStep(ctx: PhaseContext, step: SchemaStep, phase: StepPhase): Promise<string> {
  const { plan, run, board } = ctx;
  return undos.revertSchemaStep.executeWithOptions({ summary: `undo ${phase} step ${step.id}: ${step.down.path}` }, [
    {
      urlEnv: stepUrlEnv(plan, step),
      run,
      step,
      lockTimeoutMs: plan.lockTimeout,
      by: board.status.workflowId,
      ...(phase === 'schema' ? {} : { phase }),
    },
  ]);
}

export const schemaPhase: Phase<SchemaUndo> = {
  name: 'schema',
  approvalAtStart: true,
  skip: (plan: ResolvedPlan) => plan.schema.length === 0,

  async run(ctx) {
    const applied: string[] = [];
    const appliedEarlier: string[] = [];
    for (const step of ctx.plan.schema) {
      await ctx.control.safePoint();
      if (await applyStep(ctx, step, 'schema', { kind: 'revertSchemaStep', step })) applied.push(step.id);
      else appliedEarlier.push(step.id);
    }
    if (!applied.length) ctx.board.event('schema: nothing applied, every step was applied by an earlier run');
    return appliedEarlier.length ? { applied, appliedEarlier } : { applied };
  },

  undo: (ctx, { step }) => revertStep(ctx, step, 'schema'),
};
