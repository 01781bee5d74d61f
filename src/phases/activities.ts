// Builds every activity from its dependencies: each phase's forward steps and undos, the run's own, and the ledger's.
import { keptAlive, watchOutages, type ActivityDeps } from './activity-kit';
import { createBackupActivities } from './backup/activities';
import { createCleanupActivities } from './cleanup/activities';
import { createCopyActivities } from './copy/activities';
import { createAcrossActivities } from './copy/across';
import { createNotifyActivities } from '../notify/activities';
import { createLedgerActivities } from './ledger-activities';
import { createPreflightActivities } from './preflight/activities';
import { createRunActivities } from './run-activities';
import { createSchemaActivities } from './schema/activities';
import { createTrafficActivities } from './traffic/activities';
import { createValidateActivities } from './validate/activities';

export type { ActivityDeps } from './activity-kit';

/**
 * The activities the `quick` and `undos` profiles run: most do not heartbeat on their own, so they are kept alive while
 * they run (keptAlive: until they heartbeat themselves) and those profiles have a heartbeat timeout. A worker lost in the middle of one (a
 * preflight, a rollback's fence or undo) is then noticed within seconds and the activity retried on another worker,
 * instead of the migration standing still until the 15-minute start-to-close timeout.
 */
export const KEPT_ALIVE = [
  'runPreflight',
  'runValidationCheck',
  'planCopyRanges',
  'planRevert',
  'recordReport',
  'replicationLag',
  'setCopyControl',
  'fenceRun',
  'undoCopy',
  'dropReverseSync',
  'undoCapture',
  'finishCapture',
  'installCapture',
  'switchCaptureToTriggers',
  'revertSchemaStep',
  'restoreArchivedTables',
  'restoreBackup',
] as const;

export function createActivities(deps: ActivityDeps) {
  watchOutages(deps);
  const activities = {
    ...createRunActivities(deps),
    ...createPreflightActivities(deps),
    ...createBackupActivities(deps),
    ...createSchemaActivities(deps),
    ...createCopyActivities(deps),
    ...createAcrossActivities(deps),
    ...createValidateActivities(deps),
    ...createTrafficActivities(deps),
    ...createCleanupActivities(deps),
    ...createNotifyActivities(deps),
    ...createLedgerActivities(deps),
  };
  for (const name of KEPT_ALIVE) {
    const run = activities[name] as (...args: unknown[]) => Promise<unknown>;
    activities[name] = ((...args: unknown[]) => keptAlive(() => run(...args))) as never;
  }
  return activities;
}

export type Activities = ReturnType<typeof createActivities>;
