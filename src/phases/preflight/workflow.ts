// Preflight, workflow side: read-only checks before anything changes. No undo: nothing here writes.
import { quick } from '../../migration/profiles';
import type { Phase } from '../phase';

export const preflightPhase: Phase = {
  name: 'preflight',
  approvalAtStart: true,
  skip: () => false,
  async run({ plan, board }) {
    const report = await quick.runPreflight.executeWithOptions({ summary: 'preflight: read-only checks' }, [{ plan }]);
    for (const f of report.findings.filter((x) => x.status === 'warn')) {
      board.event(`preflight warning — ${f.check}: ${f.message}`);
    }
    return report;
  },
};
