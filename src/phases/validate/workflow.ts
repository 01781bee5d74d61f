// Validate, workflow side: row counts, exact checksums, assertions and orphan checks, one after the other; a failed
// check fails the phase and so rolls the migration back. Read-only: no undo.
import type { ValidationCheckResult } from '../../migration/messages';
import { failure, F } from '../../migration/failures';
import { LIMITS } from '../../migration/limits';
import { longRunning, quick } from '../../migration/profiles';
import { urlEnvOf } from '../../plan/databases';
import type { ResolvedPlan, ValidationCheck } from '../../plan/types';
import type { Phase } from '../phase';

/** The plan's checks, or by default every copy job compared exactly (row count and checksum). */
export function validationChecks(plan: ResolvedPlan): ValidationCheck[] {
  if (plan.validate.length) return plan.validate;
  return plan.copy.flatMap((j) => [
    { rowCount: { copy: j.name } },
    { checksum: { copy: j.name, chunkSize: LIMITS.checksumChunk.default } },
  ]);
}

function checkLabel(c: ValidationCheck): string {
  if (c.rowCount) return `row count of ${c.rowCount.copy}`;
  if (c.checksum) return `checksum of ${c.checksum.copy}`;
  if (c.sql) return c.sql.name;
  if (c.orphans) return c.orphans.name ?? `orphans in ${c.orphans.table}.${c.orphans.column}`;
  return 'check';
}

export const validatePhase: Phase = {
  name: 'validate',
  approvalAtStart: true,
  skip: (plan) => validationChecks(plan).length === 0,

  async run({ plan, run, board, control }) {
    const results: ValidationCheckResult[] = [];
    for (const check of validationChecks(plan)) {
      await control.safePoint();
      const ref = check.rowCount?.copy ?? check.checksum?.copy;
      const job = ref ? plan.copy.find((j) => j.name === ref) : undefined;
      if (ref && !job)
        throw failure(F.PlanRuntimeError, `validation refers to copy job "${ref}", which the plan does not have`);
      // Blue-green: counts and checksums compare the two databases, other checks run where they say (the target).
      const on = check.sql?.on ?? check.orphans?.on ?? 'target';
      const args =
        plan.target && (check.sql || check.orphans)
          ? { urlEnv: urlEnvOf(plan, on), check, job }
          : { urlEnv: plan.database.urlEnv, targetEnv: plan.target?.urlEnv, run, check, job };
      const summary = { summary: `validate: ${checkLabel(check)}` };
      const r = await (check.checksum ? longRunning : quick).runValidationCheck.executeWithOptions(summary, [args]);
      results.push(r);
      board.status.validation = { ok: results.every((x) => x.ok), checks: results, at: board.now() };
      board.event(`validation ${r.check}: ${r.ok ? 'ok' : 'FAILED'} (${r.message})`);
    }
    const report = board.status.validation!;
    await quick.recordReport.executeWithOptions({ summary: 'record the validation report' }, [
      { urlEnv: plan.database.urlEnv, run, kind: 'validation', report },
    ]);
    if (!report.ok) {
      const failed = report.checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.message}`);
      throw failure(F.ValidationFailed, `validation failed — ${failed.join('; ')}`);
    }
    return { checks: report.checks.length, ok: true };
  },
};
