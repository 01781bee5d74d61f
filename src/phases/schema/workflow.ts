// Schema, workflow side: each step's `up`, its undo (`down`) registered before it runs.
import { schemaSteps, undos } from '../../migration/profiles';
import { stepUrlEnv } from '../../plan/databases';
import type { SchemaStep } from '../../plan/types';
import type { Phase } from '../phase';

export interface SchemaUndo {
  kind: 'revertSchemaStep';
  step: SchemaStep;
}

export const schemaPhase: Phase<SchemaUndo> = {
  name: 'schema',
  approvalAtStart: true,
  skip: (plan) => plan.schema.length === 0,

  async run(ctx) {
    const { plan, run, board, control } = ctx;
    const applied: string[] = [];
    for (const step of plan.schema) {
      await control.safePoint();
      // A transactional step's history row commits with it, so its undo runs `down` only if the step committed; a
      // non-transactional one can stop half-way (CREATE INDEX CONCURRENTLY leaves an invalid index), so its `down`
      // always runs.
      await ctx.changeWithUndo(`run ${step.down.path} (undo ${step.id})`, { kind: 'revertSchemaStep', step }, () =>
        schemaSteps.applySchemaStep.executeWithOptions({ summary: `schema step ${step.id}: ${step.up.path}` }, [
          { urlEnv: stepUrlEnv(plan, step), run, step, lockTimeoutMs: plan.lockTimeout },
        ]),
      );
      applied.push(step.id);
      board.event(`schema step ${step.id} applied`);
    }
    return { applied };
  },

  undo: ({ plan, run }, { step }) =>
    undos.revertSchemaStep.executeWithOptions({ summary: `undo schema step ${step.id}: ${step.down.path}` }, [
      { urlEnv: stepUrlEnv(plan, step), run, step, lockTimeoutMs: plan.lockTimeout },
    ]),
};
