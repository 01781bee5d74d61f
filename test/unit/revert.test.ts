// The revert workflow's logic and the cleanup steps' place in a rollback, on the time-skipping test server with stub
// activities: what runs in which order for which run, what stops a revert, when an abort is still accepted.
import { ApplicationFailure } from '@temporalio/common';
import { abortUpdate, approveUpdate, type RunRef } from '../../src/migration/messages';
import type { RevertInventory, RevertItem } from '../../src/phases/ledger-activities';
import type { SchemaStep } from '../../src/plan/types';
import {
  finalStatus,
  fullPlan,
  job,
  StubEnv,
  stubActivities,
  type Call,
  rejection,
  until,
} from '../helpers/stub-workflow';

jest.setTimeout(120_000);

const stub = new StubEnv();
beforeAll(() => stub.start());
afterAll(() => stub.stop());

const sql = (path: string) => ({ path, sql: '', sha256: path.padEnd(64, '0') });
const stepOf = (id: string): SchemaStep => ({
  id,
  transactional: true,
  up: sql(`${id}.up.sql`),
  down: sql(`${id}.down.sql`),
});
const r1: RunRef = { runKey: 'run-1', migration: 'shop', workflowId: 'tidemark-shop' };
const r2: RunRef = { runKey: 'run-2', migration: 'shop', workflowId: 'tidemark-shop' };

/** What a completed migration left, in the order it made it: two steps by two runs, a sync, the flag, an archive, a view. */
function inventory(): RevertInventory {
  const items: RevertItem[] = [
    {
      phase: 'schema',
      run: r1,
      description: 'run 001.down.sql (undo 001)',
      action: { kind: 'revertSchemaStep', step: stepOf('001') },
    },
    {
      phase: 'schema',
      run: r2,
      description: 'run 002.down.sql (undo 002)',
      action: { kind: 'revertSchemaStep', step: stepOf('002') },
    },
    { phase: 'copy', run: r1, description: 'drop sync triggers of orders', action: { kind: 'undoCopy', job } },
    {
      phase: 'traffic',
      run: r1,
      description: 'set flag use_orders_v2 to 0%',
      action: { kind: 'resetFlag', flag: 'use_orders_v2' },
    },
    {
      phase: 'cleanup',
      run: r1,
      description: 'move orders back from tidemark_archive',
      action: { kind: 'restoreArchivedTables', tables: ['orders'], followers: [] },
    },
    {
      phase: 'cleanup',
      run: r1,
      description: 'run 009.down.sql (undo 009)',
      action: { kind: 'revertCleanupStep', step: stepOf('009') },
    },
  ];
  return { ok: true, findings: [{ check: 'copy orders', status: 'warn', message: 'accepted' }], steps: [], items };
}

const undoNames = [
  'revertSchemaStep',
  'restoreArchivedTables',
  'resetFlag',
  'undoCopy',
  'dropReverseSync',
  'createBackup',
];
const order = (calls: Call[]) =>
  calls
    .filter((c) => undoNames.includes(c.name))
    .map((c) => {
      const run = (c.input.run as RunRef | undefined)?.runKey;
      if (c.name === 'revertSchemaStep')
        return `${c.name} ${(c.input.step as { id: string }).id} ${run} by ${c.input.by}`;
      if (c.name === 'createBackup')
        return `${c.name} ${String((c.input.plan as { backup: { tables?: string[] } }).backup.tables)}`;
      return `${c.name}${run ? ` ${run}` : ''}`;
    });

describe('revert', () => {
  test('backs up the whole database, then runs each phase’s undo newest first for the run that made the change', async () => {
    const calls: Call[] = [];
    const plan = fullPlan({ name: 'shop', backup: { enabled: true, dir: '/tmp', tables: ['orders'] } });
    const final = await stub.runRevert(plan, stubActivities(calls, { planRevert: async () => inventory() }), (h) =>
      finalStatus(h),
    );
    expect(final.error).toBeNull();
    expect(final.state).toBe('completed');
    expect(final.kind).toBe('revert');
    expect(order(calls)).toEqual([
      'createBackup undefined',
      'revertSchemaStep 009 run-1 by tidemark-revert-shop',
      'restoreArchivedTables run-1',
      'resetFlag',
      'undoCopy run-1',
      'revertSchemaStep 002 run-2 by tidemark-revert-shop',
      'revertSchemaStep 001 run-1 by tidemark-revert-shop',
      // The copy undo kept the bidirectional job's reverse sync until the new tables were gone, as a rollback does.
      'dropReverseSync run-1',
    ]);
    expect(final.phases.map((p) => [p.name, p.status])).toEqual([
      ['preflight', 'completed'],
      ['backup', 'completed'],
      ['cleanup', 'completed'],
      ['traffic', 'completed'],
      ['copy', 'completed'],
      ['schema', 'completed'],
    ]);
    expect(final.compensations.every((c) => c.status === 'done')).toBe(true);
    const events = final.events.map((e) => e.message);
    expect(events).toContain('preflight warning — copy orders: accepted');
    expect(events.at(-1)).toBe('reverted shop');
  });

  test('a failed undo stops the revert: what is older is left as it is, and the error says what to do', async () => {
    const calls: Call[] = [];
    const stubs = stubActivities(calls, {
      planRevert: async () => inventory(),
      undoCopy: async () => {
        throw ApplicationFailure.nonRetryable('lock timeout on orders_v2');
      },
    });
    const final = await stub.runRevert(fullPlan({ name: 'shop' }), stubs, (h) => finalStatus(h));
    expect(final.state).toBe('failed');
    expect(order(calls).filter((c) => c.startsWith('revertSchemaStep 00') && !c.includes('009'))).toEqual([]);
    expect(final.compensations.map((c) => [c.phase, c.status])).toEqual([
      ['schema', 'not-run'],
      ['schema', 'not-run'],
      ['copy', 'failed'],
      ['traffic', 'done'],
      ['cleanup', 'done'],
      ['cleanup', 'done'],
    ]);
    expect(final.phases.find((p) => p.name === 'copy')?.status).toBe('failed');
    expect(final.error).toBe(
      'revert stopped: drop sync triggers of orders failed (lock timeout on orders_v2). ' +
        'Reverted: run 009.down.sql (undo 009) — down applied; move orders back from tidemark_archive — moved back; ' +
        'set flag use_orders_v2 to 0%. ' +
        'Left as they are: drop sync triggers of orders; run 002.down.sql (undo 002); run 001.down.sql (undo 001). ' +
        'Fix the cause and run tidemark revert shop again: what is reverted stays reverted',
    );
  });

  test('the reverse sync goes last, once every step is reverted; when it cannot be dropped the revert says so', async () => {
    const calls: Call[] = [];
    const stubs = stubActivities(calls, {
      planRevert: async () => inventory(),
      dropReverseSync: async () => {
        throw ApplicationFailure.nonRetryable('lock timeout on orders_v2');
      },
    });
    const final = await stub.runRevert(fullPlan({ name: 'shop' }), stubs, (h) => finalStatus(h));
    expect(order(calls).slice(-2)).toEqual([
      'revertSchemaStep 001 run-1 by tidemark-revert-shop',
      'dropReverseSync run-1',
    ]);
    expect(final.state).toBe('failed');
    expect(final.compensations.every((c) => c.status === 'done')).toBe(true);
    expect(final.error).toMatch(
      /^revert stopped: dropping the reverse sync of orders failed \(lock timeout on orders_v2\)\. Reverted: .*run 001\.down\.sql \(undo 001\)/,
    );
  });

  test('waits for approval when the plan lists any; an abort then changes nothing, once under way it is refused', async () => {
    const plan = fullPlan({ name: 'shop', approvals: ['schema'] });
    const calls: Call[] = [];
    const aborted = await stub.runRevert(
      plan,
      stubActivities(calls, { planRevert: async () => inventory() }),
      async (h) => {
        await until(h, (s) => s.pendingApproval?.gate === 'revert', 'the approval');
        await h.executeUpdate(abortUpdate, { args: [{ by: 'ops', reason: 'not tonight' }] });
        return finalStatus(h);
      },
      { autoApprove: false },
    );
    expect(aborted.state).toBe('failed');
    expect(aborted.error).toBe('revert aborted by ops: not tonight; nothing was changed');
    expect(order(calls)).toEqual(['createBackup undefined']);

    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const stubs = stubActivities([], {
      planRevert: async () => inventory(),
      resetFlag: async () => {
        await held;
        return { previous: 100 };
      },
    });
    const { refused, final } = await stub.runRevert(
      plan,
      stubs,
      async (h) => {
        await until(h, (s) => s.pendingApproval?.gate === 'revert', 'the approval');
        await h.executeUpdate(approveUpdate, { args: [{ by: 'ops' }] });
        await until(h, (s) => s.phase === 'traffic', 'the flag undo');
        const refused = await rejection(h.executeUpdate(abortUpdate, { args: [{}] }));
        release();
        return { refused, final: await finalStatus(h) };
      },
      { autoApprove: false },
    );
    expect(refused).toMatch(/^the revert is under way and is not undone half-way/);
    expect(final.state).toBe('completed');
  });

  test('a refused inventory ends the revert before the backup, nothing changed', async () => {
    const calls: Call[] = [];
    const stubs = stubActivities(calls, {
      planRevert: async () => {
        throw ApplicationFailure.create({
          type: 'PreflightFailed',
          nonRetryable: true,
          message: 'revert refused, nothing was changed: archive orders: tidemark_archive.orders was dropped',
        });
      },
    });
    const final = await stub.runRevert(fullPlan({ name: 'shop' }), stubs, (h) => finalStatus(h));
    expect(final.state).toBe('failed');
    expect(final.error).toBe(
      'revert refused, nothing was changed: archive orders: tidemark_archive.orders was dropped',
    );
    expect(order(calls)).toEqual([]);
  });
});

describe('cleanup steps', () => {
  test('run after the archive; a rollback drops them before the archived tables move back', async () => {
    const calls: Call[] = [];
    const plan = fullPlan({
      traffic: undefined,
      copy: [],
      validate: [],
      cleanup: { after: 0, archive: ['orders'], dropAfter: 3_600_000, steps: [stepOf('009'), stepOf('010')] },
    });
    const final = await stub.run(plan, stubActivities(calls), async (h) => {
      await until(h, (s) => s.waitingUntil?.what === 'drop of archived tables', 'the drop wait');
      await h.executeUpdate(abortUpdate, { args: [{ reason: 'old clients break' }] });
      return finalStatus(h);
    });
    expect(final.state).toBe('rolled-back');
    const seen = calls
      .filter((c) => ['archiveTables', 'applySchemaStep', 'revertSchemaStep', 'restoreArchivedTables'].includes(c.name))
      .map((c) =>
        (c.input.step ? `${c.name} ${(c.input.step as { id: string }).id} ${c.input.phase ?? ''}` : c.name).trim(),
      );
    expect(seen).toEqual([
      'applySchemaStep 001',
      'applySchemaStep 002',
      'archiveTables',
      'applySchemaStep 009 cleanup',
      'applySchemaStep 010 cleanup',
      'revertSchemaStep 010 cleanup',
      'revertSchemaStep 009 cleanup',
      'restoreArchivedTables',
      'revertSchemaStep 002',
      'revertSchemaStep 001',
    ]);
  });

  test('a step an earlier run applied is neither applied again nor undone', async () => {
    const calls: Call[] = [];
    const plan = fullPlan({ traffic: undefined, copy: [], validate: [], cleanup: undefined });
    const earlier = {
      step: '001',
      phase: 'schema' as const,
      state: 'applied' as const,
      inPlan: true,
      appliedAt: '2025-01-01T00:00:00.000Z',
      appliedBy: { workflowId: `tidemark-${plan.name}`, runId: 'an-earlier-run' },
    };
    const stubs = stubActivities(calls, {
      runPreflight: async () => ({ ok: true, findings: [], serverVersion: '15', steps: [earlier] }),
      applySchemaStep: async () => {
        throw ApplicationFailure.nonRetryable('step 002 fails');
      },
    });
    const final = await stub.run(plan, stubs, (h) => finalStatus(h));
    expect(final.state).toBe('rolled-back');
    expect(calls.filter((c) => c.name === 'applySchemaStep').map((c) => (c.input.step as { id: string }).id)).toEqual([
      '002',
    ]);
    expect(calls.filter((c) => c.name === 'revertSchemaStep').map((c) => (c.input.step as { id: string }).id)).toEqual([
      '002',
    ]);
    expect(final.events.map((e) => e.message)).toContain(
      `schema step 001 already applied by tidemark-${plan.name}: not applied again`,
    );
  });
});
