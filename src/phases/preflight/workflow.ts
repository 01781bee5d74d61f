// Preflight, workflow side: read-only checks before anything changes, and what the ledger says about each step. No
// undo: nothing here writes.
import { quick } from '../../migration/profiles';
import type { Phase } from '../phase';

export const preflightPhase: Phase = {
  name: 'preflight',
  approvalAtStart: true,
  skip: () => false,
  async run({ plan, board }) {
    const report = await quick.runPreflight.executeWithOptions({ summary: 'preflight: read-only checks' }, [{ plan }]);
    // The ledger's view of the plan's steps: the schema and cleanup phases skip what an earlier run applied.
    if (report.steps) board.status.steps = report.steps;
    for (const f of report.findings.filter((x) => x.status === 'warn')) {
      board.event(`preflight warning — ${f.check}: ${f.message}`);
    }
    return report;
  },
};
