// The ledger's view of a plan's steps (pure), and the plan keys it rests on: cleanup steps, one namespace of step ids,
// plan names that cannot take a revert's workflow id.
import { renderHistory } from '../../src/cli/format';
import { InvalidPlanError, loadPlan } from '../../src/plan/load';
import { appliedElsewhere, stepStates, type LedgerRow } from '../../src/plan/ledger';
import { planSteps } from '../../src/plan/scripts';
import type { SchemaStep } from '../../src/plan/types';
import { SQL_FILES, VALID_PLAN } from '../helpers/malformed-plans';
import { writePlan } from '../helpers/plans';

const sha = (c: string) => c.repeat(64);
const step = (id: string, up: string, down: string): SchemaStep & { phase: 'schema' } => ({
  id,
  transactional: true,
  up: { path: `${id}.up.sql`, sql: '', sha256: sha(up) },
  down: { path: `${id}.down.sql`, sql: '', sha256: sha(down) },
  phase: 'schema',
});
const row = (stepId: string, o: Partial<LedgerRow> = {}): LedgerRow => ({
  migration: 'shop',
  stepId,
  phase: 'schema',
  checksum: sha('a'),
  downChecksum: sha('b'),
  transactional: true,
  status: 'applied',
  appliedAt: '2025-01-01T00:00:00.000Z',
  rolledBackAt: null,
  rolledBackBy: null,
  workflowId: 'tidemark-shop',
  runId: 'run-1',
  ...o,
});

test('each step is applied, reverted, pending or drifted, and a step only the ledger knows is listed after the plan', () => {
  const plan = [step('001', 'a', 'b'), step('002', 'a', 'b'), step('003', 'c', 'b'), step('004', 'a', 'b')];
  const rows = [
    row('001'),
    row('002', {
      status: 'rolled-back',
      rolledBackAt: '2025-01-02T00:00:00.000Z',
      rolledBackBy: 'tidemark-revert-shop',
    }),
    row('003'),
    row('000_gone', { runId: 'run-0' }),
  ];
  const states = stepStates(rows, plan);
  expect(states.map((s) => [s.step, s.state, s.inPlan])).toEqual([
    ['001', 'applied', true],
    ['002', 'reverted', true],
    ['003', 'drift', true],
    ['004', 'pending', true],
    ['000_gone', 'applied', false],
  ]);
  expect(states[1]).toMatchObject({ revertedBy: 'tidemark-revert-shop', revertedAt: '2025-01-02T00:00:00.000Z' });
  expect(states[2].drift).toBe(`up 003.up.sql is sha256 ${sha('c')}, applied as sha256 ${sha('a')}`);
  // Applied again after a revert: the applied row tells.
  expect(stepStates([row('002', { status: 'rolled-back' }), row('002', { runId: 'run-2' })], plan)[1]).toMatchObject({
    state: 'applied',
    appliedBy: { workflowId: 'tidemark-shop', runId: 'run-2' },
  });
});

test('without a plan to compare with (the history of a whole database) no step is said to have left its plan', () => {
  const states = stepStates([row('001'), row('002')]);
  expect(states.map((s) => [s.step, s.state, 'inPlan' in s])).toEqual([
    ['001', 'applied', false],
    ['002', 'applied', false],
  ]);
  const text = renderHistory({ database: 'SHOP_URL', via: 'direct', plans: [{ plan: 'shop', steps: states }] });
  expect(text).toContain('by tidemark-shop');
  expect(text).not.toContain('no longer in the plan');
});

test('a changed down script is drift too, and only another run’s application keeps a step from running', () => {
  const states = stepStates([row('001')], [step('001', 'a', 'e')]);
  expect(states[0].drift).toBe(`down 001.down.sql is sha256 ${sha('e')}, recorded as sha256 ${sha('b')}`);
  const applied = stepStates([row('001')], [step('001', 'a', 'b')]);
  expect(appliedElsewhere(applied, '001', 'run-2')?.appliedBy?.runId).toBe('run-1');
  expect(appliedElsewhere(applied, '001', 'run-1')).toBeUndefined();
  expect(appliedElsewhere(undefined, '001', 'run-2')).toBeUndefined();
});

test('cleanup steps resolve like schema steps, after them, and share their ids’ namespace', () => {
  const files = {
    ...SQL_FILES,
    'sql/view.up.sql': 'CREATE VIEW orders AS SELECT 1;',
    'sql/view.down.sql': 'DROP VIEW orders;',
  };
  const doc = {
    ...VALID_PLAN,
    cleanup: {
      after: '1h',
      archive: ['orders'],
      steps: [{ id: '009_compat', up: 'sql/view.up.sql', down: 'sql/view.down.sql' }],
    },
  };
  const plan = loadPlan(writePlan(doc, files));
  expect(planSteps(plan).map((s) => [s.id, s.phase])).toEqual([
    [plan.schema[0].id, 'schema'],
    ['009_compat', 'cleanup'],
  ]);
  expect(plan.cleanup!.steps![0].up.sql).toBe('CREATE VIEW orders AS SELECT 1;');

  const dup = { ...doc, cleanup: { ...doc.cleanup, steps: [{ ...doc.cleanup.steps[0], id: plan.schema[0].id }] } };
  const errors = (() => {
    try {
      loadPlan(writePlan(dup, files));
    } catch (e) {
      return (e as InvalidPlanError).errors.map((x) => `${x.path}: ${x.message}`);
    }
  })();
  expect(errors).toEqual([
    `schema[0].id: duplicate step id "${plan.schema[0].id}"`,
    `cleanup.steps[0].id: duplicate step id "${plan.schema[0].id}"`,
  ]);
  expect(() => loadPlan(writePlan(doc, { ...files, 'sql/view.down.sql': '' }))).toThrow(
    'cleanup.steps[0].down: file is empty: sql/view.down.sql',
  );
});

test('a plan name cannot start with revert-: tidemark-revert-<plan> is the workflow id of a revert', () => {
  expect(() => loadPlan(writePlan({ ...VALID_PLAN, name: 'revert-orders' }, SQL_FILES))).toThrow(
    'name: must not start with "revert-" (tidemark-revert-<plan> names reverts)',
  );
});
