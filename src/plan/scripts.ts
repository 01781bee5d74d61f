// A run keeps one audited copy of each SQL script: the workflow's input (the start event) carries the text, preflight
// stores it in tidemark.scripts by sha256, and from then on the workflow carries only each script's path and sha256 —
// so history does not grow with SQL size however many activities, undos and continued runs need a script.
import type { ResolvedPlan, SchemaStep, SqlSource } from './types';

/** The script without its text: the activity that needs it reads it from tidemark.scripts by sha256. */
export function scriptRef(src: SqlSource): SqlSource {
  return { path: src.path, sha256: src.sha256, sql: '' };
}

/** Every step of the plan that is recorded in the ledger: the schema steps, then the cleanup steps. */
export function planSteps(plan: ResolvedPlan): (SchemaStep & { phase: 'schema' | 'cleanup' })[] {
  return [
    ...plan.schema.map((s) => ({ ...s, phase: 'schema' as const })),
    ...(plan.cleanup?.steps ?? []).map((s) => ({ ...s, phase: 'cleanup' as const })),
  ];
}

/** Every script of the plan. */
export function planScripts(plan: ResolvedPlan): SqlSource[] {
  return [...planSteps(plan).flatMap((s) => [s.up, s.down]), ...(plan.cleanup?.sql ? [plan.cleanup.sql] : [])];
}

const stepRef = (s: SchemaStep): SchemaStep => ({ ...s, up: scriptRef(s.up), down: scriptRef(s.down) });

/** The plan with its scripts' text left out (paths and sha256 kept). */
export function withoutScriptText(plan: ResolvedPlan): ResolvedPlan {
  return {
    ...plan,
    schema: plan.schema.map(stepRef),
    cleanup: plan.cleanup && {
      ...plan.cleanup,
      ...(plan.cleanup.steps ? { steps: plan.cleanup.steps.map(stepRef) } : {}),
      sql: plan.cleanup.sql && scriptRef(plan.cleanup.sql),
    },
  };
}
