// Which database each part of a plan works on. Without `target` everything is `database`; with it (blue-green) the
// tables move from `database` (the source, blue) to `target` (green). Pure: workflow code uses it too.
import type { ResolvedPlan, SchemaStep } from './types';

export type Side = 'source' | 'target';

export function isBlueGreen(plan: Pick<ResolvedPlan, 'target'>): boolean {
  return !!plan.target;
}

/** The environment variable holding the connection string of one side. */
export function urlEnvOf(plan: Pick<ResolvedPlan, 'database' | 'target'>, side: Side): string {
  return side === 'target' && plan.target ? plan.target.urlEnv : plan.database.urlEnv;
}

/** Where a schema step runs: the target by default in a blue-green plan. */
export function stepUrlEnv(plan: Pick<ResolvedPlan, 'database' | 'target'>, step: Pick<SchemaStep, 'on'>): string {
  return urlEnvOf(plan, step.on ?? 'target');
}

/** Where the flag the application reads lives. */
export function flagUrlEnv(plan: Pick<ResolvedPlan, 'database' | 'target' | 'traffic'>): string {
  return urlEnvOf(plan, plan.traffic?.flagIn ?? 'source');
}

/** Every database the plan writes: the source, and the target of a blue-green plan. */
export function databasesOf(plan: Pick<ResolvedPlan, 'database' | 'target'>): string[] {
  return plan.target ? [plan.database.urlEnv, plan.target.urlEnv] : [plan.database.urlEnv];
}
