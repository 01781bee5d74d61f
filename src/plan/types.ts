// The resolved plan carried in the workflow input: plain JSON, SQL files embedded with their sha256, durations in ms.
// Type-only imports keep zod out of workflow bundles.
import type { PlanDocument } from './schema';

export type PhaseName = 'preflight' | 'backup' | 'schema' | 'copy' | 'validate' | 'traffic' | 'cleanup';

/** An SQL file's text, where it came from and its sha256, so a run's history records exactly what ran. */
export interface SqlSource {
  path: string;
  sql: string;
  sha256: string;
}

export interface SchemaStep {
  id: string;
  transactional: boolean;
  /** With a `target` database: where the step runs. */
  on?: 'source' | 'target';
  up: SqlSource;
  down: SqlSource;
}

export type CopyJob = PlanDocument['copy'][number];
export type SyncMode = NonNullable<CopyJob['sync']>;
export type ValidationCheck = PlanDocument['validate'][number];
export type Gate = NonNullable<PlanDocument['traffic']>['gates'][number];
export type Stage = NonNullable<PlanDocument['traffic']>['stages'][number];
export type PreflightCheck = PlanDocument['preflight']['checks'][number];
export type NotifyTarget = NonNullable<PlanDocument['notify']>[number];
export type NotifyEvent = NonNullable<NotifyTarget['on']>[number];

export interface ResolvedPlan extends Omit<PlanDocument, 'schema' | 'cleanup' | 'copy'> {
  schema: SchemaStep[];
  /** Copy jobs with `sync` defaulted (forward for tables, none for queries). */
  copy: (CopyJob & { sync: SyncMode })[];
  /** `steps` may be missing in plans resolved before cleanup steps existed (recorded histories): read it as []. */
  cleanup?: Omit<NonNullable<PlanDocument['cleanup']>, 'sql' | 'steps'> & { sql?: SqlSource; steps?: SchemaStep[] };
  /** The plan file itself. */
  source: { path: string; sha256: string };
}

export type ResolvedCopyJob = ResolvedPlan['copy'][number];
