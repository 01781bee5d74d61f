// Builds every activity from its dependencies: each phase's forward steps and undos, the run's own, and the ledger's.
import type { ActivityDeps } from './activity-kit';
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

export function createActivities(deps: ActivityDeps) {
  return {
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
}

export type Activities = ReturnType<typeof createActivities>;
