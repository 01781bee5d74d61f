// The plan loader: valid plans resolve with SQL embedded; every malformed plan names each problem with its path.
import { createHash } from 'node:crypto';
import { describePlan } from '../../src/cli/commands/plan-check';
import { maxLatencyIncreaseOf } from '../../src/phases/copy/budget';
import { InvalidPlanError, loadPlan } from '../../src/plan/load';
import { MALFORMED, SQL_FILES, VALID_PLAN } from '../helpers/malformed-plans';
import { writePlan } from '../helpers/plans';

test('a valid plan resolves with defaults, durations in ms and each SQL file embedded with its sha256', () => {
  const plan = loadPlan(writePlan(VALID_PLAN, SQL_FILES));
  expect(plan.schema[0].up).toEqual({
    path: 'sql/up.sql',
    sql: SQL_FILES['sql/up.sql'],
    sha256: createHash('sha256').update(SQL_FILES['sql/up.sql']).digest('hex'),
  });
  expect(plan.traffic!.stages).toEqual([
    { percent: 10, soak: 60_000, approval: false },
    { percent: 100, soak: 60_000, approval: false },
  ]);
  expect(plan.cleanup).toMatchObject({ after: 3_600_000, archive: ['orders'] });
  expect(plan.lockTimeout).toBe(2000);
  expect(plan.copy[0]).toMatchObject({ sync: 'forward', batchSize: 5000, targetBatchMs: 200, parallel: 1 });
  expect(plan.approvals).toEqual([]);
});

test('the same plan as JSON resolves identically', () => {
  const fromYaml = loadPlan(writePlan(VALID_PLAN, SQL_FILES));
  const fromJson = loadPlan(writePlan(VALID_PLAN, SQL_FILES, 'json'));
  const strip = (p: typeof fromYaml) => ({ ...p, source: undefined, backup: { ...p.backup, dir: undefined } });
  expect(strip(fromJson)).toEqual(strip(fromYaml));
});

test("a copy job's latency budget: a percentage (or a number of percent) or unlimited, absent meaning the default", () => {
  const withBudget = (impact: unknown) =>
    loadPlan(writePlan({ ...VALID_PLAN, copy: [{ ...VALID_PLAN.copy[0], impact }] }, SQL_FILES)).copy[0].impact;
  expect(withBudget({ maxLatencyIncrease: '25%' })).toEqual({ maxLatencyIncrease: 0.25 });
  expect(withBudget({ maxLatencyIncrease: 10 })).toEqual({ maxLatencyIncrease: 0.1 });
  expect(withBudget({})).toEqual({ maxLatencyIncrease: 0.25 });
  expect(withBudget({ maxLatencyIncrease: 'unlimited' })).toEqual({ maxLatencyIncrease: 'unlimited' });
  expect(maxLatencyIncreaseOf({ impact: { maxLatencyIncrease: 'unlimited' } })).toBe(Infinity);
  expect(maxLatencyIncreaseOf({ impact: { maxLatencyIncrease: 0.4 } })).toBe(0.4);
  expect(maxLatencyIncreaseOf({})).toBe(0.25);
  // `plan check` says which budget the copy keeps.
  const checked = (impact: unknown) =>
    describePlan(loadPlan(writePlan({ ...VALID_PLAN, copy: [{ ...VALID_PLAN.copy[0], impact }] }, SQL_FILES))).find(
      (l) => l.startsWith('  copy '),
    );
  expect(checked({ maxLatencyIncrease: '40%' })).toMatch(/, on a shared server at most \+40% commit latency$/);
  expect(checked({ maxLatencyIncrease: 'unlimited' })).toMatch(
    /, no latency budget: holds back only for lock waits and a struggling server$/,
  );
  expect(loadPlan(writePlan(VALID_PLAN, SQL_FILES)).copy[0].impact).toBeUndefined();
});

test('names are taken exactly as written: mixed case, spaces and other schemas are fine', () => {
  const plan = loadPlan(
    writePlan(
      {
        ...VALID_PLAN,
        copy: [
          {
            name: 'events',
            from: 'Sales Ops.CustomerEvents',
            to: 'Sales Ops.customer events v2',
            key: 'Event ID',
            columns: { 'Event ID': '"Event ID"', 'User Name': 'upper("User Name")' },
            discardNewPathWrites: true,
          },
        ],
        validate: [],
        cleanup: { after: '1h', archive: ['Sales Ops.CustomerEvents'] },
      },
      SQL_FILES,
    ),
  );
  expect(plan.copy[0]).toMatchObject({
    from: 'Sales Ops.CustomerEvents',
    to: 'Sales Ops.customer events v2',
    key: 'Event ID',
  });
  expect(plan.cleanup!.archive).toEqual(['Sales Ops.CustomerEvents']);
});

test.each(MALFORMED.map((c) => [c.title, c] as const))('%s is rejected with its path', (_title, c) => {
  const file = writePlan(c.doc, c.files ?? SQL_FILES, c.format);
  let err: unknown;
  try {
    loadPlan(file);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InvalidPlanError);
  expect((err as InvalidPlanError).errors.map((e) => `${e.path}: ${e.message}`)).toEqual(c.errors);
});

test("`plan check` names a copy job's key as written: one column, several, or renamed in the target", () => {
  const line = (key: unknown) =>
    describePlan(loadPlan(writePlan({ ...VALID_PLAN, copy: [{ ...VALID_PLAN.copy[0], key }] }, SQL_FILES))).find((l) =>
      l.startsWith('  copy '),
    );
  expect(line('id')).toContain(' by id, sync ');
  expect(line(['tenant_id', 'id'])).toContain(' by (tenant_id, id), sync ');
  expect(line({ source: 'id', target: 'legacy_id' })).toContain(' by id → legacy_id, sync ');
});
