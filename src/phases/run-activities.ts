// Activities of the run as a whole rather than of one phase: the fence a rollback puts up before its undos run.
import { fenceRun } from '../db/fence';
import { withClient } from '../db/tx';
import type { RunRef } from '../migration/messages';
import { activityBody, targetPool, type ActivityDeps } from './activity-kit';

export function createRunActivities(deps: ActivityDeps) {
  return {
    /** Waits for every forward transaction of the run to end, then forbids new ones (see db/fence.ts). */
    async fenceRun(input: { urlEnv: string; run: RunRef }): Promise<void> {
      return activityBody('fencing the run before its rollback', async () => {
        const pool = await targetPool(deps, input.urlEnv);
        await withClient(pool, (c) => fenceRun(c, input.run));
        deps.logger.info({ migration: input.run.migration }, 'run fenced: forward steps can no longer write');
      });
    },
  };
}
