// Builds every activity from its dependencies, one module per phase.
import { createBackupActivities } from './backup';
import { createCleanupActivities } from './cleanup';
import type { ActivityDeps } from './common';
import { createCopyActivities } from './copy';
import { createPreflightActivities } from './preflight';
import { createSchemaActivities } from './schema';
import { createTrafficActivities } from './traffic';
import { createValidateActivities } from './validate';

export type { ActivityDeps } from './common';

export function createActivities(deps: ActivityDeps) {
  return {
    ...createPreflightActivities(deps),
    ...createBackupActivities(deps),
    ...createSchemaActivities(deps),
    ...createCopyActivities(deps),
    ...createValidateActivities(deps),
    ...createTrafficActivities(deps),
    ...createCleanupActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
